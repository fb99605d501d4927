"""The fused Triton sampler against its plain-torch reference (fast_electra_kernels/sampler.py).

Without a GPU the kernels run on CPU tensors under TRITON_INTERPRET=1, on odd shapes (M, V, H not
multiples of the block sizes). On a GPU machine the same tests run the compiled kernels on CUDA,
and `pytest -m gpu` adds a realistic-size check.

Tolerances: lse and E_p[z] are fp32 reductions in both paths (bf16 / fp16 products are exact in
fp32), differing only in summation order and in the GPU's approximate exp: rtol = atol = 1e-5 for
every input dtype. Uniforms must be bit-identical; Gumbel noise within 1e-5 (log may differ in
the last bits). Draws must be identical on every row whose best and second-best perturbed logits
differ by more than GAP (a near-tie may be reordered by the summation order); likewise the argmax
of the logits on every row whose two largest logits differ by more than GAP.
"""

from __future__ import annotations

import pytest
import torch
from fast_electra_kernels import counter_rng, sampler

pytest.importorskip("triton")
from fast_electra_kernels import sampler_triton  # noqa: E402
from fast_electra_kernels._dispatch import use_triton_for  # noqa: E402
from fast_electra_kernels.sampler import SampleOutput, fused_sample, sample_reference  # noqa: E402
from helpers.kernel_testing import (  # noqa: E402, F401 (a test pytest collects here)
    KERNEL_DEVICE as DEVICE, draw_margin, kernel_test, test_kernels_in_interpreter_process)

RTOL = ATOL = 1e-5
GAP = 1e-3
M, V, H = 50, 300, 80  # blocks: 64 rows, 128 columns (2 groups), 32 / 64 along H


def make_inputs(dtype, *, m=M, v=V, h=H, bias=True, seed=0, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    hid = torch.randn(m, h, generator=g)
    W = torch.randn(v, h, generator=g) * 0.3
    b = torch.randn(v, generator=g) if bias else None
    rows = torch.randint(0, 2**62, (m,), generator=g)
    to = dict(device=device)
    return (hid.to(dtype=dtype, **to), W.to(dtype=dtype, **to),
            None if b is None else b.to(dtype=dtype, **to), rows.to(**to))


def separated(scores):
    """[M] bool: rows of scores [M, V] whose two largest entries differ by more than GAP."""
    top2 = scores.topk(2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]) > GAP


def separated_rows(h, W, b, temperature, seed, rows):
    """[M] bool: rows whose draw (reference) is decided by more than GAP (draw_margin)."""
    z = (h.float() @ W.float().T + (0 if b is None else b.float())) / temperature
    return draw_margin(z, seed, rows) > GAP


