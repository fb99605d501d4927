"""model.attn_implementation: resolved once per run, logged, and used by every model of it (the
discriminator, a generator trained here, the frozen generator); sdpa and eager train alike."""

from __future__ import annotations

import json

import pytest
import torch

from fast_electra_ds.cli import main
from fast_electra_ds.config import load_config
from fast_electra_ds.errors import UserError
from fast_electra_ds.method import models
from fast_electra_ds.training import loop


def test_auto_is_sdpa_where_flash_attention_cannot_run_and_says_why():
    said = []
    assert models.resolve_attention("auto", device="cpu", half_precision=False,
                                    log=said.append) == "sdpa"
    assert said == ["attention: sdpa (auto: the run is on cpu)"]
    for explicit in ("sdpa", "eager"):
        assert models.resolve_attention(explicit, device="cpu", half_precision=False,
                                        log=said.append) == explicit


def test_auto_takes_flash_attention_where_it_can_run(monkeypatch):
    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name: object() if name == "flash_attn" else real(name))
    cuda = torch.device("cuda", 0)  # only resolved, never used
    assert models.resolve_attention("auto", device=cuda, half_precision=True,
                                    log=lambda m: None) == "flash_attention_2"
    said = []
    assert models.resolve_attention("auto", device=cuda, half_precision=False,
                                    log=said.append) == "sdpa"
    assert "fp32" in said[0]


def test_flash_attention_where_it_cannot_run_is_an_error_naming_why():
    with pytest.raises(UserError, match="cannot run: the run is on cpu; training is fp32"):
        models.resolve_attention("flash_attention_2", device="cpu", half_precision=False)


def test_flash_attention_on_cpu_stops_pretrain_before_anything_is_written(tmp_path, tiny_dataset,
                                                                          capsys):
    run_dir = tmp_path / "run"
    code = main(["pretrain", "--config", "tiny", f"run_dir={run_dir}", f"data.paths={tiny_dataset}",
                 "device=cpu", "mode=mlm", "model.attn_implementation=flash_attention_2"])
    err = capsys.readouterr().err
    assert code == 2 and "flash_attention_2 cannot run" in err and "Traceback" not in err
    assert not run_dir.exists()


def _losses(run_dir) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


@pytest.mark.parametrize("mode", ["fast-electra", "electra"])
def test_eager_attention_reaches_every_model_and_trains_like_sdpa(tmp_path, tiny_dataset,
                                                                 tiny_generator, mode):
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    losses, results = {}, {}
    for attention in ("sdpa", "eager"):
        run_dir = tmp_path / attention
        cfg = load_config("tiny", [
            f"run_dir={run_dir}", f"data.paths={tiny_dataset}", "device=cpu", f"mode={mode}",
            f"generator.path={tiny_generator}", f"model.attn_implementation={attention}",
            "train.steps=4", "train.global_batch_size=8", "train.micro_batch_size=8",
            "logging.log_every=1", "eval.every=0", "model.hidden_dropout=0",
            "model.attention_dropout=0"])
        cfg.validate()
        results[attention] = loop.pretrain(cfg)
        losses[attention] = _losses(run_dir)

    result = results["eager"]
    trained = [m for m in result.engine.module.modules()
               if isinstance(m, (ElectraForPreTraining, ElectraForMaskedLM))]
    frozen = [result.frozen_generator.hf_model] if result.frozen_generator else []
    assert len(trained + frozen) == 2  # discriminator + (trained or frozen) generator
    assert {m.config._attn_implementation for m in trained + frozen} == {"eager"}
    # the same math in another order: equal to float32 rounding, step after step
    assert losses["eager"] == pytest.approx(losses["sdpa"], rel=1e-5)
