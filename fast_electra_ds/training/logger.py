"""Rank-0 metrics: run_dir/metrics.jsonl always; wandb (offline by default) and tensorboard when
configured; a progress bar on a terminal. The only module that imports wandb or tensorboard.

Other ranks get a logger that does nothing, so the training loop calls it unconditionally.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from fast_electra_ds.config import RunConfig


class MetricsLogger:
    def __init__(self, cfg: RunConfig, *, is_main: bool, start_step: int = 0,
                 wandb_id: str | None = None):
        self.enabled = is_main
        self.run_dir = Path(cfg.run_dir)
        self._wandb = None
        self._tb = None
        self._bar = None
        self.wandb_id = wandb_id
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        if cfg.logging.wandb != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb = wandb.init(project=cfg.logging.wandb_project, dir=str(self.run_dir),
                                     mode=cfg.logging.wandb, config=cfg.to_dict(),
                                     name=self.run_dir.name, id=wandb_id, resume="allow")
            self.wandb_id = self._wandb.id
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if cfg.logging.progress_bar and sys.stdout.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=cfg.train.steps, initial=start_step, unit="step",
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


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
