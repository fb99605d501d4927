"""`fast-electra compare RUN_DIR... [--plot PNG]`: runs side by side, and their learning curves.

Training columns come from each run's metrics.jsonl: step time is the median of the logged
per-interval averages after the first (which carries start-up: data workers, allocator warm-up,
JIT); train time and FLOPs are the training seconds and FLOPs (Mode.step_flops) at its last
evaluation.

Held-out columns are each run's last evaluation, and they compare only between runs scored on the
same evaluation set (evaluation.py: one judge, the same data, seed, size and masking), which
RUN_DIR/eval_set.json names. Runs on one set make one table, its judge named above it. Runs on
several sets get one held-out table per set, under its judge, and a line saying that numbers of
different tables do not compare; they are never put side by side silently.

The plot: the held-out AUC of every run on the first run's evaluation set against training steps,
training wall-clock seconds and training FLOPs, so "the same quality for less compute" is read
from one picture.

`fast-electra evaluate` (`evaluate_models`) puts finished runs, exports and HF discriminator
folders on one set instead: a judge named on the command line, every model scored in one process.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import yaml

from fast_electra_ds.data.loader import open_datasets
from fast_electra_ds.downstream.export import load_discriminator
from fast_electra_ds.errors import UserError
from fast_electra_ds.paths import shown
from fast_electra_ds.training.evaluation import (EVAL_SET_FILE, EvalSet, build_eval_set,
                                                 load_judge, read_record, score_discriminator)
from fast_electra_ds.training.plateau import ADVICE, on_plateau

TRAIN_COLUMNS = [
    ("run", "run"), ("mode", "mode"), ("steps", "steps"),
    ("step time (ms)", "step_ms"), ("tokens/s", "tokens_per_s"), ("peak mem (GB)", "peak_mem"),
    ("trainable params", "params"), ("train time (s)", "train_seconds"),
    ("train PFLOPs", "train_pflops"),
]
EVAL_COLUMNS = [
    ("eval RTD loss", "rtd_loss"), ("eval RTD acc", "rtd_accuracy"),
    ("replaced recall", "rtd_accuracy_replaced"), ("original acc", "rtd_accuracy_original"),
    ("AUC", "auc"), ("AUC maskable", "auc_maskable"), ("AUC selected", "auc_selected"),
    ("generator MLM acc", "mlm_accuracy"), ("plateau", "plateau"),
]


def read_run(run_dir: str | Path) -> dict:
    """A run's config, its train, eval and alert records (metrics.jsonl), what its schedule
    measured before training (the calibration record, or None) and its eval-set record."""
    run = Path(run_dir)
    metrics_file, config_file = run / "metrics.jsonl", run / "config.yaml"
    if not metrics_file.is_file() or not config_file.is_file():
        raise UserError(f"{run} is not a run directory (no metrics.jsonl / config.yaml); pass "
                        f"the run_dir of a `fast-electra pretrain` run")
    records: dict[str, list[dict]] = {"train": [], "eval": [], "alert": []}
    for line in metrics_file.read_text().splitlines():
        rec = json.loads(line)
        records.setdefault(rec["split"], []).append(rec)
    return {"name": run.name, "config": yaml.safe_load(config_file.read_text()),
            "train": records["train"], "evals": records["eval"], "alerts": records["alert"],
            "calibration": (records.get("calibration") or [None])[-1],
            "eval_set": read_record(run)}


def plateau_status(run: dict) -> str | None:
    """What a run (read_run) says about the RTD plateau: the training warning (plateau.py) and
    whether it left afterwards, or, for a run without one, whether its last held-out evaluation
    is at the base rate. None: nothing to flag."""
    alerts = [a for a in run.get("alerts", []) if a.get("kind") == "plateau"]
    last_eval = run["evals"][-1] if run["evals"] else {}
    if alerts and alerts[-1]["on"]:
        return f"stuck (warned at step {alerts[-1]['step']:,})"
    if alerts:
        return f"left (step {alerts[-1]['step']:,})"
    if on_plateau(last_eval):
        return "stuck (held-out)"
    return None


def summarize(run: dict) -> dict:
    """One table row of a run (read_run): training columns, and its last evaluation."""
    train, cfg = run["train"], run["config"]
    steady = train[1:] or train
    last_eval = run["evals"][-1] if run["evals"] else {}
    flops = last_eval.get("train_flops")
    return {
        "run": run["name"], "mode": cfg["mode"], "steps": train[-1]["step"] if train else 0,
        "step_ms": 1000 * statistics.median(r["step_time_s"] for r in steady) if steady else None,
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady) if steady else None,
        "peak_mem": max((r["peak_mem_gb"] for r in train), default=None),
        "params": train[0].get("trainable_params") if train else None,
        "train_seconds": last_eval.get("train_seconds"),
        "train_pflops": flops / 1e15 if flops is not None else None,
        **{key: last_eval.get(key) for _, key in EVAL_COLUMNS},
        "plateau": plateau_status(run),
    }


def eval_set_groups(runs: Sequence[dict]) -> list[tuple[dict | None, list[dict]]]:
    """Runs grouped by evaluation set, in order of first appearance: [(eval-set record or None,
    runs)]. Runs without a record (no evaluation, or an older run) each stand alone."""
    groups: list[tuple[dict | None, list[dict]]] = []
    for run in runs:
        record = run["eval_set"]
        for rec, members in groups:
            if record is not None and rec is not None and rec["key"] == record["key"]:
                members.append(run)
                break
        else:
            groups.append((record, [run]))
    return groups


def describe_set(record: dict | None) -> str:
    if record is None:
        return "no evaluation set recorded (the run never evaluated, or predates eval_set.json)"
    stats = record.get("judge_stats") or {}
    quality = ""
    if "judge_mlm_accuracy" in stats:
        quality = (f"; the judge's MLM accuracy {stats['judge_mlm_accuracy']:.3f}, entropy "
                   f"{stats['judge_gen_entropy']:.2f} nats")
    what = (f"judge {shown(record['judge'])} at T = {record['judge_temperature']:g}"
            if record.get("judge_fingerprint", True) else "masks only (no judge)")
    return (f"{what} on {record['num_sequences']} held-out sequences, eval seed "
            f"{record['seed']} (eval set {record['key']}{quality})")


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    head = "| " + " | ".join(name for name, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(cell(r[key]) for _, key in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def compare(run_dirs: list[str], plot: str | None = None) -> str:
    """The comparison as Markdown text; with `plot`, also the learning-curve PNG there."""
    runs = [read_run(r) for r in run_dirs]
    groups = eval_set_groups(runs)
    rows = {run["name"]: summarize(run) for run in runs}
    if len(groups) == 1:
        record, _ = groups[0]
        text = (f"Held-out: {describe_set(record)}.\n\n"
                + table(list(rows.values()), TRAIN_COLUMNS + EVAL_COLUMNS))
    else:
        parts = [table(list(rows.values()), TRAIN_COLUMNS), "",
                 f"These runs were scored on {len(groups)} different evaluation sets (another "
                 f"judge, data, eval seed, size or masking, or a run's own generator), so held-out "
                 f"numbers of different tables below do not compare. Score them on one set with "
                 f"`fast-electra evaluate --judge GEN --data DATA RUN...`, or train them with the "
                 f"same eval.judge."]
        for record, members in groups:
            parts += ["", f"Held-out, {describe_set(record)}:", "",
                      table([rows[m["name"]] for m in members],
                            [("run", "run")] + EVAL_COLUMNS)]
        text = "\n".join(parts)
    stuck = [name for name, row in rows.items() if (row["plateau"] or "").startswith("stuck")]
    if stuck:
        text += (f"\n\nOn the replaced-token-detection plateau (predicting the base rate "
                 f"everywhere): {', '.join(stuck)}. Such a discriminator has learned nothing and "
                 f"its encoder is unfit to fine-tune; {ADVICE}.")
    if plot is not None:
        record, members = groups[0]
        note = plot_curves(members, plot, title=describe_set(record))
        left_out = [run["name"] for run in runs if run not in members]
        text += f"\n\nLearning curves: {note}" + (
            f" (left out, scored on other sets: {', '.join(left_out)})" if left_out else "")
    return text


def plot_curves(runs: Sequence[dict], path: str | Path, *, title: str = "") -> str:
    """AUC against training steps, seconds and FLOPs, one line per run; returns where the PNG
    went."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install matplotlib") from None
    axes_of = (("step", "training steps"), ("train_seconds", "training wall-clock (s)"),
               ("train_flops", "training FLOPs"))
    fig, axes = plt.subplots(1, len(axes_of), figsize=(15, 4.2), sharey=True)
    for run in runs:
        points = [r for r in run["evals"] if r.get("auc") is not None]
        name, mode = run["name"], run["config"]["mode"]
        label = name if name == mode else f"{name} ({mode})"
        for ax, (key, _) in zip(axes, axes_of):
            ax.plot([r[key] for r in points], [r["auc"] for r in points], "o-", label=label)
    for ax, (_, name) in zip(axes, axes_of):
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out ROC AUC (replaced-token detection)")
    axes[0].legend()
    fig.suptitle(_wrap(title), fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def _wrap(text: str, width: int = 130) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


# --------------------------------------------------------------------------------------------
# `fast-electra evaluate`: finished runs and exports on one set


EVALUATE_COLUMNS = [
    ("model", "name"), ("step", "step"), ("eval RTD loss", "rtd_loss"),
    ("eval RTD acc", "rtd_accuracy"), ("replaced recall", "rtd_accuracy_replaced"),
    ("original acc", "rtd_accuracy_original"), ("AUC", "auc"),
    ("AUC maskable", "auc_maskable"), ("AUC selected", "auc_selected"),
    ("same set as its run", "same_set"), ("on the plateau", "plateau"),
]


def evaluate_models(targets: Sequence[str], *, judge: str, data: Sequence[str],
                    num_sequences: int = 1024, seed: int = 0, mask_prob: float = 0.15,
                    masking_style: str = "electra", batch_size: int = 64,
                    device: str = "auto", logger: Callable[[str], None] = print
                    ) -> tuple[EvalSet, list[dict]]:
    """Score discriminators (run directories, exports, HF folders) on one evaluation set; one
    process. Returns the set and a row per target (the metrics, name, step, source)."""
    torch_device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                else "cpu" if device == "auto" else device)
    _, info = open_datasets(list(data), "train")
    # every target is loaded (and checked) before the judge runs
    models = [load_discriminator(t) for t in targets]
    for model, about in models:
        if model.config.vocab_size != info.vocab_size:
            raise UserError(f"{about['source']} has a vocabulary of {model.config.vocab_size} "
                            f"tokens, the data {data[0]} {info.vocab_size}: evaluate on the data "
                            f"it was trained with")
    judge_model, fingerprint = load_judge(judge, info, device=torch_device, logger=logger)
    source = Path(judge).expanduser()
    eval_set = build_eval_set(data, info, judge=judge_model,
                              judge_name=str(source.resolve()) if source.is_dir() else judge,
                              judge_fingerprint=fingerprint, num_sequences=num_sequences,
                              seed=seed, mask_prob=mask_prob, masking_style=masking_style,
                              device=torch_device, batch_size=batch_size, logger=logger)
    del judge_model
    rows = []
    for (model, about), target in zip(models, targets):
        metrics = score_discriminator(model.to(torch_device), eval_set, device=torch_device,
                                      batch_size=batch_size)
        record = read_record(target) if Path(target, EVAL_SET_FILE).is_file() else None
        same = None if record is None else ("yes" if record["key"] == eval_set.spec.key
                                            else "no")
        rows.append({**metrics, **about, "same_set": same,
                     "plateau": "yes" if on_plateau(metrics) else "no"})
        model.cpu()
    return eval_set, rows
