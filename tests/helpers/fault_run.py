"""A pretraining run with faults injected, for tests/test_faults.py. Started once per rank by a
launcher (torchrun or deepspeed), or as a plain process:

    fault_run.py [--nan-rank R --nan-steps 3,4] [--slow-after-step N] [key=value ...]

--nan-steps: on rank R, the loss of those optimizer steps (1-based) is NaN.
--slow-after-step: after that step, every step sleeps 0.5 s, so that a test can kill -9 or
    SIGTERM the run part-way, from outside, without racing it.
--hold-after-step N --release-file PATH: after step N, every step waits until PATH exists (at
    most 300 s), so that a test can act while the run is certainly still running, however long
    its action takes on a loaded machine.
--fail-save-step S --fail-save-rank R: on rank R, the checkpoint of step S fails as on a full
    disk: its first shard file is written half, then the write raises ENOSPC.
At the end, each rank writes RUN_DIR/fault_result_rank<R>.json: whether every trained weight is
finite, and how many updates its optimizer applied.
"""

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

import torch

from fast_electra_ds.config import load_config
from fast_electra_ds.method.modes import Mode
from fast_electra_ds.training import loop, resume as resuming

parser = argparse.ArgumentParser()
parser.add_argument("--local_rank", type=int, default=None)
parser.add_argument("--nan-rank", type=int, default=-1)
parser.add_argument("--nan-steps", default="")
parser.add_argument("--slow-after-step", type=int, default=-1)
parser.add_argument("--hold-after-step", type=int, default=-1)
parser.add_argument("--release-file", default="")
parser.add_argument("--fail-save-step", type=int, default=-1)
parser.add_argument("--fail-save-rank", type=int, default=-1)
args, overrides = parser.parse_known_args()
nan_steps = {int(s) for s in args.nan_steps.split(",") if s}
rank = int(os.environ.get("RANK", "0"))

real_forward = Mode.forward  # every mode's micro-batch goes through it
calls = {"n": 0}


def forward(self, engine, batch, temp):
    out = real_forward(self, engine, batch, temp)
    step = calls["n"] // engine.gradient_accumulation_steps() + 1 + train_start["step"]
    calls["n"] += 1
    if rank == args.nan_rank and step in nan_steps:
        out = {**out, "loss": out["loss"] * float("nan")}
    if 0 <= args.slow_after_step < step:
        time.sleep(0.5)
    if 0 <= args.hold_after_step < step:
        deadline = time.time() + 300
        while not os.path.exists(args.release_file) and time.time() < deadline:
            time.sleep(0.1)
    return out


Mode.forward = forward


def fail_save(real_save):
    def save(self, state_dict, path):
        if rank == args.fail_save_rank and f"step{args.fail_save_step:09d}" in str(path):
            real_save(self, state_dict, path)
            with open(path, "r+b") as f:  # what a full disk leaves: part of the file
                f.truncate(os.path.getsize(path) // 2)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(self, state_dict, path)
    return save


if args.fail_save_step >= 0:
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    TorchCheckpointEngine.save = fail_save(TorchCheckpointEngine.save)
train_start = {"step": 0}
real_resume = resuming.resume


def resume(engine, plan, log):
    state = real_resume(engine, plan, log)
    train_start["step"] = state.step
    return state


resuming.resume = resume

cfg = load_config("tiny", overrides)
cfg.validate()
result = loop.pretrain(cfg)
engine = result.engine
optimizer = engine.basic_optimizer
applied = max((int(s["step"]) for s in optimizer.state.values() if "step" in s), default=0)
finite = all(bool(torch.isfinite(p).all()) for p in engine.module.parameters())
Path(cfg.run_dir, f"fault_result_rank{rank}.json").write_text(
    json.dumps({"finite": finite, "updates_applied": applied, "step": result.state.step,
                "stopped_early": result.stopped_early}))
sys.exit(0)
