"""Pretraining end to end on CPU: the three modes, resume, and bad input caught before compute.

Single-process runs go in-process through `loop.pretrain` (a world of one over gloo); the
multi-rank comparison starts the real `deepspeed` launcher with 2 CPU ranks.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fast_electra_ds.cli import main
from fast_electra_ds.config import load_config
from fast_electra_ds.training import assembly, loop

REPO = Path(__file__).resolve().parent.parent


def _cfg(run_dir: Path, dataset: Path, *overrides: str):
    cfg = load_config("tiny", [f"run_dir={run_dir}", f"data.paths={dataset}", "device=cpu",
                               "train.global_batch_size=16", "train.micro_batch_size=16",
                               "eval.num_sequences=64", *overrides])
    cfg.validate()
    return cfg


def _records(run_dir: Path, split: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def test_mlm_generator_loss_falls_and_exports_a_masked_lm(tiny_generator):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    records = _records(tiny_generator.parent)
    assert records[-1]["mlm_loss"] < records[0]["mlm_loss"] - 0.5
    model = AutoModelForMaskedLM.from_pretrained(tiny_generator)
    tok = AutoTokenizer.from_pretrained(tiny_generator)
    assert model.config.vocab_size == len(tok) and tok.mask_token == "[MASK]"


def test_fast_electra_trains_the_discriminator_against_a_frozen_generator(
        tmp_path, tiny_dataset, tiny_generator, monkeypatch):
    saved = load_file(tiny_generator / "model.safetensors")
    engines = []
    real_build = assembly.build_engine

    def spy(module, cfg, ds, env, **kwargs):
        engine, name = real_build(module, cfg, ds, env, **kwargs)
        engines.append(engine)
        return engine, name

    monkeypatch.setattr(assembly, "build_engine", spy)
    run_dir = tmp_path / "fast"
    result = loop.pretrain(_cfg(run_dir, tiny_dataset, f"generator.path={tiny_generator}",
                                 "train.steps=400", "eval.every=400",
                                 "eval.num_sequences=256"))

    # the generator: bit-identical weights, no gradients, nowhere in the optimizer
    frozen = result.frozen_generator.hf_model
    for name, tensor in frozen.state_dict().items():
        if name in saved:
            assert torch.equal(tensor.cpu(), saved[name]), name
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    optimized = {id(p) for g in engines[0].optimizer.param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in frozen.parameters()}
    assert optimized == {id(p) for p in result.engine.module.discriminator.parameters()}

    # the discriminator learns: loss falls, and on held-out data it beats "all original"
    records = _records(run_dir)
    assert records[-1]["rtd_loss"] < records[0]["rtd_loss"]
    ev = result.eval_metrics
    # (accuracy at the 0.5 threshold is a strict test with 14% replaced tokens; 16 eval batches
    # = 16k tokens keep its noise ~0.003)
    assert ev["rtd_accuracy"] > 1.0 - ev["rtd_replaced_share"] + 0.003, ev
    assert ev["auc"] > 0.8, ev
    # the temperature followed the calibrated curriculum (T0 measured on the data, rounded to 3
    # decimals, then the paper's curve, tau = 0.1): T(step) = 1 + (T0 - 1) exp(-(step-1)/400/tau)
    t0 = 1 + (records[0]["temperature"] - 1) * math.exp((records[0]["step"] - 1) / 400 / 0.1)
    assert t0 > 2.0 and t0 == pytest.approx(round(t0, 3), abs=1e-5)
    for r in records:
        assert r["temperature"] == pytest.approx(
            1 + (round(t0, 3) - 1) * math.exp(-(r["step"] - 1) / 400 / 0.1), rel=1e-5)
    assert (run_dir / "config.yaml").is_file() and (run_dir / "ds_config.json").is_file()


def test_electra_mode_trains_both_models_with_shared_embeddings(tmp_path, tiny_dataset,
                                                               monkeypatch):
    before = {}
    real_build = assembly.build_engine

    def spy(module, cfg, ds, env, **kwargs):
        before.update(copy.deepcopy(module.state_dict()))
        return real_build(module, cfg, ds, env, **kwargs)

    monkeypatch.setattr(assembly, "build_engine", spy)
    # (logged every step: one micro-batch per record, where loss = mlm + 50 rtd holds exactly;
    # over a window of batches with different token counts the ratios of sums differ slightly)
    result = loop.pretrain(_cfg(tmp_path / "electra", tiny_dataset, "mode=electra",
                                 "train.steps=20", "eval.every=20", "logging.log_every=1"))
    module = result.engine.module
    after = module.state_dict()
    for prefix in ("generator.electra.encoder", "discriminator.electra.encoder",
                   "generator.generator_predictions", "discriminator.discriminator_predictions"):
        keys = [k for k in after if k.startswith(prefix)]
        assert keys and any(not torch.equal(before[k], after[k]) for k in keys), prefix
    shared = module.discriminator.electra.embeddings.word_embeddings.weight
    assert module.generator.electra.embeddings.word_embeddings.weight is shared
    assert module.generator.generator_lm_head.weight is shared
    assert not torch.equal(before["discriminator.electra.embeddings.word_embeddings.weight"],
                           shared.detach())
    records = _records(tmp_path / "electra")
    assert all(r["temperature"] == 1.0 for r in records)  # the original's constant T
    assert records[0]["loss"] == pytest.approx(records[0]["mlm_loss"]
                                               + 50 * records[0]["rtd_loss"], rel=1e-4)


def test_resume_auto_continues_bit_for_bit(tmp_path, tiny_dataset, tiny_generator):
    common = [f"generator.path={tiny_generator}", "train.steps=8", "eval.every=0",
              "checkpoint.save_every=4", "logging.log_every=1"]
    full = tmp_path / "full"
    loop.pretrain(_cfg(full, tiny_dataset, *common))
    # the same run interrupted after step 4: only its first checkpoint survives
    part = tmp_path / "part"
    shutil.copytree(full / "checkpoints" / "step000000004", part / "checkpoints" /
                    "step000000004")
    (part / "checkpoints" / "latest").write_text("step000000004")
    loop.pretrain(_cfg(part, tiny_dataset, *common))
    want = [r["loss"] for r in _records(full)[4:]]
    got = [r["loss"] for r in _records(part)]
    assert [r["step"] for r in _records(part)] == [5, 6, 7, 8]
    assert got == want  # bit-identical: data order, masks, sampling noise, dropout, optimizer


@pytest.mark.parametrize("overrides, needle", [
    (["ds_config=ds_configs/zero2_fp16.json"], "fp16 is not supported on CPU"),
    (["mode=joint"], "one of fast-electra, electra, mlm"),
    (["temperature.t0=0.5"], "temperature.t0 must be >= 1"),
    (["temperature.tau=0"], "temperature.tau must be > 0"),
    (["data.seq_len=256"], "exceeds model.max_position_embeddings"),
    (["data.seq_len=32"], "was packed with seq-len 64"),
    (["generator.path=./nowhere"], "generator.path: ./nowhere is not a directory"),
    (["ds_config={tmp}/typo.json"], "did you mean 'zero_optimization'"),
    (["data.paths={tmp}/truncated"], "bytes, but the index describes"),
    (["checkpoint.resume={tmp}/nothing"], "no committed checkpoint there"),
])
def test_bad_input_is_refused_before_any_compute(tmp_path, tiny_dataset, tiny_generator,
                                                 capsys, overrides, needle):
    """A refused run writes nothing: its run_dir (here two folders deep) is not created, or is
    removed again when the refusal comes after the run took run_dir's lock."""
    (tmp_path / "typo.json").write_text(json.dumps({"zero_optimisation": {"stage": 0}}))
    shutil.copytree(tiny_dataset, tmp_path / "truncated")
    train_bin = tmp_path / "truncated" / "train.bin"
    train_bin.write_bytes(train_bin.read_bytes()[:-2])
    run_dir = tmp_path / "runs" / "sweep" / "run"
    code = main(["pretrain", "--config", "tiny", f"run_dir={run_dir}",
                 f"data.paths={tiny_dataset}", f"generator.path={tiny_generator}",
                 "device=cpu", *(o.format(tmp=tmp_path) for o in overrides)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()


def test_a_refused_run_leaves_an_existing_run_dir_as_it_was(tmp_path, tiny_dataset, capsys):
    """A refused run takes back the lock file it made, but only removes a run_dir it created
    itself: one that was there stays, with whatever it held."""
    empty, used = tmp_path / "empty", tmp_path / "used"
    empty.mkdir()
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    for run_dir in (empty, used):
        code = main(["pretrain", "--config", "tiny", "mode=mlm", f"run_dir={run_dir}",
                     f"data.paths={tiny_dataset}", "device=cpu",
                     f"checkpoint.resume={tmp_path / 'nothing'}"])
        assert code == 2 and "no committed checkpoint there" in capsys.readouterr().err
    assert empty.is_dir() and not any(empty.iterdir())
    assert [p.name for p in used.iterdir()] == ["notes.txt"]
    assert (used / "notes.txt").read_text() == "mine"


def _save_generator(path: Path, vocab_size: int, max_positions: int = 128) -> Path:
    from transformers import ElectraConfig, ElectraForMaskedLM

    ElectraForMaskedLM(ElectraConfig(vocab_size=vocab_size, embedding_size=16, hidden_size=16,
                                     num_hidden_layers=1, num_attention_heads=1,
                                     intermediate_size=32,
                                     max_position_embeddings=max_positions)).save_pretrained(path)
    return path


def test_generator_that_does_not_fit_the_data_is_refused(tmp_path, tiny_dataset, capsys):
    from fast_electra_ds.data.loader import open_datasets

    vocab = open_datasets([str(tiny_dataset)], "train")[1].vocab_size
    cases = [(_save_generator(tmp_path / "small_vocab", vocab_size=100), "vocab"),
             (_save_generator(tmp_path / "short", vocab_size=vocab, max_positions=32), "32")]
    for folder, needle in cases:
        code = main(["pretrain", "--config", "tiny", f"run_dir={tmp_path / 'run'}",
                     f"data.paths={tiny_dataset}", f"generator.path={folder}", "device=cpu"])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and "Traceback" not in err, err
        assert not (tmp_path / "run").exists()  # refused after taking run_dir's lock: removed


@pytest.mark.parametrize("mode", ["fast-electra", "electra", "mlm"])
def test_training_steps_feed_segment_b_token_types_to_every_model(tmp_path, tiny_dataset,
                                                                  tiny_generator, monkeypatch,
                                                                  mode):
    """The prepared data's [CLS] A [SEP] B [SEP] examples reach the generator and the
    discriminator with token types 1 on B: ELECTRA's segment embeddings train in every mode."""
    from transformers.models.electra.modeling_electra import ElectraModel

    seen: dict[int, bool] = {}  # hidden size of the encoder -> saw type-1 tokens
    real_forward = ElectraModel.forward

    def spy(self, *args, token_type_ids=None, **kwargs):
        if self.training or mode == "fast-electra":  # the frozen generator runs in eval mode
            has_b = token_type_ids is not None and bool((token_type_ids == 1).any())
            seen[self.config.hidden_size] = seen.get(self.config.hidden_size, False) or has_b
        return real_forward(self, *args, token_type_ids=token_type_ids, **kwargs)

    monkeypatch.setattr(ElectraModel, "forward", spy)
    result = loop.pretrain(_cfg(tmp_path / mode, tiny_dataset, f"mode={mode}", "train.steps=2",
                                f"generator.path={tiny_generator}", "eval.every=0"))
    # tiny recipe: discriminator hidden 64, generators (trained or frozen) hidden 32
    expected = {"fast-electra": {32, 64}, "electra": {32, 64}, "mlm": {32}}[mode]
    assert set(seen) == expected and all(seen.values()), seen

    # what export writes was trained: the segment-B row of every trained type embedding got
    # gradients (Adam's first moment; AdamW's weight decay alone would leave it at zero)
    optimizer = result.engine.basic_optimizer
    trained = [m for m in result.engine.module.modules() if isinstance(m, ElectraModel)]
    for model in trained:
        table = model.embeddings.token_type_embeddings.weight
        assert table.shape[0] == 2 and optimizer.state[table]["exp_avg"][1].abs().sum() > 0


def test_evaluation_without_valid_data_fails_before_the_first_step(tmp_path, tiny_corpus,
                                                                  tiny_tokenizer, capsys):
    from fast_electra_ds.data.prepare import prepare_data

    data = tmp_path / "no-valid"
    prepare_data([str(tiny_corpus)], tokenizer=str(tiny_tokenizer), seq_len=64,
                 output=str(data), valid_fraction=0.0)
    run_dir = tmp_path / "run"
    code = main(["pretrain", "--config", "tiny", "mode=mlm", f"run_dir={run_dir}",
                 f"data.paths={data}", "device=cpu", "eval.every=100"])
    err = capsys.readouterr().err
    assert code == 2 and "has no valid sequences" in err, err
    assert not run_dir.exists()
