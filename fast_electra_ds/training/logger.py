"""Rank-0 metrics: run_dir/metrics.jsonl always; wandb (offline by default) and tensorboard when
configured; a progress bar on a terminal. The only module that imports wandb or tensorboard.

Other ranks get a logger that does nothing, so the training loop calls it unconditionally.

One history per run. A run that resumes from step S (or starts fresh at 0) continues the logs
from S: whatever an interrupted attempt logged after S never happened as far as the checkpoints
go, and would be logged again with other values. So before anything is appended, the entries of
metrics.jsonl after S move to metrics.discarded-after-step<S>.jsonl (kept, not deleted), and
tensorboard purges its events after S (SummaryWriter's purge_step). wandb cannot rewind a run's
history (its rewind is a private preview, and not offline): when the interrupted attempt logged
past S, this attempt logs to a new wandb run in the same group, whose config names the run and
step it continues; otherwise it continues the same wandb run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fast_electra_ds.config import RunConfig
from fast_electra_ds.training.checkpoint import atomic_write


class MetricsLogger:
    def __init__(self, cfg: RunConfig, *, is_main: bool, start_step: int = 0,
                 wandb_id: str | None = None):
        self.enabled = is_main
        self.run_dir = Path(cfg.run_dir)
        self._wandb = None
        self._tb = None
        self._bar = None
        self.wandb_id = wandb_id
        self.discarded: Discarded | None = None  # what a resume moved out of metrics.jsonl
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.discarded = rewind_jsonl(self.run_dir / METRICS, start_step)
        if self.discarded:
            self.info(f"metrics: {self.discarded.count} entries logged after step {start_step} "
                      f"by an interrupted attempt moved to {self.discarded.path.name}")
        self._jsonl = open(self.run_dir / METRICS, "a", buffering=1)
        if cfg.logging.wandb != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            config = cfg.to_dict()
            if self.discarded and wandb_id is not None:
                self.info(f"wandb: run {wandb_id} holds steps after {start_step} that did not "
                          f"survive; logging from step {start_step} to a new run in group "
                          f"{self.run_dir.name!r} (wandb cannot rewind a run)")
                config["continues"] = {"wandb_run": wandb_id, "from_step": start_step}
                wandb_id = None
            self._wandb = wandb.init(project=cfg.logging.wandb_project, dir=str(self.run_dir),
                                     mode=cfg.logging.wandb, config=config,
                                     name=self.run_dir.name, group=self.run_dir.name,
                                     id=wandb_id, resume="allow")
            self.wandb_id = self._wandb.id
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # events at steps > start_step, from an interrupted attempt, are hidden
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"),
                                     purge_step=start_step + 1 if start_step else None)
        if cfg.logging.progress_bar and sys.stdout.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=cfg.train.steps or None, initial=start_step, unit="step",
                             dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, Any], *, prefix: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": prefix, "time": time.time(), **metrics}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log({f"{prefix}/{k}": v for k, v in metrics.items()}, step=step)
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{prefix}/{k}", v, step)
        line = " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
        if self._bar is not None:
            self._bar.write(f"[{prefix} step {step}] {line}")
        else:
            print(f"[{prefix} step {step}] {line}", flush=True)

    def alert(self, step: int, kind: str, message: str, *, on: bool) -> None:
        """A warning about the run (`kind`, e.g. "plateau"; on=False: the condition ended): on
        the console, as a metrics.jsonl record with split "alert", as the wandb metric
        alert/<kind> (and the run summary's text) and as tensorboard text and scalar."""
        if not self.enabled:
            return
        record = {"step": step, "split": "alert", "time": time.time(), "kind": kind, "on": on,
                  "message": message}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log({f"alert/{kind}": int(on)}, step=step)
            self._wandb.summary[f"alert/{kind}"] = message if on else ""
        if self._tb is not None:
            self._tb.add_scalar(f"alert/{kind}", int(on), step)
            self._tb.add_text(f"alert/{kind}", message, step)
        self.info(f"{'WARNING' if on else 'note'} (step {step}): {message}")

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        self._jsonl.close()


METRICS = "metrics.jsonl"


@dataclass
class Discarded:
    path: Path  # where the entries went
    count: int  # at least 1


def rewind_jsonl(path: Path, step: int) -> Discarded | None:
    """Keep the entries of the JSONL log `path` up to `step`; move the later ones (and any line
    that does not parse, such as one cut short by a crash) to metrics.discarded-after-step<S>
    [.N].jsonl beside it. The log is rewritten by temp file + fsync + rename. None if nothing
    moved."""
    if not path.is_file():
        return None
    keep, later = [], []
    for line in path.read_text().splitlines(keepends=True):
        try:
            logged = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            logged = None
        (keep if logged is not None and logged <= step else later).append(line)
    if not later:
        return None
    aside = path.with_name(f"metrics.discarded-after-step{step}.jsonl")
    n = 1
    while aside.exists():
        aside = path.with_name(f"metrics.discarded-after-step{step}.{n}.jsonl")
        n += 1
    atomic_write(aside, "".join(line if line.endswith("\n") else line + "\n"
                                for line in later))
    atomic_write(path, "".join(keep))
    return Discarded(aside, len(later))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
