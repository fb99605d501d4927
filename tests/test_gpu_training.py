"""Training on a CUDA GPU: bf16 ZeRO-2 under NCCL with the compiled kernels, every mode.

Deselected by default (marker `gpu`); `make gpu-check` runs them (benchmarks/gpu_check.py). Each
run is the tiny recipe for 30 steps in-process (a world of one over NCCL), with the recipe's own
ds_configs/zero2_bf16.json and kernels=on, then resumed for 10 more from its last checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fast_electra_ds.config import load_config
from fast_electra_ds.training import loop

pytestmark = pytest.mark.gpu


def _cfg(run_dir: Path, dataset: Path, *overrides: str):
    cfg = load_config("tiny", [f"run_dir={run_dir}", f"data.paths={dataset}", "device=cuda",
                               "ds_config=ds_configs/zero2_bf16.json", "kernels=on",
                               "train.global_batch_size=32", "train.micro_batch_size=16",
                               "train.steps=30", "checkpoint.save_every=30", "eval.every=30",
                               "eval.num_sequences=64", "logging.wandb=disabled", *overrides])
    cfg.validate()
    return cfg


def _train_losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


@pytest.mark.parametrize("mode", ["mlm", "electra", "fast-electra"])
def test_bf16_zero2_trains_and_resumes_on_cuda(mode, tmp_path, tiny_dataset, tiny_generator):
    assert torch.cuda.is_available(), "the gpu marker needs a CUDA device"
    extra = [f"mode={mode}"]
    if mode == "fast-electra":
        extra.append(f"generator.path={tiny_generator}")
    result = loop.pretrain(_cfg(tmp_path, tiny_dataset, *extra))
    losses = _train_losses(tmp_path)
    assert losses and all(math.isfinite(x) for x in losses), losses
    if mode == "mlm":  # (the RTD modes can sit on their plateau for 30 steps at this scale)
        assert losses[-1] < losses[0], losses
    if mode == "fast-electra":
        # the frozen generator is held in fp16 on the GPU (DeepSpeed-Inference or plain)
        assert next(result.frozen_generator.hf_model.parameters()).dtype == torch.float16
    assert all(math.isfinite(v) for v in result.eval_metrics.values())

    resumed = loop.pretrain(_cfg(tmp_path, tiny_dataset, *extra, "train.steps=40",
                                 "checkpoint.resume=auto"))
    assert resumed.state.step == 40
