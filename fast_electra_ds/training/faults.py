"""The per-step fault decisions every rank takes together: skip a non-finite update, stop on a
signal or the time limit (training/loop.py calls it once per optimizer step)."""

from __future__ import annotations

import math
import signal
import time

import torch
import torch.distributed as dist

from fast_electra_ds.config import RunConfig
from fast_electra_ds.errors import UserError
from fast_electra_ds.training.engine import DistEnv


class FaultGuard:
    """Per-step decisions that every rank must take together, in one all-reduce per step:

      skip  the loss was not finite on some rank in some micro-batch: no rank applies the
            update (the optimizer's step is a no-op, DeepSpeed's bookkeeping runs as usual),
            so the weights stay finite; max_consecutive_skips in a row end the run.
      stop  SIGTERM / SIGUSR1 arrived on some rank, or train.time_limit_minutes passed: the
            loop saves a committed checkpoint and returns.
    """

    def __init__(self, cfg: RunConfig, env: DistEnv, optimizer):
        self.cfg, self.optimizer = cfg, optimizer
        self.comm_device = env.device if env.device.type == "cuda" else torch.device("cpu")
        self.nonfinite = torch.zeros((), device=env.device)
        self.skip = self.stop = False
        self.stop_reason = ""
        self.consecutive_skips = self.total_skips = 0
        self._signal: str | None = None
        self._deadline = (time.monotonic() + 60 * cfg.train.time_limit_minutes
                          if cfg.train.time_limit_minutes else math.inf)
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread (e.g. called from a notebook worker)
                pass

    def _on_signal(self, signum, frame) -> None:
        self._signal = signal.Signals(signum).name

    def observe(self, loss: torch.Tensor) -> None:
        """Note a micro-batch's loss; stays on the device (no host sync here)."""
        self.nonfinite = torch.maximum(self.nonfinite, (~torch.isfinite(loss.detach())).float())

    def decide(self) -> None:
        flags = torch.stack([self.nonfinite.to(self.comm_device),
                             torch.tensor(float(self._signal is not None
                                                or time.monotonic() > self._deadline),
                                          device=self.comm_device)])
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        self.skip, stop = bool(flags[0] > 0), bool(flags[1] > 0)
        if stop and not self.stop:
            self.stop_reason = (f"{self._signal} received" if self._signal
                                else "train.time_limit_minutes reached" if
                                time.monotonic() > self._deadline else "another rank stopped")
        self.stop = self.stop or stop
        self.optimizer.skip_next_step = self.skip
        self.nonfinite.zero_()
        if self.skip:
            self.consecutive_skips += 1
            self.total_skips += 1
        else:
            self.consecutive_skips = 0

    def raise_if_diverged(self, step: int) -> None:
        if self.consecutive_skips >= self.cfg.train.max_consecutive_skips:
            raise UserError(
                f"the loss was not finite for {self.consecutive_skips} steps in a row (up to "
                f"step {step}); stopping. No update was applied in those steps, so the last "
                f"committed checkpoint holds finite weights. Lower optim.lr, raise "
                f"optim.warmup_steps, or check the data; then resume.")

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