def assert_matches_reference(out, h, W, b, temperature, seed, rows):
    ref = sample_reference(h, W, b, temperature, seed, rows)
    ok = separated_rows(h, W, b, temperature, seed, rows)
    assert ok.float().mean() > 0.9  # the comparison below covers most rows
    assert torch.equal(out.tokens[ok], ref.tokens[ok])
    clear = separated(h.float() @ W.float().T + (0 if b is None else b.float()))
    assert clear.float().mean() > 0.9
    assert out.argmax.dtype == torch.int64
    assert torch.equal(out.argmax[clear], ref.argmax[clear])
    torch.testing.assert_close(out.lse, ref.lse, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(out.expected_logit, ref.expected_logit, rtol=RTOL, atol=ATOL)


@kernel_test
@pytest.mark.parametrize("seed", [0, 1234, 2**32 + 5, 2**63 - 1, -7])
def test_noise_is_the_reference_noise(seed):
    rows = torch.tensor([0, 1, 2**31, 2**32 - 1, 2**32, 2**40 + 7, 2**62 + 12345, 987654321],
                        device=DEVICE)
    u, g = sampler_triton.noise(seed, rows, V)
    cols = torch.arange(V, device=DEVICE)
    assert torch.equal(u, counter_rng.uniform_from_keys(counter_rng.row_keys(seed, rows), cols))
    torch.testing.assert_close(g, counter_rng.gumbel_noise(seed, rows, V), rtol=1e-5, atol=1e-5)


@kernel_test
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_matches_reference(dtype, bias, temperature):
    h, W, b, rows = make_inputs(dtype, bias=bias)
    out = fused_sample(h, W, b, temperature=temperature, seed=99, rows=rows, use_triton=True)
    assert out.tokens.dtype == torch.int64 and out.tokens.shape == (M,)
    assert_matches_reference(out, h, W, b, temperature, 99, rows)
    z = (h.float() @ W.float().T + (0 if b is None else b.float())) / temperature
    p = torch.softmax(z, dim=-1)
    torch.testing.assert_close(out.entropy, -(p * p.log()).sum(-1), rtol=1e-4, atol=1e-4)


@kernel_test
@pytest.mark.parametrize("num_splits", [1, 3, 10])
def test_small_tiles_and_vocabulary_splits(num_splits):
    # 16 x 64 tiles (one group each) over H in steps of 16: 4 row blocks, 5 vocabulary tiles, 5
    # steps along H
    h, W, b, rows = make_inputs(torch.float32, seed=1)
    out = SampleOutput(*sampler_triton.sample(
        h, W, b, 1.3, 5, rows, block_m=16, block_v=64, block_k=16, num_splits=num_splits))
    assert_matches_reference(out, h, W, b, 1.3, 5, rows)


@kernel_test
@pytest.mark.parametrize("num_splits", [1, 3])
def test_argmax_takes_the_first_maximal_column_across_tiles_and_splits(num_splits):
    # small integers: every logit is an exact integer whatever the summation order, so ties at
    # the maximum are exact and common, and the argmax must be the first maximal column
    g = torch.Generator().manual_seed(4)
    hdim = 20  # not a multiple of block_k
    h = torch.randint(-1, 2, (M, hdim), generator=g).float()
    W = torch.randint(-1, 2, (V, hdim), generator=g).float()
    b = torch.zeros(V)
    # row 0: its largest possible logit sum|h_0| at columns 5 and 130 (64-column tiles 0 and 2;
    # different splits when num_splits=3) must give 5; row 1: only at column 299, in the last,
    # partial tile
    W[5] = W[130] = h[0].sign()
    W[299] = 2 * h[1].sign()
    rows = torch.arange(M)
    h, W, b, rows = (t.to(DEVICE) for t in (h, W, b, rows))
    out = SampleOutput(*sampler_triton.sample(h, W, b, 1.0, 0, rows, block_m=16, block_v=64,
                                              block_k=16, num_splits=num_splits))
    logits = h @ W.T
    assert out.argmax[:2].tolist() == [5, 299]
    ties = (logits == logits.max(dim=-1, keepdim=True).values).sum(-1) > 1
    assert ties.sum() > 10  # the comparison below covers many exact ties
    assert torch.equal(out.argmax, logits.argmax(dim=-1))


def tied_groups(seed: int, rows: torch.Tensor, v: int, device=DEVICE):
    """fp32 inputs whose two-level draws are decided by rounding alone: h is the identity (M =
    H), so row m's logits are exactly W[:, m]; in row m every group of sampler.GROUP columns
    holds the same values a_m, shuffled, minus that group's own Gumbel noise. All group scores
    (logsumexp + noise) are then equal but for rounding in the group sums: which group a row
    draws depends on the order in which a group's exponentials are summed."""
    m = len(rows)
    g = torch.Generator().manual_seed(seed)
    groups = -(-v // sampler.GROUP)
    keys = counter_rng.row_keys(seed, rows.cpu())
    group_noise = counter_rng.gumbel_from_uniform(counter_rng.uniform_from_keys(
        counter_rng.group_keys(keys), torch.arange(groups)))  # [M, groups]
    a = torch.randn(m, sampler.GROUP, generator=g) * 2  # [M, GROUP]
    order = torch.stack([torch.randperm(sampler.GROUP, generator=g)
                         for _ in range(groups)])  # [groups, GROUP]
    logits = a[:, order] - group_noise[:, :, None]  # [M, groups, GROUP]
    W = logits.reshape(m, -1)[:, :v].T.contiguous()  # [V, H = M]
    return torch.eye(m).to(device), W.to(device), rows.to(device)


@kernel_test
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_draws_do_not_depend_on_the_launch_config(dtype):
    """Every candidate config (sampler_triton.CANDIDATES: the per-GPU defaults are among them)
    and vocabulary split draws the same tokens, bit for bit, on ordinary inputs and on inputs
    whose draws hang on the rounding of the group sums (`tied_groups`); lse and E[z] differ only
    in the order the tiles are merged."""
    h, W, b, rows = make_inputs(dtype, seed=5)
    rows_t = torch.arange(64, device=DEVICE) * 7919 + 3
    tied = tied_groups(6, rows_t, 1000) if dtype == torch.float32 else None
    if tied is not None:
        z = tied[0] @ tied[1].T
        # the construction works: most rows' group draws are near-ties
        assert (draw_margin(z, 6, tied[2]) < 1e-4).float().mean() > 0.5
    outs, tied_outs = [], []
    for config in sampler_triton.CANDIDATES:
        for num_splits in (1, 3):
            launch = dict(block_m=config.block_m, block_v=config.block_v,
                          num_warps=config.num_warps, num_stages=config.num_stages,
                          num_splits=num_splits)
            outs.append(SampleOutput(*sampler_triton.sample(h, W, b, 1.3, 21, rows, **launch)))
            if tied is not None:
                tied_outs.append(SampleOutput(*sampler_triton.sample(
                    tied[0], tied[1], None, 1.0, 6, tied[2], **launch)))
    for results in (outs, tied_outs):
        for out in results[1:]:
            assert torch.equal(out.tokens, results[0].tokens)
            assert torch.equal(out.argmax, results[0].argmax)
            torch.testing.assert_close(out.lse, results[0].lse, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(out.expected_logit, results[0].expected_logit,
                                       rtol=1e-5, atol=1e-5)


@kernel_test
def test_draw_is_a_function_of_seed_and_row_id():
    h, W, b, rows = make_inputs(torch.float32, seed=2)
    first = fused_sample(h, W, b, temperature=1.0, seed=3, rows=rows, use_triton=True)
    again = fused_sample(h, W, b, temperature=1.0, seed=3, rows=rows, use_triton=True)
    assert all(torch.equal(a, b_) for a, b_ in zip(first, again))
    # a row keeps its draw wherever it sits in the batch (rank layout, micro-batch split)
    perm = torch.randperm(M, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    moved = fused_sample(h[perm], W, b, temperature=1.0, seed=3, rows=rows[perm], use_triton=True)
    assert torch.equal(moved.tokens, first.tokens[perm])
    other = fused_sample(h, W, b, temperature=1.0, seed=4, rows=rows, use_triton=True)
    assert (other.tokens != first.tokens).float().mean() > 0.5


@kernel_test
@pytest.mark.parametrize("temperature,v", [(1.0, 23), (1.5, 23), (3.0, 23), (1.0, 200)])
def test_draws_follow_softmax(temperature, v):
    """Chi-square goodness of fit of 3000 draws (same h, distinct row ids) to softmax(z / T); V
    = 23 is one group of the two-level draw, V = 200 four (the last partial) in two tiles."""
    num_draws, hdim = 3000, 16
    h, W, b, _ = make_inputs(torch.float32, m=1, v=v, h=hdim, seed=3)
    h = h.expand(num_draws, hdim)
    rows = torch.arange(num_draws, device=DEVICE) + 10**9
    out = fused_sample(h, W, b, temperature=temperature, seed=11, rows=rows, use_triton=True)
    observed = torch.bincount(out.tokens.cpu(), minlength=v).double()

    def p_value(t):
        logits = (h[0].double() @ W.double().T + b.double()).cpu() / t
        expected = torch.softmax(logits, dim=-1) * num_draws
        # pool the rare tokens into one bin so that every bin expects at least 5 draws
        rare = expected < 5
        obs = torch.cat([observed[~rare], observed[rare].sum().reshape(1)])
        exp = torch.cat([expected[~rare], expected[rare].sum().reshape(1)])
        if not rare.any():
            obs, exp = obs[:-1], exp[:-1]
        statistic = ((obs - exp) ** 2 / exp).sum()
        # P(chi2 with bins - 1 degrees of freedom >= statistic), scipy.stats.chisquare's p-value:
        # the regularized upper incomplete gamma function, in torch (the GPU machine, where these
        # tests also run, has no scipy)
        return torch.special.gammaincc(torch.tensor((len(obs) - 1) / 2.0, dtype=torch.float64),
                                       statistic / 2).item()

    # H0 holds: accept at the 0.1% level, i.e. statistic < chi2.ppf(0.999, bins - 1) (48.3 for
    # 23 bins); the seeds are fixed, so the outcome is deterministic
    assert p_value(temperature) > 1e-3
    # and the test has power: a 30% wrong temperature is rejected
    assert p_value(temperature * 1.3) < 1e-3


# A counter whose hash has all of its top 24 bits set (see tests/test_rng.py): under the old
# 24-bit uniforms its noise was +inf.
BAD_SEED, BAD_ROW, BAD_COL = 1234, 1086, 2158


@kernel_test
def test_the_known_bad_slot_samples_from_the_logits():
    # only BAD_COL's group can be drawn, and inside it BAD_COL is 1000 nats below the others:
    # its noise is the one that decides; several rows, the bad one among them
    v, hdim = 4096, 8
    h = torch.zeros(4, hdim, device=DEVICE)
    W = torch.zeros(v, hdim, device=DEVICE)
    b = torch.full((v,), -1000.0, device=DEVICE)
    group = BAD_COL // sampler.GROUP * sampler.GROUP
    b[group:group + sampler.GROUP] = 0.0
    b[BAD_COL] = -1000.0
    rows = torch.tensor([0, BAD_ROW, 7, BAD_ROW], device=DEVICE)
    out = fused_sample(h, W, b, temperature=1.0, seed=BAD_SEED, rows=rows, use_triton=True)
    assert (out.tokens != BAD_COL).all()
    assert ((out.tokens >= group) & (out.tokens < group + sampler.GROUP)).all()
    ref = sample_reference(h, W, b, 1.0, BAD_SEED, rows)
    assert torch.equal(out.tokens, ref.tokens)


@kernel_test
@pytest.mark.parametrize("case", ["favour-last-tile", "all-equal", "very-negative"])
def test_padded_columns_never_win(case):
    """V = 2100 is not a multiple of the 128-column tile: columns 2100..2175 of the last tile are
    padding (a group partly, the next wholly), and BAD_COL lies among them, so row BAD_ROW's
    padded noise is the largest there is. Every id must be a real column, and the draws the
    reference's."""
    v, hdim = 2100, 8
    rows = torch.tensor([BAD_ROW, 0, BAD_ROW, 5, 99, BAD_ROW], device=DEVICE)
    h = torch.zeros(len(rows), hdim, device=DEVICE)
    W = torch.zeros(v, hdim, device=DEVICE)
    b = torch.zeros(v, device=DEVICE)
    if case == "favour-last-tile":  # the draw belongs to the real columns of the last tile
        b[2048:] = 20.0
    elif case == "very-negative":
        b[:] = -1e30
    for num_splits in (1, 3):
        out = SampleOutput(*sampler_triton.sample(h, W, b, 1.0, BAD_SEED, rows,
                                                  num_splits=num_splits))
        assert (out.tokens < v).all() and (out.argmax < v).all()
        ref = sample_reference(h, W, b, 1.0, BAD_SEED, rows)
        assert torch.equal(out.tokens, ref.tokens)
        if case == "favour-last-tile":
            assert (out.tokens >= 2048).all()


def test_dispatch(monkeypatch):
    cpu = torch.zeros(1)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not use_triton_for(None, cpu)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert use_triton_for(None, cpu)
    assert not use_triton_for(False, cpu)
    h, W, b, rows = make_inputs(torch.float32, device="cpu")
    out = fused_sample(h, W, b, temperature=1.0, seed=1, rows=rows, use_triton=False)
    ref = sample_reference(h, W, b, 1.0, 1, rows)
    assert all(torch.equal(a, r) for a, r in zip(out, ref))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_realistic_size(dtype):
    """Compiled kernel on CUDA at ELECTRA-base sizes: 4096 masked rows, BERT vocabulary."""
    h, W, b, rows = make_inputs(dtype, m=4096, v=30522, h=768, device="cuda")
    out = fused_sample(h, W, b, temperature=1.5, seed=123, rows=rows)
    assert_matches_reference(out, h, W, b, 1.5, 123, rows)
    u, _ = sampler_triton.noise(123, rows[:64], 30522)
    cols = torch.arange(30522, device="cuda")
    assert torch.equal(u, counter_rng.uniform_from_keys(counter_rng.row_keys(123, rows[:64]), cols))
