"""The one place DeepSpeed's training side is touched: process group, optimizer, engine.

`init_distributed` works for a plain `python -m fast_electra_ds pretrain` (a world of one) and
under the `deepspeed` launcher (RANK/WORLD_SIZE/LOCAL_RANK in the environment). `build_engine`
hands the trainable module, an AdamW and a warmup/linear-decay schedule to
`deepspeed.initialize` with the resolved JSON. The frozen generator never comes here: the
training engine would cast it and, under ZeRO-3, shard it. `export_generator` gathers a trained
generator's shards to write it as a HF folder.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from fast_electra_ds.config import OptimConfig, RunConfig
from fast_electra_ds.errors import UserError
from fast_electra_ds.method.models import param_groups


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pin_op_builds() -> None:
    """Where DeepSpeed JIT-builds its ops (on CPU: the shared-memory allreduce, when the process
    group starts): with the `ninja` installed beside this interpreter (make setup's, in
    .venv/bin), put first on PATH, and, in a venv, into VENV/torch_extensions unless
    TORCH_EXTENSIONS_DIR says otherwise. Ninja 1.11 (a system's) and 1.13 (the venv's) hash
    build commands differently, and two checkouts write different include paths into the one
    ~/.cache/torch_extensions build: runs started with and without .venv/bin on PATH (`bash
    launch_scripts/...` vs the venv's `deepspeed`), or from two venvs, rebuilt the op at every
    alternation, ~30 s of two compilers each time."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if os.path.isfile(os.path.join(bin_dir, "ninja")) and path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + (os.pathsep + path if path else "")
    if sys.prefix != sys.base_prefix:  # a venv: its own build cache, deleted with it
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))


def init_distributed(cfg: RunConfig, timeout_minutes: float = 30.0) -> DistEnv:
    """Start (or join) the process group; pick this rank's device."""
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible; use device=cpu (and a cpu_* "
                        "ds_config)")
    # DeepSpeed picks its accelerator from the environment at first import; on a CPU run it
    # must be the CPU one even if a CUDA build of torch is installed.
    if want == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    _pin_op_builds()
    import deepspeed

    backend = "nccl" if want == "cuda" else "gloo"
    if not torch.distributed.is_initialized():
        kwargs = {}
        if "RANK" not in os.environ:
            # A plain single process, not under a launcher: a world of one on a free local port,
            # given explicitly rather than through os.environ, which child processes inherit.
            kwargs = dict(init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
            os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed's engine reads it
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False,
                                   timeout=timedelta(minutes=timeout_minutes), **kwargs)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if want == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=device)


class SkippableStep:
    """Mixin: `skip_next_step = True` makes the next `step()` a no-op.

    However DeepSpeed wraps the optimizer (ZeRO partitions, the bf16 master-weight optimizer),
    the update ends in this object's step(); returning there leaves the master weights and the
    Adam moments untouched, and DeepSpeed then copies the unchanged master weights back and
    zeroes the gradients as usual. That is how all ranks skip a step with a non-finite loss
    together (train.FaultGuard), in every ZeRO stage and precision, without touching the engine.
    """

    skip_next_step = False

    def step(self, *args, **kwargs):
        if self.skip_next_step:
            return None
        return super().step(*args, **kwargs)


def _skippable(cls: type) -> type:
    return type(f"Skippable{cls.__name__}", (SkippableStep, cls), {})


def build_optimizer(module: torch.nn.Module, optim: OptimConfig, ds: dict[str, Any],
                    device: torch.device) -> tuple[torch.optim.Optimizer, str]:
    """AdamW; fused where it exists. Returns the optimizer and a name for the log."""
    groups = param_groups(module, optim.weight_decay)
    kwargs = dict(lr=optim.lr, betas=(optim.adam_beta1, optim.adam_beta2), eps=optim.adam_eps)
    offload = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    if offload == "cpu":
        # ZeRO-Offload steps the optimizer on the CPU; DeepSpeed requires its own CPU Adam there.
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return (_skippable(DeepSpeedCPUAdam)(groups, adamw_mode=True, **kwargs),
                "DeepSpeedCPUAdam")
    if device.type == "cuda":
        try:  # NVIDIA apex, when it was built on this machine
            from apex.optimizers import FusedAdam as ApexFusedAdam

            return (_skippable(ApexFusedAdam)(groups, adam_w_mode=True, **kwargs),
                    "apex.FusedAdam")
        except ImportError:
            pass
        # Without apex: torch's fused AdamW (one multi-tensor CUDA kernel, no JIT build needed).
        return _skippable(torch.optim.AdamW)(groups, fused=True, **kwargs), "torch.AdamW(fused)"
    return _skippable(torch.optim.AdamW)(groups, foreach=True, **kwargs), "torch.AdamW"


def warmup_linear_decay(optimizer: torch.optim.Optimizer, warmup_steps: int,
                        total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LR multiplier: 0 -> 1 over warmup_steps, then linearly to 0 at total_steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_engine(module: torch.nn.Module, cfg: RunConfig, ds: dict[str, Any],
                 env: DistEnv, progress=None):
    """deepspeed.initialize on the trainable module. Returns (engine, optimizer name).
    progress: a budgeted run's training.progress.Progress, whose u the LR decay follows."""
    import deepspeed

    module.to(env.device)
    optimizer, name = build_optimizer(module, cfg.optim, ds, env.device)
    if progress is not None and progress.budgeted:
        from fast_electra_ds.training.progress import warmup_then_decay

        scheduler = warmup_then_decay(optimizer, cfg.optim.warmup_steps, progress)
    else:
        scheduler = warmup_linear_decay(optimizer, cfg.optim.warmup_steps, cfg.train.steps)
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer,
                                           lr_scheduler=scheduler, config=ds)
    return engine, name


def export_generator(model: torch.nn.Module, out: Path, *, tokenizer: str, is_main: bool) -> None:
    """Write the engine's trained generator as a HF masked-LM folder with the data's tokenizer
    (mode=mlm's RUN_DIR/generator). Collective: under ZeRO-3 each rank holds a shard, so the full
    weights are gathered first (a no-op below stage 3)."""
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        if is_main:
            model.save_pretrained(out, safe_serialization=True)
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(tokenizer).save_pretrained(out)
    torch.distributed.barrier()
