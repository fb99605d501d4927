"""The frozen generator in fp16, what DeepSpeed-Inference runs on a GPU, against fp32 at the same
weights, on CPU (torch runs fp16 there; DeepSpeed-Inference refuses fp16 on its CPU accelerator,
tested at the end, so the wrapper is exercised in bf16).

The model: a tiny ELECTRA masked LM whose word embeddings (tied to the decoder) are scaled so that
its distributions are peaked like a trained generator's (logits up to about 10 in magnitude,
entropy 2.6 nats at T = 1 where log V is 4.6), with a random bias. Two fp16 paths are compared
with fp32:
  eager  the masked LM in fp16 down to fp16 logits (kernels=off, or Triton unavailable)
  fused  the masked LM in fp16 down to the decoder's input; logits in fp32 from the fp16 h, W, b
         (sample_reference: the fused kernel's arithmetic, which tests/test_kernels_sampler.py
         holds it to)

Measured here (AMD EPYC, torch 2.13; 8 x 24 tokens, 23 used masked slots, vocabulary 100), the
largest difference from fp32 over T in {1, 1.001, 2}:
  logits (max |logit| 9.6)     eager 0.015, fused 0.015 (the fp16 encoder's error dominates)
  lse, entropy (nats)          eager 0.0025 / 0.0034, fused 0.0020 / 0.0027
  draws                        equal wherever fp32's draw margin exceeds 0.1 (21 of 23 slots)
The tolerances below are about 3x those.
"""

from __future__ import annotations

import pytest
import torch
from helpers.kernel_testing import draw_margin
from helpers.tiny import SPECIAL, VOCAB, electra_mlm, make_batch

from fast_electra_ds.errors import UserError
from fast_electra_ds.method import frozen_generator, mlm_head, sampling
from fast_electra_kernels import counter_rng
from fast_electra_kernels.sampler import gumbel_max, sample_reference

SEED = 3
LOGIT_TOL = 0.05
NATS_TOL = 0.01
MARGIN = 0.1  # a draw decided by more than this must not change


