"""train.compile: torch.compile (inductor, on CPU here) of the engine's module, the frozen
generator's encoder and the eager sampler trains as the eager code does."""

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
    frozen = result.frozen_generator
    assert frozen.hf_model.electra._compiled_call_impl is not None and frozen.compiled
    # inductor fuses and reorders float32 arithmetic: equal to rounding, step after step
    assert compiled == pytest.approx(eager, rel=1e-4)


def test_compiled_sampler_draws_the_same_tokens_as_eager():
    import torch

    from fast_electra_ds.method import sampling

    torch.manual_seed(0)
    for shape, temperature in (((6, 19, 3001), 1.0), ((3, 5, 997), 2.5)):  # odd sizes: tails
        logits = torch.randn(*shape) * 3
        sample_ids = torch.arange(shape[0]) * 1000 + 7
        eager, eager_stats = sampling.sample_replacements(
            logits, temperature=temperature, seed=1234, sample_ids=sample_ids)
        compiled, stats = sampling.sample_replacements(
            logits, temperature=temperature, seed=1234, sample_ids=sample_ids, compiled=True)
        assert torch.equal(compiled, eager)
        assert float(stats["gen_entropy_sum"]) == pytest.approx(
            float(eager_stats["gen_entropy_sum"]), rel=1e-5)
