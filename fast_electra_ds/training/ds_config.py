"""DeepSpeed JSON: speed and memory settings, completed from the run config.

The JSON under ds_configs/ says how to run (ZeRO stage, precision, buckets, offload); the run
config says what to train (batch sizes, optimizer, schedule, clipping). `resolve_ds_config` is
the one place the two meet: it fills every `"auto"` from the run config and reports *all*
disagreements at once, because DeepSpeed would otherwise take the JSON's word silently.

DeepSpeed also ignores unknown top-level keys (a misspelled `zero_optimisation` runs ZeRO-0
without a word), so `check_keys` rejects any key it does not know, with a suggestion.
"""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any

from fast_electra_ds.config import RunConfig, flatten, resolve_path
from fast_electra_ds.errors import UserError

# Top-level keys DeepSpeed 0.16-0.19 reads (runtime/config.py, monitor/, profiling/, ...).
# tests/test_ds_config.py checks that each appears in the installed DeepSpeed's source.
KNOWN_KEYS = frozenset({
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
    "optimizer", "scheduler", "fp16", "bf16", "torch_autocast", "gradient_clipping",
    "prescale_gradients", "gradient_predivide_factor", "sparse_gradients", "zero_optimization",
    "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "steps_per_print",
    "wall_clock_breakdown", "dump_state", "memory_breakdown", "flops_profiler",
    "activation_checkpointing", "sparse_attention", "data_efficiency", "curriculum_learning",
    "checkpoint", "data_types", "aio", "autotuning", "tensorboard", "wandb", "csv_monitor",
    "comet", "communication_data_type", "seq_parallel_communication_data_type",
    "compression_training", "disable_allgather", "dataloader_drop_last", "pipeline",
    "hybrid_engine", "nebula", "compile", "timers", "weight_quantization",
    "progressive_layer_drop", "eigenvalue", "gradient_allreduce_op", "log_level",
    "disable_python_gc", "managed_gradient_accumulation", "use_data_before_expert_parallelism",
    "comms_logger", "graph_harvesting",
})

# Keys whose value comes from the run config: JSON key -> (run-config key, value getter).
_FROM_RUN_CONFIG = {
    "train_batch_size": "train.global_batch_size",
    "train_micro_batch_size_per_gpu": "train.micro_batch_size",
    "gradient_accumulation_steps": "train.global_batch_size / (train.micro_batch_size * ranks)",
    "gradient_clipping": "optim.grad_clip",
}


def load_ds_config(path: str) -> dict[str, Any]:
    """Read and key-check a DeepSpeed JSON file."""
    p = resolve_path(path)
    if not p.is_file():
        raise UserError(f"DeepSpeed config {path} does not exist; bundled ones are in ds_configs/")
    try:
        ds = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"DeepSpeed config {path} is not valid JSON: {e}") from None
    if not isinstance(ds, dict):
        raise UserError(f"DeepSpeed config {path} must hold a JSON object")
    check_keys(ds, str(path))
    return ds


def check_keys(ds: dict[str, Any], source: str) -> None:
    unknown = sorted(set(ds) - KNOWN_KEYS)
    if not unknown:
        return
    lines = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1)
        lines.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise UserError(f"{source}: unknown top-level DeepSpeed key(s) {', '.join(lines)}. DeepSpeed "
                    f"would silently ignore them; fix the spelling or remove them.")


def precision(ds: dict[str, Any]) -> str:
    """'fp16', 'bf16' or 'fp32': what the engine trains in."""
    if ds.get("fp16", {}).get("enabled", False) is True:
        return "fp16"
    if ds.get("bf16", {}).get("enabled", False) is True:
        return "bf16"
    return "fp32"


def zero_stage(ds: dict[str, Any]) -> int:
    return int(ds.get("zero_optimization", {}).get("stage", 0))


def resolve_ds_config(ds: dict[str, Any], cfg: RunConfig, *, world_size: int,
                      device: str) -> dict[str, Any]:
    """A copy of `ds` with every "auto" filled from `cfg`; one UserError lists every mismatch."""
    tr = cfg.train
    per_step = tr.micro_batch_size * world_size
    problems: list[str] = []
    if tr.global_batch_size % per_step:
        problems.append(
            f"train.global_batch_size={tr.global_batch_size} is not a multiple of "
            f"train.micro_batch_size * ranks = {tr.micro_batch_size} * {world_size}; pick a "
            f"global batch divisible by {per_step} or change micro_batch_size")
    wanted = {
        "train_batch_size": tr.global_batch_size,
        "train_micro_batch_size_per_gpu": tr.micro_batch_size,
        "gradient_accumulation_steps": max(1, tr.global_batch_size // per_step),
        "gradient_clipping": cfg.optim.grad_clip,
    }
    out = copy.deepcopy(ds)
    for key, value in wanted.items():
        have = out.get(key, "auto")
        if have == "auto":
            out[key] = value
        elif have != value:
            problems.append(f"{key}: the JSON says {have!r} but the run config gives {value!r} "
                            f"({_FROM_RUN_CONFIG[key]}); set it to \"auto\" in the JSON")
    for block, owner in (("optimizer", "optim.*"), ("scheduler", "optim.warmup_steps and "
                                                                 "train.steps")):
        if block in out:
            problems.append(f"the JSON has an {block!r} block, but the {block} comes from the run "
                            f"config ({owner}); remove the block")
    for key, value in flatten(out).items():
        if value == "auto":
            problems.append(f"{key}: \"auto\" is only understood for the batch sizes and "
                            f"gradient_clipping; give a value")
    prec = precision(out)
    if device == "cpu" and prec == "fp16":
        problems.append("fp16 is not supported on CPU (DeepSpeed refuses it); use "
                        "ds_configs/cpu_fp32.json or a bf16 config")
    if problems:
        raise UserError(f"DeepSpeed config {cfg.ds_config} disagrees with the run config:\n  - "
                        + "\n  - ".join(problems))
    # DeepSpeed vets ZeRO optimizers by exact type; ours is AdamW plus a skip flag
    # (engine.SkippableStep), which it would otherwise refuse.
    out["zero_allow_untested_optimizer"] = True
    return out


def write_resolved(ds: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(ds, indent=2) + "\n")