def peaked_mlm(seed: int = 0) -> torch.nn.Module:
    model = electra_mlm(seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.electra.embeddings.word_embeddings.weight.mul_(30)
        model.generator_lm_head.bias.copy_(torch.randn(VOCAB, generator=g))
    return model


@pytest.fixture(scope="module")
def models():
    fp32 = peaked_mlm()
    fp16 = peaked_mlm()
    fp16.half()
    return fp32, fp16


@pytest.fixture(scope="module")
def batch():
    return make_batch(batch=8, seed=2)


def _outputs(model, batch, *, fused: bool):
    """Logits [N, V] fp32 of the used slots, and the (h, W, b) the fused path would take."""
    args = (batch.masked_ids, batch.attention_mask, batch.positions, batch.token_type_ids)
    with torch.no_grad():
        h = mlm_head.masked_hidden(model, *args)  # [B, K, E]
        W, b = mlm_head.output_projection(model)
        if fused:  # fp32 arithmetic on the model's values, as the kernel does
            logits = h.float() @ W.float().T + b.float()
        else:
            logits = mlm_head.masked_logits(model, *args).float()  # rounded to the model's dtype
    used = batch.weights > 0
    return logits[used], h[used], W, b  # [N, V], [N, E]


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
@pytest.mark.parametrize("temperature", [1.0, 1.001, 2.0])
def test_fp16_matches_fp32(models, batch, fused, temperature):
    fp32, fp16 = models
    logits32, h32, W32, b32 = _outputs(fp32, batch, fused=fused)
    logits16, h16, W16, b16 = _outputs(fp16, batch, fused=fused)
    assert logits32.abs().max() > 8  # peaked, as a trained generator's
    assert (logits16 - logits32).abs().max() < LOGIT_TOL

    rows = torch.arange(len(logits32)) + 1000
    keys = counter_rng.row_keys(SEED, rows)
    z32, z16 = logits32 / temperature, logits16 / temperature
    tokens32, lse32, expected32 = gumbel_max(z32, keys)
    if fused:
        tokens16, lse16, expected16, _ = sample_reference(h16, W16, b16, temperature, SEED, rows)
    else:
        tokens16, lse16, expected16 = gumbel_max(z16, keys)
    entropy32, entropy16 = lse32 - expected32, lse16 - expected16
    assert 2.0 < entropy32.mean() < 4.0
    assert (lse16 - lse32).abs().max() < NATS_TOL
    assert (entropy16 - entropy32).abs().max() < NATS_TOL

    decided = draw_margin(z32, SEED, rows) > MARGIN
    assert decided.float().mean() > 0.8
    assert torch.equal(tokens16[decided], tokens32[decided])


def test_overflowing_fp16_logits_draw_as_in_fp32(batch):
    """Logits past fp16's range (a token pushed to 6e4 by its bias, then divided by T = 0.5) and
    decoder outputs that overflow to +-inf in fp16: the draws are fp32's, entropies finite."""
    fp32 = peaked_mlm()
    with torch.no_grad():
        fp32.generator_lm_head.bias[7] = 6.0e4  # fits fp16 (65504); / T = 0.5 does not
    fp16 = peaked_mlm()
    fp16.load_state_dict(fp32.state_dict())
    fp16.half()
    for model in (fp32, fp16):
        with torch.no_grad():
            corrupted, _, metrics = sampling.corrupt(model, batch, temperature=0.5, seed=SEED)
        sampled = corrupted.gather(1, batch.positions)[batch.weights > 0]
        assert (sampled == 7).all()
        assert torch.isfinite(metrics["gen_entropy_sum"]) and metrics["gen_entropy_sum"] < 1e-3

    # what an fp16 decoder gives when h . w + b exceeds 65504: +inf in one column, -inf in a whole
    # group of 64 (and in part of another); fp32 holds the values themselves
    z = (torch.randn(6, 300, generator=torch.Generator().manual_seed(0)) * 3).half().float()
    z32 = z.clone()
    z32[:, 5], z32[2:4, 64:128], z32[:, 200:210] = 7e4, -7e4, -7e4
    z16 = z32.half().float()
    assert torch.isinf(z16).sum() == 6 + 2 * 64 + 6 * 10
    keys = counter_rng.row_keys(SEED, torch.arange(6))
    for zz in (z16, z32):
        tokens, lse, expected = gumbel_max(zz, keys)
        assert (tokens == 5).all()
        assert torch.isfinite(lse).all() and torch.isfinite(expected).all()
        assert (lse - expected).abs().max() < 1e-3  # the entropy of a certain draw
    z16[:, 5] = z32[:, 5] = 0.0  # no certain token: the draw avoids the -inf columns
    tokens16, lse16, _ = gumbel_max(z16, keys)
    tokens32, lse32, _ = gumbel_max(z32, keys)
    assert torch.equal(tokens16, tokens32)
    assert not ((tokens16 >= 200) & (tokens16 < 210)).any()
    assert not ((tokens16[2:4] >= 64) & (tokens16[2:4] < 128)).any()
    torch.testing.assert_close(lse16, lse32)


def test_fp16_weights_beyond_range_are_refused(tmp_path):
    model = peaked_mlm()
    with torch.no_grad():
        model.generator_lm_head.bias[9] = -1.0e5  # ruling a token out: -inf in fp16
        model.generator_lm_head.bias[10] = float("-inf")  # already -inf: no overflow
    model.save_pretrained(tmp_path)
    load = dict(vocab_size=VOCAB, special_ids=SPECIAL, device="cpu", logger=lambda m: None)
    with pytest.raises(UserError, match=r"generator_lm_head.bias \(\|x\| up to 1e\+05\) exceed "
                                        r"float16's range.*inference_dtype=bf16"):
        frozen_generator.FrozenGenerator.load(str(tmp_path), dtype="fp16", **load)
    for dtype in ("bf16", "fp32"):
        frozen_generator.FrozenGenerator.load(str(tmp_path), dtype=dtype, **load)


def test_deepspeed_inference_on_cpu_wraps_bf16_and_refuses_fp16():
    """The DeepSpeed-Inference path (`_init_inference`, no injection: none exists for ELECTRA) on
    the CPU accelerator: bf16 gives the plain bf16 module's logits; fp16 is refused by DeepSpeed
    itself (0.19.8), so fp16 can only be compared without the wrapper (above)."""
    import deepspeed

    batch = make_batch(batch=2)
    args = (batch.masked_ids, batch.attention_mask, batch.positions, batch.token_type_ids)
    engine, runtime = frozen_generator._init_inference(
        peaked_mlm(), peaked_mlm, device=torch.device("cpu"), dtype=torch.bfloat16,
        kernel_inject=True, special_ids=SPECIAL, logger=lambda m: None)
    assert runtime == "deepspeed-inference cpu bfloat16"
    with torch.no_grad():
        wrapped = mlm_head.masked_logits(engine, *args)
        plain = mlm_head.masked_logits(peaked_mlm().to(torch.bfloat16), *args)
    assert wrapped.dtype == torch.bfloat16 and torch.equal(wrapped, plain)
    with pytest.raises(ValueError, match="float16 is not supported by cpu accelerator"):
        deepspeed.init_inference(peaked_mlm(), dtype=torch.float16,
                                 replace_with_kernel_inject=False)
