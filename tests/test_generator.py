"""The generator's side (method/mlm_head.py, sampling.py, frozen_generator.py): masked-only
logits, reproducible temperature sampling, corruption, and the frozen generator's loading checks."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from helpers.tiny import SEQ_LEN, SPECIAL, VOCAB, electra_mlm, make_batch
from torch.nn import functional as F
from transformers import (AlbertConfig, AlbertForMaskedLM, BertConfig, BertForMaskedLM,
                          BertTokenizerFast, DistilBertConfig, DistilBertForMaskedLM,
                          ElectraForPreTraining, GPT2Config, RobertaConfig, RobertaForMaskedLM)

from fast_electra_ds.errors import UserError
from fast_electra_ds.method import frozen_generator, mlm_head, sampling
from fast_electra_kernels import sampler

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCAB - 5)]


def tiny_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64)
    return {
        "electra": electra_mlm(),
        "bert": BertForMaskedLM(BertConfig(**common, max_position_embeddings=64)).eval(),
        "roberta": RobertaForMaskedLM(RobertaConfig(**common, max_position_embeddings=66,
                                                    pad_token_id=1)).eval(),
        "distilbert": DistilBertForMaskedLM(DistilBertConfig(
            vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
            max_position_embeddings=64)).eval(),
    }


def padded_inputs(batch: int = 3, length: int = SEQ_LEN, k: int = 5):
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, VOCAB, (batch, length), generator=g)  # [B, L]
    attention_mask = torch.ones(batch, length, dtype=torch.int64)
    attention_mask[-1, length // 2:] = 0  # one padded row
    input_ids[attention_mask == 0] = 0
    positions = torch.stack([torch.randperm(length // 2, generator=g)[:k].sort().values
                             for _ in range(batch)])  # [B, K], inside the unpadded part
    return input_ids, attention_mask, positions


# --------------------------------------------------------------------------------------------
# masked_logits


@pytest.mark.parametrize("arch", ["electra", "bert", "roberta", "distilbert"])
def test_masked_logits_equal_full_logits_then_gather(arch):
    model = tiny_models()[arch]
    input_ids, attention_mask, positions = padded_inputs()
    if arch == "roberta":
        input_ids[attention_mask == 0] = 1  # RoBERTa's pad id
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [B, L, V]
        expected = torch.gather(full, 1, positions[..., None].expand(-1, -1, VOCAB))
        got = mlm_head.masked_logits(model, input_ids, attention_mask, positions)
    assert got.shape == (3, 5, VOCAB)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    # the two halves a fused kernel will take reproduce the same logits
    weight, bias = mlm_head.output_projection(model)
    with torch.no_grad():
        hidden = mlm_head.masked_hidden(model, input_ids, attention_mask, positions)  # [B, K, E]
    torch.testing.assert_close(F.linear(hidden, weight, bias), expected, atol=1e-5, rtol=0)


def test_masked_logits_falls_back_for_other_architectures(caplog):
    torch.manual_seed(0)
    model = AlbertForMaskedLM(AlbertConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=32,
                                           num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=64)).eval()
    assert mlm_head.mlm_head(model) is None
    input_ids, attention_mask, positions = padded_inputs()
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger=mlm_head.__name__):
        got = mlm_head.masked_logits(model, input_ids, attention_mask, positions)
        mlm_head.masked_logits(model, input_ids, attention_mask, positions)
        full = model(input_ids=input_ids, attention_mask=attention_mask).logits
    torch.testing.assert_close(got, torch.gather(full, 1, positions[..., None].expand(-1, -1,
                                                                                      VOCAB)))
    warned = [r for r in caplog.records if "AlbertForMaskedLM" in r.getMessage()]
    assert len(warned) <= 1  # once per process (an earlier test may already have warned)


# --------------------------------------------------------------------------------------------
# sample_replacements


def test_sampling_is_reproducible_and_layout_invariant(monkeypatch):
    logits = torch.randn(6, 7, VOCAB)
    sample_ids = torch.tensor([11, 5, 42, 7, 0, 3])
    a, _ = sampling.sample_replacements(logits, temperature=1.5, seed=9, sample_ids=sample_ids)
    b, _ = sampling.sample_replacements(logits, temperature=1.5, seed=9, sample_ids=sample_ids)
    assert a.dtype == torch.int64 and a.shape == (6, 7)
    assert torch.equal(a, b)
    other, _ = sampling.sample_replacements(logits, temperature=1.5, seed=10, sample_ids=sample_ids)
    assert not torch.equal(a, other)
    # split across "ranks" / micro-batches, or in another order: the same draw per sample
    halves = torch.cat([sampling.sample_replacements(logits[i:i + 3], temperature=1.5, seed=9,
                                                sample_ids=sample_ids[i:i + 3])[0]
                        for i in (0, 3)])
    assert torch.equal(a, halves)
    perm = torch.tensor([5, 2, 0, 4, 1, 3])
    shuffled, _ = sampling.sample_replacements(logits[perm], temperature=1.5, seed=9,
                                          sample_ids=sample_ids[perm])
    assert torch.equal(a[perm], shuffled)
    # chunked evaluation (large B*K*V) gives the same draws
    monkeypatch.setattr(sampling, "_SAMPLE_CHUNK_ELEMENTS", 3 * VOCAB)
    chunked, _ = sampling.sample_replacements(logits, temperature=1.5, seed=9,
                                              sample_ids=sample_ids)
    assert torch.equal(a, chunked)


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, float | None]:
    """(statistic, p-value if scipy is installed) of observed counts against probabilities."""
    expected = probs.double() * counts.sum()
    stat = float(((counts.double() - expected) ** 2 / expected).sum())
    try:
        from scipy.stats import chi2
    except ImportError:
        return stat, None
    return stat, float(chi2.sf(stat, df=len(counts) - 1))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_samples_follow_softmax_at_temperature(temperature):
    row = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2])  # V = 8
    b, k = 2500, 8  # 20000 draws, each from its own (sample, slot) noise row
    logits = row.expand(b, k, -1)
    sampled, _ = sampling.sample_replacements(logits, temperature=temperature, seed=1234,
                                         sample_ids=torch.arange(b))
    counts = torch.bincount(sampled.flatten(), minlength=8)
    stat, p_value = _chi_square(counts, torch.softmax(row / temperature, -1))
    # chi-square with 7 degrees of freedom: the 0.1% critical value is 24.32
    assert stat < 24.32, (stat, counts)
    if p_value is not None:
        assert p_value > 1e-3
    # and the distribution is not the one of another temperature
    other = torch.softmax(row / (3.0 - temperature), -1)
    assert _chi_square(counts, other)[0] > 24.32


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_two_level_draws_are_exact_across_groups(temperature):
    """The draw picks a group of sampler.GROUP columns, then a column in it: the product must be
    softmax(logits / T) itself. 30 likely columns spread over all five groups of V = 300 (the last
    partial), the others 80 nats down (never drawn); chi-square over the 30."""
    g = torch.Generator().manual_seed(5)
    v = 300
    fixed = [0, v - 1, 4 * sampler.GROUP]  # the first and last columns, the last group's first
    likely = torch.tensor(fixed + [c for c in torch.randperm(v, generator=g).tolist()
                                   if c not in fixed][:27])
    row = torch.full((v,), -80.0)
    row[likely] = torch.randn(30, generator=g) * 1.5
    b, k = 3000, 8
    counts = torch.zeros(v, dtype=torch.int64)
    for seed in range(4):  # 96,000 draws
        sampled, stats = sampling.sample_replacements(
            row.expand(b, k, -1), temperature=temperature, seed=seed, sample_ids=torch.arange(b))
        counts += torch.bincount(sampled.flatten(), minlength=v)
    p = torch.softmax(row.double() / temperature, -1)
    groups = (likely // sampler.GROUP).unique()
    assert len(groups) == 5
    rest = torch.ones(v, dtype=torch.bool)
    rest[likely] = False
    observed = torch.cat([counts[likely], counts[rest].sum().reshape(1)])
    expected = torch.cat([p[likely], p[rest].sum().reshape(1)])
    # chi-square over the 30 likely columns, 29 degrees of freedom: the 0.1% critical value is
    # 58.30 (over 20 seeds of 24,000 draws the statistic averaged 25.7 at T = 1, 29.0 at 2.5)
    stat, _ = _chi_square(observed[:-1], expected[:-1] / expected[:-1].sum())
    assert observed[-1] == 0 and stat < 58.30, (stat, observed)
    # power: the same draws are far from the distribution at another temperature
    other = torch.softmax(row[likely].double() / (temperature * 1.3), -1)
    assert _chi_square(observed[:-1], other)[0] > 58.30
    # the entropy comes from the group sums: the exact entropy of softmax(logits / T)
    assert float(stats["gen_entropy_sum"]) / (b * k) == pytest.approx(
        float(-(p * p.clamp_min(1e-300).log()).sum()), rel=1e-5)


def test_high_temperature_is_near_uniform_and_t1_peaked_is_argmax():
    row = torch.randn(VOCAB) * 3
    sampled, stats = sampling.sample_replacements(row.expand(400, 10, -1), temperature=1e4, seed=3,
                                             sample_ids=torch.arange(400))
    freq = torch.bincount(sampled.flatten(), minlength=VOCAB).double() / sampled.numel()
    assert (freq - 1 / VOCAB).abs().max() < 0.01  # 4000 draws: sd of each share is ~0.0016
    assert stats["gen_entropy_sum"] / 4000 == pytest.approx(math.log(VOCAB), rel=1e-4)

    peaked = torch.zeros(VOCAB)
    peaked[17] = 8.0  # p(argmax) = e^8 / (e^8 + 99), about 0.967
    sampled, _ = sampling.sample_replacements(peaked.expand(400, 10, -1), temperature=1.0, seed=3,
                                         sample_ids=torch.arange(400))
    assert (sampled == 17).float().mean() > 0.95


def test_entropy_stat_averages_used_slots_only():
    logits = torch.randn(3, 4, VOCAB)
    weights = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    _, stats = sampling.sample_replacements(logits, temperature=2.0, seed=0,
                                       sample_ids=torch.arange(3), weights=weights)
    p = torch.softmax(logits / 2.0, -1)
    entropy = -(p * p.log()).sum(-1)  # [B, K]
    assert float(stats["gen_entropy_sum"]) == pytest.approx(float((entropy * weights).sum()),
                                                            rel=1e-5)


# --------------------------------------------------------------------------------------------
# corruption


def test_replace_at_positions_uses_originals_and_labels_equal_samples_as_original():
    input_ids = torch.tensor([[2, 10, 11, 12, 13, 3], [2, 20, 21, 3, 0, 0]])  # [B, L]
    positions = torch.tensor([[1, 3, 4], [2, 0, 0]])  # [B, K]; row 1 has one used slot
    weights = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    sampled = torch.tensor([[50, 12, 60], [77, 88, 99]])  # slot (0, 1) re-draws the original 12
    corrupted, labels = sampling.replace_at_positions(input_ids, positions, weights, sampled)
    assert corrupted.tolist() == [[2, 50, 11, 12, 60, 3], [2, 20, 77, 3, 0, 0]]
    assert labels.dtype == torch.float32
    assert labels.tolist() == [[0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 0, 0]]
    assert input_ids.tolist()[0] == [2, 10, 11, 12, 13, 3]  # not modified in place


def test_corrupt_from_logits_every_selected_position_gets_a_sample():
    batch = make_batch(two_segments=False)
    # logits that put all mass on token 99, so every used slot is replaced by 99
    logits = torch.full((*batch.positions.shape, VOCAB), -30.0)
    logits[..., 99] = 30.0
    corrupted, labels, metrics = sampling.corrupt_from_logits(
        logits, input_ids=batch.input_ids, positions=batch.positions, weights=batch.weights,
        sample_ids=batch.sample_ids, temperature=1.0, seed=0)
    used = batch.weights > 0
    chosen = torch.zeros_like(batch.input_ids, dtype=torch.bool)
    chosen.scatter_(1, torch.where(used, batch.positions, 0), used)
    # kept-as-original positions of masked_ids are replaced too; nothing else changes
    assert (corrupted[chosen] == 99).all()
    assert torch.equal(corrupted[~chosen], batch.input_ids[~chosen])
    assert torch.equal(labels.bool(), chosen & (batch.input_ids != 99))
    assert float(metrics["gen_num_replaced"]) == float(labels.sum())


# --------------------------------------------------------------------------------------------
# FrozenGenerator


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("electra_mlm")
    electra_mlm().save_pretrained(path)
    return path


def _load(path, **kw):
    args = dict(vocab_size=VOCAB, special_ids=SPECIAL, device="cpu", dtype="auto",
                kernel_inject=True, logger=lambda msg: None)
    args.update(kw)
    return frozen_generator.FrozenGenerator.load(str(path), **args)


def _write_tokenizer(path, tokens):
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(tokens) + "\n")
    BertTokenizerFast(vocab=str(vocab_file)).save_pretrained(path)


def test_frozen_generator_stays_frozen(mlm_dir):
    frozen = _load(mlm_dir)
    model = frozen.hf_model
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = make_batch(two_segments=False)
    for step in range(3):
        corrupted, labels, metrics = frozen.corrupt(batch, temperature=2.0 - step * 0.5, seed=step)
        assert corrupted.shape == batch.input_ids.shape and corrupted.dtype == torch.int64
        assert labels.shape == batch.input_ids.shape and labels.dtype == torch.float32
        assert set(metrics) == {"num_slots", "mlm_correct", "gen_entropy_sum", "gen_num_replaced"}
        assert float(metrics["num_slots"]) == float((batch.weights > 0).sum())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # same seed, same corruption
    again = frozen.corrupt(batch, temperature=1.0, seed=2)
    assert torch.equal(again[0], corrupted)


def test_frozen_generator_positions_and_dtypes(mlm_dir, tmp_path):
    frozen = _load(mlm_dir)
    assert frozen.max_positions == 64
    frozen.check_seq_len(64)
    with pytest.raises(UserError, match="data.seq_len=65"):
        frozen.check_seq_len(65)
    bf16 = _load(mlm_dir, dtype="bf16")
    assert next(bf16.hf_model.parameters()).dtype == torch.bfloat16
    corrupted, _, _ = bf16.corrupt(make_batch(two_segments=False), temperature=1.0, seed=0)
    assert corrupted.shape == (4, SEQ_LEN)
    fp16 = _load(mlm_dir, dtype="fp16")  # torch runs fp16 on CPU: tests/test_fp16_generator.py
    assert fp16.runtime == "torch cpu float16"
    # RoBERTa's position table starts after the padding index
    tiny_models()["roberta"].save_pretrained(tmp_path)
    assert _load(tmp_path, special_ids={}).max_positions == 64


def test_frozen_generator_accepts_matching_tokenizer(mlm_dir, tmp_path):
    for f in mlm_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    _write_tokenizer(tmp_path, TOKENS)
    frozen = _load(tmp_path, vocab={t: i for i, t in enumerate(TOKENS)})
    assert frozen.vocab_size == VOCAB
    _load(tmp_path, special_ids={**SPECIAL, "unk": None})  # a token the data lacks is no clash


def test_frozen_generator_rejects_vocab_size_mismatch(mlm_dir):
    with pytest.raises(UserError, match="vocabulary of 100 tokens but the data has 120"):
        _load(mlm_dir, vocab_size=120)


def test_frozen_generator_rejects_other_special_ids(mlm_dir, tmp_path):
    for f in mlm_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    swapped = list(TOKENS)
    swapped[4], swapped[5] = swapped[5], swapped[4]  # [MASK] at id 5 instead of 4
    _write_tokenizer(tmp_path, swapped)
    with pytest.raises(UserError, match=r"\[MASK\] is id 5 there, 4 in the data"):
        _load(tmp_path)
    with pytest.raises(UserError, match="2 tokens have different ids"):
        _load(tmp_path, special_ids={}, vocab={t: i for i, t in enumerate(TOKENS)})


def test_frozen_generator_rejects_non_mlm_folders(tmp_path):
    torch.manual_seed(0)
    disc_dir = tmp_path / "discriminator"
    ElectraForPreTraining(electra_mlm().config).save_pretrained(disc_dir)
    with pytest.raises(UserError, match="holds ElectraForPreTraining, not a trained masked LM"):
        _load(disc_dir)

    config_only = tmp_path / "config_only"
    ElectraForPreTraining(electra_mlm().config).config.save_pretrained(config_only)
    with pytest.raises(UserError, match="cannot load a masked LM"):
        _load(config_only)

    gpt2 = tmp_path / "gpt2"
    GPT2Config(vocab_size=VOCAB, n_layer=1, n_embd=32, n_head=2).save_pretrained(gpt2)
    with pytest.raises(UserError, match="no masked-LM head"):
        _load(gpt2)

    with pytest.raises(UserError, match="does not exist"):
        _load(tmp_path / "missing")


# --------------------------------------------------------------------------------------------
# DeepSpeed-Inference paths


def test_injection_policy_detection():
    models = tiny_models()
    assert {arch: frozen_generator._has_injection_policy(m) for arch, m in models.items()} == \
        {"electra": False, "bert": True, "roberta": True, "distilbert": True}


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the failure path on CPU, where "
                    "DeepSpeed's injected kernels do not exist")
@pytest.mark.parametrize("arch", ["bert", "electra"])
def test_failed_kernel_injection_falls_back_to_a_fresh_plain_model(arch, tmp_path):
    model = tiny_models()[arch]
    model.save_pretrained(tmp_path)
    reloads, messages = [], []

    def reload():
        reloads.append(1)
        return frozen_generator._load_frozen(str(tmp_path))

    engine, runtime = frozen_generator._init_inference(
        frozen_generator._load_frozen(str(tmp_path)), reload, device=torch.device("cpu"),
        dtype=torch.float32, kernel_inject=True, special_ids=SPECIAL, logger=messages.append)
    assert runtime == "deepspeed-inference cpu float32"
    if arch == "bert":  # has a policy: injection is tried, fails on CPU, the model is re-created
        assert any("kernel injection failed" in m for m in messages) and len(reloads) == 1
    else:  # ELECTRA has no policy: injection is not even tried
        assert any("no kernel-injection policy" in m for m in messages) and not reloads
    input_ids, attention_mask, positions = padded_inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            mlm_head.masked_logits(engine, input_ids, attention_mask, positions),
            mlm_head.masked_logits(model, input_ids, attention_mask, positions))


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "electra"])
def test_frozen_generator_on_cuda_matches_cpu(arch, tmp_path):
    model = tiny_models()[arch]
    model.save_pretrained(tmp_path)
    messages: list[str] = []
    special = {} if arch == "roberta" else SPECIAL
    frozen = frozen_generator.FrozenGenerator.load(
        str(tmp_path), vocab_size=VOCAB, special_ids=special, device="cuda", dtype="fp16",
        kernel_inject=True, logger=messages.append)
    assert frozen.runtime.startswith("deepspeed-inference"), messages
    input_ids, attention_mask, positions = padded_inputs()
    if arch == "roberta":
        input_ids[attention_mask == 0] = 1
    with torch.no_grad():
        got = mlm_head.masked_logits(frozen.model, input_ids.cuda(), attention_mask.cuda(),
                                     positions.cuda()).float().cpu()
        expected = mlm_head.masked_logits(model, input_ids, attention_mask, positions)
    torch.testing.assert_close(torch.softmax(got, -1), torch.softmax(expected, -1), atol=2e-3,
                               rtol=0)
