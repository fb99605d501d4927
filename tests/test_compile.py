"""train.compile: torch.compile (inductor, on CPU here) of the engine's module and of the frozen
generator's encoder trains as the eager modules do."""

from __future__ import annotations

import json

import pytest

from fast_electra_ds.config import load_config
from fast_electra_ds.training import loop


def _run(run_dir, dataset, generator, compile_: bool):
    cfg = load_config("tiny", [
        f"run_dir={run_dir}", f"data.paths={dataset}", "device=cpu", "mode=fast-electra",
        f"generator.path={generator}", f"train.compile={compile_}", "train.steps=4",
        "train.global_batch_size=8", "train.micro_batch_size=8", "logging.log_every=1",
        "eval.every=0", "model.hidden_dropout=0", "model.attention_dropout=0"])
    cfg.validate()
    result = loop.pretrain(cfg)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return result, [r["loss"] for r in records if r["split"] == "train"]


def test_compiled_training_matches_eager(tmp_path, tiny_dataset, tiny_generator):
    _, eager = _run(tmp_path / "eager", tiny_dataset, tiny_generator, False)
    result, compiled = _run(tmp_path / "compiled", tiny_dataset, tiny_generator, True)
    assert result.engine.is_compiled
    encoder = result.frozen_generator.hf_model.electra
    assert encoder._compiled_call_impl is not None  # the frozen generator ran compiled too
    # inductor fuses and reorders float32 arithmetic: equal to rounding, step after step
    assert compiled == pytest.approx(eager, rel=1e-4)
