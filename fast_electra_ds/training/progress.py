"""How far a run is: the fraction u in [0, 1] of its length, which the learning-rate decay and
the temperature curriculum follow, and when it ends.

A run is as long as one of
  train.steps           optimizer steps                     u = step / steps
  train.budget_minutes  minutes of training                 u = train_seconds / (60 * minutes)
  train.budget_flops    FLOPs of our count (method/flops)   u = step * step_flops / flops

train_seconds counts the training steps only (not evaluation or checkpoints), as the learning
curves' time axis does. With a minutes budget every rank takes the slowest rank's count after
each step (one all-reduce), so all ranks see the same u and stop after the same step. The count
is in the checkpoint (TrainState), so a resumed run continues the same curve and stops where the
budget is spent, with a committed checkpoint, like a run that ends its steps.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from fast_electra_ds.config import RunConfig
from fast_electra_ds.training.checkpoint import TrainState


class Progress:
    def __init__(self, cfg: RunConfig, *, step_flops: int,
                 comm_device: torch.device = torch.device("cpu")):
        tr = cfg.train
        self.minutes, self.flops, self.steps = tr.budget_minutes, tr.budget_flops, tr.steps
        self.step_flops = step_flops
        self.comm_device = comm_device  # NCCL reduces CUDA tensors only
        self.state = TrainState()  # bound to the loop's state once it is known (`bind`)

    @property
    def budgeted(self) -> bool:
        return bool(self.minutes or self.flops)

    def bind(self, state: TrainState) -> None:
        self.state = state

    def fraction(self, state: TrainState, steps_done: int | None = None) -> float:
        """u of `state` (after `steps_done` optimizer steps, if given), clipped to [0, 1]."""
        step = state.step if steps_done is None else steps_done
        if self.minutes:
            u = state.train_seconds / (60 * self.minutes)
        elif self.flops:
            u = step * self.step_flops / self.flops
        else:
            u = step / self.steps
        return min(max(u, 0.0), 1.0)

    def done(self, state: TrainState) -> bool:
        return self.fraction(state) >= 1.0

    def next_step_is_last(self, state: TrainState) -> bool:
        """Whether the coming step ends the run, where that is known ahead (steps, FLOPs); with
        a minutes budget the loop learns it after the step (`done`)."""
        if self.minutes:
            return False
        if self.flops:
            return (state.step + 1) * self.step_flops >= self.flops
        return state.step + 1 >= self.steps

    def agree(self, state: TrainState) -> None:
        """Minutes budget: every rank takes the largest train_seconds (collective)."""
        if self.minutes and dist.is_initialized() and dist.get_world_size() > 1:
            seconds = torch.tensor([state.train_seconds], dtype=torch.float64,
                                   device=self.comm_device)
            dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
            state.train_seconds = float(seconds)

    def describe(self) -> str:
        if self.minutes:
            return f"a budget of {self.minutes:g} training minutes"
        if self.flops:
            steps = math.ceil(self.flops / self.step_flops)
            return f"a budget of {self.flops:.3g} FLOPs (~{steps:,} steps)"
        return f"{self.steps:,} steps"


def warmup_then_decay(optimizer: torch.optim.Optimizer, warmup_steps: int,
                      progress: Progress) -> torch.optim.lr_scheduler.LambdaLR:
    """LR multiplier min((step + 1) / warmup_steps, 1 - u) for budgeted runs, `step` optimizer
    steps done: the warmup in steps, then linear to 0 as the budget is spent. (A minutes budget's
    u is the bound state's, which the loop updates after DeepSpeed has stepped the scheduler: there
    the LR lags u by one step.)"""

    def factor(step: int) -> float:
        ramp = (step + 1) / warmup_steps if warmup_steps else 1.0
        return max(0.0, min(ramp, 1.0 - progress.fraction(progress.state, steps_done=step)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
