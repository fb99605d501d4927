"""Learning curves of the demo's fast-electra and electra runs on their common judge.

    make demo && .venv/bin/python benchmarks/demo_curves.py [--demo-dir .demo] [--output DIR]

writes OUTPUT/demo_curves.md and demo_curves.png (default benchmarks/results): every evaluation
of both runs at equal steps (exact: both evaluate at the same steps), and at equal training
wall-clock (each run's AUC linearly interpolated between its evaluations at common times), the
FLOPs of a step of each, and what the numbers say, computed from them. The runs must have been
scored on one evaluation set (the same judge, data, seed, size and masking), which the demo
arranges; otherwise this stops and says so.

The demo's judge is fast-electra's own frozen generator, the distribution fast-electra trains on
at the end of its curriculum. So the finished discriminators are also scored (`fast-electra
evaluate`) with electra's jointly trained generator as the judge, the distribution electra trains
on: each method on the other's home ground.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_name  # noqa: E402
from fast_electra_ds.downstream.compare import (  # noqa: E402
    describe_set, eval_set_groups, plot_curves, read_run, table)

RUNS = ("fast-electra", "electra")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-dir", default=str(REPO / ".demo"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    runs = [read_run(Path(args.demo_dir) / name) for name in RUNS]
    groups = eval_set_groups(runs)
    if len(groups) != 1 or groups[0][0] is None:
        print("the demo runs were not scored on one evaluation set; re-run `make demo`",
              file=sys.stderr)
        return 2
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    record = groups[0][0]
    plot_curves(runs, out / "demo_curves.png", title=describe_set(record))
    (out / "demo_curves.md").write_text(report(runs, record, other_judges(Path(args.demo_dir),
                                                                         record)))
    print(f"wrote {out / 'demo_curves.md'} and {out / 'demo_curves.png'}")
    return 0


def other_judges(demo: Path, record: dict) -> list[tuple[str, str, list[dict]]]:
    """(judge name, its set's description, a row per run) for the demo's judge and for electra's
    own generator as the judge, both through `fast-electra evaluate` on the finished runs."""
    from fast_electra_ds.downstream.export import export
    from fast_electra_ds.downstream.compare import evaluate_models

    joint_export = demo / "electra-export"
    export(str(demo / "electra"), str(joint_export), overwrite=True, log=lambda m: None)
    cfg = read_run(demo / "electra")["config"]
    judges = [("the demo's judge: fast-electra's frozen generator", record["judge"]),
              ("electra's own generator, after training", str(joint_export / "generator"))]
    out = []
    for name, judge in judges:
        eval_set, rows = evaluate_models(
            [str(demo / r) for r in RUNS], judge=judge, data=cfg["data"]["paths"],
            num_sequences=cfg["eval"]["num_sequences"], seed=cfg["eval"]["seed"],
            mask_prob=cfg["masking"]["mask_prob"], masking_style=cfg["masking"]["style"],
            logger=lambda m: None)
        out.append((name, describe_set(eval_set.record()), rows))
    return out


def _schedule(run: dict) -> str:
    """fast-electra's temperature schedule as it ran, with the T0 a calibrated run measured."""
    t = run["config"]["temperature"]
    if t["schedule"] != "calibrated":
        return f"schedule {t['schedule']}, T0 = {t['t0']}, tau = {t['tau']}"
    measured = run["calibration"]
    t0 = f"{measured['t0']:.3f}" if measured else "not recorded"
    return (f"T0 calibrated on the generator ({t0}: start_entropy {t['start_entropy']}), "
            f"tau = {t['tau']}")


def report(runs: list[dict], record: dict,
           judged: list[tuple[str, str, list[dict]]]) -> str:
    fast, joint = runs
    by_step = {r["step"]: r for r in fast["evals"]}
    steps = [r["step"] for r in joint["evals"] if r["step"] in by_step]
    step_rows = []
    for step in steps:
        f, j = by_step[step], next(r for r in joint["evals"] if r["step"] == step)
        step_rows.append({
            "step": step, "fast_auc": f["auc"], "joint_auc": j["auc"],
            "fast_auc_m": f["auc_maskable"], "joint_auc_m": j["auc_maskable"],
            "fast_recall": f["rtd_accuracy_replaced"], "joint_recall": j["rtd_accuracy_replaced"],
            "fast_s": f["train_seconds"], "joint_s": j["train_seconds"]})

    # equal wall-clock: both curves at common times, between the later first evaluation and
    # the shorter run's last (no value is assumed outside a run's own evaluations)
    start = max(fast["evals"][0]["train_seconds"], joint["evals"][0]["train_seconds"])
    horizon = min(fast["evals"][-1]["train_seconds"], joint["evals"][-1]["train_seconds"])
    times = np.linspace(start, horizon, 8)
    time_rows = [{"seconds": float(t), "fast_auc": _at(fast, t, "auc"),
                  "joint_auc": _at(joint, t, "auc"),
                  "fast_auc_m": _at(fast, t, "auc_maskable"),
                  "joint_auc_m": _at(joint, t, "auc_maskable")} for t in times]

    last_f, last_j = fast["evals"][-1], joint["evals"][-1]
    flops_ratio = last_f["train_flops"] / last_j["train_flops"]
    time_ratio = last_f["train_seconds"] / last_j["train_seconds"]
    at_equal_time = time_rows[-1]
    finding = (
        f"At equal steps ({last_f['step']:,}) fast-electra's held-out AUC is "
        f"{last_f['auc']:.3f} against electra's {last_j['auc']:.3f} (without [CLS]/[SEP]: "
        f"{last_f['auc_maskable']:.3f} against {last_j['auc_maskable']:.3f}), for "
        f"{flops_ratio:.2f}x the FLOPs and {time_ratio:.2f}x the training wall-clock of "
        f"electra. At equal training wall-clock ({at_equal_time['seconds']:.0f} s, where "
        f"fast-electra has done {_step_at(fast, at_equal_time['seconds']):,.0f} steps and electra "
        f"{_step_at(joint, at_equal_time['seconds']):,.0f}), fast-electra is at "
        f"{at_equal_time['fast_auc']:.3f} and electra at {at_equal_time['joint_auc']:.3f}.")

    cfg = fast["config"]
    m = cfg["model"]
    lines = [
        "# Demo learning curves: fast-electra and electra on one judge",
        "",
        f"Machine: {cpu_name()}, {_cores()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}.",
        "Command: `make demo && .venv/bin/python benchmarks/demo_curves.py` (the demo's two "
        "runs, evaluated as they trained).",
        "",
        f"Both runs: discriminator {m['num_layers']} layers x {m['hidden_size']} (embeddings "
        f"{m['embedding_size']}), seq_len {cfg['data']['seq_len']}, batch "
        f"{cfg['train']['global_batch_size']}, {cfg['train']['steps']:,} steps, lr "
        f"{cfg['optim']['lr']}, dropout {m['hidden_dropout']}, RTD head bias "
        f"{m['head_bias_init']}. fast-electra: the frozen generator, {_schedule(fast)}. "
        f"electra: generator {joint['config']['generator']['num_layers']} layers x "
        f"{joint['config']['generator']['hidden_size']}, trained jointly, T = 1.",
        f"Held-out: {describe_set(record)}. AUC is over all real tokens; \"AUC maskable\" "
        f"leaves out [CLS]/[SEP], which are never replaced.",
        "",
        "## What it shows",
        "",
        finding,
        "",
        "## At equal steps",
        "",
        table(step_rows, [("step", "step"), ("fast-electra AUC", "fast_auc"),
                          ("electra AUC", "joint_auc"), ("fast-electra AUC maskable", "fast_auc_m"),
                          ("electra AUC maskable", "joint_auc_m"),
                          ("fast-electra replaced recall", "fast_recall"),
                          ("electra replaced recall", "joint_recall"),
                          ("fast-electra train s", "fast_s"), ("electra train s", "joint_s")]),
        "",
        "## At equal training wall-clock (linear between evaluations)",
        "",
        table(time_rows, [("train s", "seconds"), ("fast-electra AUC", "fast_auc"),
                          ("electra AUC", "joint_auc"), ("fast-electra AUC maskable", "fast_auc_m"),
                          ("electra AUC maskable", "joint_auc_m")]),
        "",
        "![learning curves](demo_curves.png)",
        "",
        "## Each method on the other's home ground",
        "",
        "The demo's judge is fast-electra's own generator: fast-electra ends its curriculum "
        "training on exactly that distribution. Electra's discriminator trained against its "
        "jointly trained generator instead. Both finished discriminators, scored by "
        "`fast-electra evaluate` with each generator as the judge:",
        "",
    ]
    for name, about, rows in judged:
        lines += [f"Judge: {name}; {about}.", "",
                  table(rows, [("run", "name"), ("step", "step"), ("AUC", "auc"),
                               ("AUC maskable", "auc_maskable"),
                               ("replaced recall", "rtd_accuracy_replaced"),
                               ("original acc", "rtd_accuracy_original")]), ""]
    return "\n".join(lines)


def _at(run: dict, seconds: float, key: str) -> float:
    """`key` of a run's evaluations, linear in training seconds between them."""
    return float(np.interp(seconds, [r["train_seconds"] for r in run["evals"]],
                           [r[key] for r in run["evals"]]))


def _step_at(run: dict, seconds: float) -> float:
    return _at(run, seconds, "step")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
