"""`fast-electra compare RUN_DIR...`: runs side by side, from their metrics.jsonl and config.

Step time is the median of the logged per-interval averages after the first interval (which
carries start-up: data workers, allocator warm-up, JIT). Held-out numbers are each run's last
evaluation.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import yaml

from fast_electra_ds.errors import UserError

COLUMNS = [
    ("run", "run"), ("mode", "mode"), ("steps", "steps"),
    ("step time (ms)", "step_ms"), ("tokens/s", "tokens_per_s"), ("peak mem (GB)", "peak_mem"),
    ("trainable params", "params"),
    ("eval RTD loss", "rtd_loss"), ("eval RTD acc", "rtd_acc"), ("eval AUC", "auc"),
]


def summarize(run_dir: str | Path) -> dict:
    run = Path(run_dir)
    metrics_file, config_file = run / "metrics.jsonl", run / "config.yaml"
    if not metrics_file.is_file() or not config_file.is_file():
        raise UserError(f"{run} is not a run directory (no metrics.jsonl / config.yaml); pass "
                        f"the run_dir of a `fast-electra pretrain` run")
    cfg = yaml.safe_load(config_file.read_text())
    train, evals = [], []
    for line in metrics_file.read_text().splitlines():
        rec = json.loads(line)
        (evals if rec["split"] == "eval" else train).append(rec)
    steady = train[1:] or train
    last_eval = evals[-1] if evals else {}
    return {
        "run": run.name, "mode": cfg["mode"], "steps": train[-1]["step"] if train else 0,
        "step_ms": 1000 * statistics.median(r["step_time_s"] for r in steady) if steady else None,
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady) if steady else None,
        "peak_mem": max((r["peak_mem_gb"] for r in train), default=None),
        "params": train[0].get("trainable_params") if train else None,
        "rtd_loss": last_eval.get("rtd_loss"), "rtd_acc": last_eval.get("rtd_accuracy"),
        "auc": last_eval.get("auc"),
    }


def table(rows: list[dict]) -> str:
    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    head = "| " + " | ".join(name for name, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(cell(r[key]) for _, key in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def compare(run_dirs: list[str]) -> str:
    return table([summarize(r) for r in run_dirs])
