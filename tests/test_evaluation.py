"""The held-out yardstick (evaluation.py): one judge corrupts one fixed set, and every run, any
mode, any rank layout, finished or exported, is scored on exactly those tokens."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from fast_electra_ds.cli import main
from fast_electra_ds.config import load_config
from fast_electra_ds.data.loader import open_datasets
from fast_electra_ds.method.modes import validate_config
from fast_electra_ds.method.objectives import rtd_loss
from fast_electra_ds.training import evaluation, loop
from fast_electra_ds.data.masking import num_predictions
from fast_electra_ds.method import flops
from fast_electra_ds.metrics import binary_auc

FIELDS = ("input_ids", "attention_mask", "masked_ids", "positions", "labels", "weights",
          "sample_ids")


def _info(dataset: Path):
    return open_datasets([str(dataset)], "train")[1]


def _build(dataset, judge, fingerprint, **kw):
    args = dict(judge=judge, judge_name="g", judge_fingerprint=fingerprint, num_sequences=50,
                seed=3, mask_prob=0.15, masking_style="electra", batch_size=7,
                logger=lambda m: None)
    return evaluation.build_eval_set([str(dataset)], _info(dataset), **{**args, **kw})


@pytest.fixture(scope="module")
def judge(tiny_dataset, tiny_generator):
    return evaluation.load_judge(str(tiny_generator), _info(tiny_dataset),
                                 device=torch.device("cpu"), logger=lambda m: None)


def test_the_set_is_the_same_whatever_the_rank_layout(tiny_dataset, judge):
    one = _build(tiny_dataset, *judge)
    shards = [_build(tiny_dataset, *judge, rank=r, world_size=3) for r in range(3)]
    assert [len(s.keep) for s in shards] == [17, 17, 17] and sum(s.keep.sum() for s in shards) == 50
    assert all(s.spec == one.spec for s in shards)
    for name in FIELDS:
        union = torch.cat([getattr(s.batch, name)[s.keep] for s in shards])
        assert torch.equal(union, getattr(one.batch, name)), name
    for name in ("corrupted_ids", "rtd_labels"):
        assert torch.equal(torch.cat([getattr(s, name)[s.keep] for s in shards]),
                           getattr(one, name)), name
    # the judge really replaced tokens, at the selected positions only
    real = one.batch.attention_mask.bool()
    assert 0.05 < one.rtd_labels[real].mean() < 0.2
    assert torch.equal((one.corrupted_ids != one.batch.input_ids).float(), one.rtd_labels)
    assert one.judge_stats.keys() == {"judge_mlm_accuracy", "judge_gen_entropy",
                                      "judge_replace_rate"}


def test_a_small_valid_split_is_used_whole_and_said_so(tiny_dataset, judge):
    import json as json_

    valid = json_.loads((tiny_dataset / "manifest.json").read_text())["splits"]["valid"]
    messages = []
    whole = _build(tiny_dataset, None, judge[1], num_sequences=10**6, logger=messages.append)
    assert whole.spec.num_sequences == valid["num_sequences"] == len(whole.keep)
    assert f"the valid split holds {valid['num_sequences']} sequences" in messages[0]


def test_the_key_follows_the_judges_weights_not_its_path(tmp_path, tiny_dataset,
                                                        tiny_generator, judge):
    info = _info(tiny_dataset)
    moved = tmp_path / "moved"
    shutil.copytree(tiny_generator, moved)
    _, same = evaluation.load_judge(str(moved), info, device=torch.device("cpu"),
                                    logger=lambda m: None)
    assert same == judge[1]
    model = evaluation.load_judge(str(moved), info, device=torch.device("cpu"),
                                  logger=lambda m: None)[0]
    with torch.no_grad():
        model.generator_predictions.dense.weight.add_(0.01)
    changed = tmp_path / "changed"
    model.save_pretrained(changed)
    shutil.copy(moved / "tokenizer.json", changed)
    shutil.copy(moved / "tokenizer_config.json", changed)
    _, other = evaluation.load_judge(str(changed), info, device=torch.device("cpu"),
                                     logger=lambda m: None)
    assert other != judge[1]

    base = _build(tiny_dataset, *judge).spec
    assert _build(tiny_dataset, None, same, judge_name=str(moved)).spec.key == base.key
    assert _build(tiny_dataset, None, other).spec.key != base.key
    assert _build(tiny_dataset, None, judge[1], seed=4).spec.key != base.key
    assert _build(tiny_dataset, None, judge[1], num_sequences=49).spec.key != base.key
    assert _build(tiny_dataset, None, judge[1], mask_prob=0.25).spec.key != base.key


def test_scores_count_every_kept_token_once(tiny_dataset, judge):
    from fast_electra_ds.config import ModelConfig
    from fast_electra_ds.method.models import build_discriminator

    info = _info(tiny_dataset)
    torch.manual_seed(0)
    disc = build_discriminator(ModelConfig(num_layers=1, hidden_size=32, embedding_size=16,
                                           num_heads=2, intermediate_size=64,
                                           max_position_embeddings=64),
                               vocab_size=info.vocab_size, pad_id=0).eval()
    one = _build(tiny_dataset, *judge)
    metrics = evaluation.score_discriminator(disc, one, device="cpu", batch_size=8)
    with torch.no_grad():
        logits = disc(input_ids=one.corrupted_ids, attention_mask=one.batch.attention_mask,
                      token_type_ids=one.batch.token_type_ids).logits
    loss, counts = rtd_loss(logits, one.rtd_labels, one.batch.attention_mask)
    real = one.batch.attention_mask.bool()
    assert metrics["rtd_loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert metrics["rtd_accuracy_replaced"] == pytest.approx(
        (counts["rtd_replaced_correct"] / counts["rtd_replaced_total"]).item())
    assert metrics["auc"] == pytest.approx(binary_auc(logits[real], one.rtd_labels[real]),
                                           abs=1e-9)
    maskable = real & ~torch.isin(one.batch.input_ids, torch.tensor(info.special_ids))
    assert maskable.sum() < real.sum()  # [CLS] / [SEP] left out
    assert metrics["auc_maskable"] == pytest.approx(
        binary_auc(logits[maskable], one.rtd_labels[maskable]), abs=1e-9)
    # selected positions only: the used slots (NaN when the judge replaced every one of them)
    selected = torch.zeros_like(real).scatter_(1, one.batch.positions, one.batch.weights > 0)
    assert metrics["auc_selected"] == pytest.approx(
        binary_auc(logits[selected], one.rtd_labels[selected]), abs=1e-9, nan_ok=True)

    # a shard padded with a repeated row counts its kept rows only
    last = _build(tiny_dataset, *judge, rank=2, world_size=3)
    assert not last.keep.all()
    shard = evaluation.score_discriminator(disc, last, device="cpu", batch_size=8)
    kept_tokens = last.batch.attention_mask[last.keep].sum().item()
    replaced = (last.rtd_labels * last.batch.attention_mask)[last.keep].sum().item()
    assert shard["rtd_replaced_share"] == pytest.approx(replaced / kept_tokens)


def _cfg(run_dir: Path, dataset: Path, *overrides: str):
    cfg = load_config("tiny", [f"run_dir={run_dir}", f"data.paths={dataset}", "device=cpu",
                               "train.global_batch_size=16", "train.micro_batch_size=16",
                               "train.steps=30", "eval.every=15", "eval.num_sequences=64",
                               "logging.log_every=5", *overrides])
    validate_config(cfg)
    return cfg


def _evals(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "eval"]


def test_both_modes_are_scored_on_one_set_and_evaluate_agrees(tmp_path, tiny_dataset,
                                                              tiny_generator, capsys):
    fast, joint = tmp_path / "fast", tmp_path / "joint"
    fast_result = loop.pretrain(_cfg(fast, tiny_dataset, f"generator.path={tiny_generator}"))
    loop.pretrain(_cfg(joint, tiny_dataset, "mode=electra", f"eval.judge={tiny_generator}"))

    fast_set = json.loads((fast / "eval_set.json").read_text())
    joint_set = json.loads((joint / "eval_set.json").read_text())
    assert fast_set["key"] == joint_set["key"]  # auto = generator.path = the named judge
    assert fast_set["judge"] == str(tiny_generator.resolve())
    for run, mode in ((fast, "fast-electra"), (joint, "electra")):
        evals = _evals(run)
        assert [r["step"] for r in evals] == [15, 30]
        for key in ("auc", "auc_maskable", "rtd_accuracy_replaced", "rtd_accuracy_original"):
            assert 0.0 <= evals[-1][key] <= 1.0, key
        # over the selected positions alone, the AUC needs both classes: this weak judge (MLM
        # accuracy 0.09, entropy 7.5 of 7.6 nats) gives the original token 0.81 draws in
        # expectation over the set's 557 slots, so none at all has probability 0.44, and then
        # the AUC is NaN (it passed before only because the old draws happened to hit one)
        one_class = fast_set["judge_stats"]["judge_replace_rate"] in (0.0, 1.0)
        selected = evals[-1]["auc_selected"]
        assert math.isnan(selected) if one_class else 0.0 <= selected <= 1.0
        assert 0 < evals[0]["train_seconds"] < evals[1]["train_seconds"]
        cfg = load_config(str(run / "config.yaml"))
        # the FLOP axis, by hand: discriminator 3x forward; generator 1x (frozen) or 3x (joint)
        gen = (flops.Encoder.from_hf_config(fast_result.frozen_generator.hf_model.config)
               if mode == "fast-electra" else flops.Encoder.generator(cfg.generator,
                                                                        cfg.model.embedding_size))
        seq_len, vocab = cfg.data.seq_len, _info(tiny_dataset).vocab_size
        disc = flops.discriminator_flops(flops.Encoder.discriminator(cfg.model), seq_len)
        aux = flops.generator_flops(gen, seq_len, num_predictions(seq_len, cfg.masking.mask_prob),
                                    vocab)
        per_step = cfg.train.global_batch_size * (3 * disc + (1 if mode == "fast-electra" else 3)
                                                  * aux)
        assert [r["train_flops"] for r in evals] == [15 * per_step, 30 * per_step]
    assert "mlm_accuracy" in _evals(joint)[-1]  # electra's own generator, on the same masks

    # compare: one table under the judge, and the learning curves
    capsys.readouterr()
    assert main(["compare", str(fast), str(joint), "--plot", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Held-out: judge {tiny_generator.resolve()} at T = 1")
    assert "do not compare" not in out and (tmp_path / "c.png").stat().st_size > 10_000

    # evaluate on the finished runs: the same set, so the same numbers as their last evaluation
    assert main(["evaluate", "--judge", str(tiny_generator), "--data", str(tiny_dataset),
                 "--num-sequences", "64", "--batch-size", "16", str(fast), str(joint),
                 "--output", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Held-out: judge {tiny_generator.resolve()} at T = 1")
    assert f"eval set {fast_set['key']}" in out
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    assert [(r["name"], r["step"], r["same_set"]) for r in rows] == [("fast", 30, "yes"),
                                                                     ("joint", 30, "yes")]
    for row, run in zip(rows, (fast, joint)):
        last = _evals(run)[-1]
        for key in ("auc", "auc_maskable", "auc_selected", "rtd_accuracy",
                    "rtd_accuracy_replaced"):
            # (auc_selected is NaN in both where the judge never drew an original token)
            assert row[key] == pytest.approx(last[key], abs=1e-6, nan_ok=True), key
        assert row["rtd_loss"] == pytest.approx(last["rtd_loss"], rel=1e-5)

    # ... and on an export of one of them, the same again
    assert main(["export", "--run", str(fast), "--output", str(tmp_path / "x")]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--judge", str(tiny_generator), "--data", str(tiny_dataset),
                 "--num-sequences", "64", "--batch-size", "16", str(tmp_path / "x"),
                 "--output", str(tmp_path / "x.json")]) == 0
    (row,) = json.loads((tmp_path / "x.json").read_text())["rows"]
    assert row["auc"] == pytest.approx(rows[0]["auc"], abs=1e-6) and row["step"] == 30


def test_electra_without_a_judge_is_judged_by_itself_and_compared_with_nothing(
        tmp_path, tiny_dataset, tiny_generator, capsys):
    selfish = tmp_path / "self"
    loop.pretrain(_cfg(selfish, tiny_dataset, "mode=electra", "generator.path=",
                        "train.steps=15"))
    assert "judged by its own generator (self)" in capsys.readouterr().out
    record = json.loads((selfish / "eval_set.json").read_text())
    assert record["judge"] == "self" and "judge_mlm_accuracy" not in record["judge_stats"]
    assert 0.0 <= _evals(selfish)[-1]["auc"] <= 1.0

    fast = tmp_path / "fast"
    loop.pretrain(_cfg(fast, tiny_dataset, f"generator.path={tiny_generator}",
                        "train.steps=15"))
    capsys.readouterr()
    assert main(["compare", str(fast), str(selfish)]) == 0
    out = capsys.readouterr().out
    assert "do not compare" in out and "Held-out, judge self" in out


def test_training_seconds_continue_across_a_resume(tmp_path, tiny_dataset, tiny_generator):
    run = tmp_path / "run"
    common = (f"generator.path={tiny_generator}", "eval.every=10")
    loop.pretrain(_cfg(run, tiny_dataset, *common, "train.steps=10"))
    first = _evals(run)[-1]
    loop.pretrain(_cfg(run, tiny_dataset, *common, "train.steps=20"))
    second = _evals(run)[-1]
    assert second["step"] == 20 and second["train_flops"] == 2 * first["train_flops"]
    assert second["train_seconds"] > first["train_seconds"]


def test_bad_judges_and_targets_are_refused_with_the_fix(tmp_path, tiny_dataset, tiny_generator,
                                                         capsys):
    from transformers import ElectraConfig, ElectraForMaskedLM

    # a judge with another vocabulary: refused before any scoring
    other = tmp_path / "other-vocab"
    ElectraForMaskedLM(ElectraConfig(vocab_size=50, embedding_size=8, hidden_size=8,
                                     num_hidden_layers=1, num_attention_heads=1,
                                     intermediate_size=8)).save_pretrained(other)
    assert main(["evaluate", "--judge", str(other), "--data", str(tiny_dataset),
                 str(tiny_generator)]) == 2
    err = capsys.readouterr().err
    assert "not an ELECTRA discriminator" in err  # targets are checked first, before the judge
    mlm_run = tiny_generator.parent  # a mode=mlm run directory: no discriminator
    assert main(["evaluate", "--judge", str(tiny_generator), "--data", str(tiny_dataset),
                 str(mlm_run)]) == 2
    assert "trained no discriminator" in capsys.readouterr().err

    fast = tmp_path / "fast"
    loop.pretrain(_cfg(fast, tiny_dataset, f"generator.path={tiny_generator}", "eval.every=0",
                        "train.steps=5"))
    capsys.readouterr()
    assert main(["evaluate", "--judge", str(other), "--data", str(tiny_dataset),
                 str(fast)]) == 2
    err = capsys.readouterr().err
    assert "eval.judge:" in err and "vocabulary of 50 tokens" in err

    # a judge folder that does not exist: a config error, before any compute
    with pytest.raises(Exception, match="eval.judge: .* is not a directory"):
        _cfg(tmp_path / "x", tiny_dataset, f"generator.path={tiny_generator}",
             f"eval.judge={tmp_path / 'missing'}")
    assert not (tmp_path / "x").exists()


def test_the_judge_is_shown_relative_to_the_working_directory(tmp_path, monkeypatch):
    """A README sample or a log shows `.demo/mlm/generator`, not the absolute path of the
    machine it was made on; outside the working directory, and for hub ids, the name as given."""
    from fast_electra_ds.downstream.compare import describe_set
    from fast_electra_ds.paths import shown

    monkeypatch.chdir(tmp_path)
    inside = tmp_path / ".demo" / "mlm" / "generator"
    spec = evaluation.EvalSpec(judge=str(inside), judge_fingerprint="f", data=("d",), weights=(),
                               seed=0, num_sequences=8, seq_len=16, mask_prob=0.15,
                               masking_style="electra")
    assert spec.describe().startswith(f"judge {Path('.demo', 'mlm', 'generator')} at T = 1")
    record = {"judge": str(inside), "judge_temperature": 1.0, "num_sequences": 8, "seed": 0,
              "key": spec.key}
    assert describe_set(record).startswith(f"judge {Path('.demo', 'mlm', 'generator')} at T")
    assert shown("/elsewhere/judge") == "/elsewhere/judge"
    assert shown("google/electra-small-generator") == "google/electra-small-generator"
