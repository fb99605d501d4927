"""Is the demo's outcome luck? Both methods with the demo recipe under other seeds.

    make demo && .venv/bin/python benchmarks/demo_seeds.py [--seeds 1,2] [--steps 4000]

Needs the demo's data and generator (.demo/data64, .demo/mlm/generator), the frozen generator of
fast-electra and the judge of every run, so all runs are scored on one evaluation set. For each
seed (the run's `seed`: initial weights, data order, masks, samples; the evaluation set keeps
eval.seed) it runs fast-electra and electra with the `demo` recipe, one after another, and writes
benchmarks/results/demo_seeds.md: held-out AUC (all real tokens, and without [CLS]/[SEP]) and
replaced recall at every evaluation, beside the demo's own runs (seed 1234).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_name  # noqa: E402
from fast_electra_ds.downstream.compare import describe_set, eval_set_groups, read_run, table  # noqa: E402

MODES = ("fast-electra", "electra")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--demo-dir", default=str(REPO / ".demo"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    demo = Path(args.demo_dir)
    generator, data = demo / "mlm" / "generator", demo / "data64"
    if not generator.is_dir() or not data.is_dir():
        print(f"{generator} or {data} is missing: run `make demo` first", file=sys.stderr)
        return 2
    fe = [sys.executable, "-m", "fast_electra_ds"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    runs = [(1234, mode, read_run(demo / mode)) for mode in MODES]  # the demo's own
    for seed in (int(s) for s in args.seeds.split(",")):
        for mode in MODES:
            run_dir = demo / "seeds" / f"{mode}-{seed}"
            subprocess.run([*fe, "pretrain", "--config", "demo", f"mode={mode}",
                            f"run_dir={run_dir}", f"data.paths={data}", f"seed={seed}",
                            f"train.steps={args.steps}", f"generator.path={generator}",
                            f"eval.judge={generator}", "checkpoint.resume=none", "device=cpu",
                            "logging.progress_bar=false"],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            runs.append((seed, mode, read_run(run_dir)))
    groups = eval_set_groups([run for _, _, run in runs])
    if len(groups) != 1:
        print("the runs were scored on different evaluation sets", file=sys.stderr)
        return 2
    rows = [{"seed": seed, "mode": mode, "step": r["step"], "auc": r["auc"],
             "auc_maskable": r["auc_maskable"], "recall": r["rtd_accuracy_replaced"]}
            for seed, mode, run in runs for r in run["evals"]]
    final = [{"seed": seed, "mode": mode, "auc": run["evals"][-1]["auc"],
              "auc_maskable": run["evals"][-1]["auc_maskable"],
              "recall": run["evals"][-1]["rtd_accuracy_replaced"],
              "first": next((r["step"] for r in run["evals"] if r["auc"] >= 0.65), None)}
             for seed, mode, run in runs]
    lines = [
        "# Demo under other seeds: fast-electra and electra",
        "",
        f"Machine: {cpu_name()}, {len(os.sched_getaffinity(0))} cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}.",
        f"Command: `make demo && .venv/bin/python benchmarks/demo_seeds.py --seeds {args.seeds} "
        f"--steps {args.steps}` (seed 1234: the demo's own runs).",
        "",
        f"The `demo` recipe, {args.steps:,} steps, every run scored on one set: "
        f"{describe_set(groups[0][0])}.",
        "",
        "## Last evaluation",
        "",
        table(final, [("seed", "seed"), ("mode", "mode"), ("AUC", "auc"),
                      ("AUC maskable", "auc_maskable"), ("replaced recall", "recall"),
                      ("first step with AUC >= 0.65", "first")]),
        "",
        "## Every evaluation",
        "",
        table(rows, [("seed", "seed"), ("mode", "mode"), ("step", "step"), ("AUC", "auc"),
                     ("AUC maskable", "auc_maskable"), ("replaced recall", "recall")]),
        "",
    ]
    out = Path(args.output) / "demo_seeds.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
