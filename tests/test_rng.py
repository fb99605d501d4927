"""The counter-based sampling noise (fast_electra_kernels/counter_rng.py): exact and finite for
every counter.

The uniforms come from the top bits of a 32-bit hash. Every code those bits can hold must give a
uniform strictly inside (0, 1) and a finite Gumbel value; otherwise a slot whose hash hits the bad
code samples that column whatever the logits say.
"""

from __future__ import annotations

import torch
from fast_electra_kernels import counter_rng, sampler

from fast_electra_ds.method import sampling

# A counter whose hash has all of its top 24 bits set: (seed, noise row, column). Under the old
# 24-bit map its uniform rounded to exactly 1.0 and its Gumbel noise was +inf.
BAD_SEED, BAD_ROW, BAD_COL = 1234, 1086, 2158


def test_every_uniform_code_is_strictly_inside_and_gives_finite_gumbel():
    codes = torch.arange(2**counter_rng.UNIFORM_BITS, dtype=torch.int64)
    shift = 32 - counter_rng.UNIFORM_BITS
    for low_bits in (0, (1 << shift) - 1):  # the bits below the code do not matter
        u = counter_rng.uniform_from_bits(counter_rng.to_bits((codes << shift) | low_bits))
        assert u.dtype == torch.float32
        assert (u > 0).all() and (u < 1).all()
        # exact: every code its own value, in order, at the spacing of the map
        assert (u[1:] > u[:-1]).all()
        assert torch.equal(u.double(), (codes.double() + 0.5) / 2**counter_rng.UNIFORM_BITS)
        g = counter_rng.gumbel_from_uniform(u.clone())
        assert torch.isfinite(g).all()
        assert -2.9 < g.min().item() < -2.8 and 16.6 < g.max().item() < 16.7


def _mix32(x: int) -> int:
    """The hash in plain Python integers: the specification the tensor code must meet."""
    for _ in range(2):
        x = ((x ^ (x >> 16)) * counter_rng.MIX_MUL) & counter_rng.M32
    return x ^ (x >> 16)


def _uniform_bits(seed: int, row: int, col: int) -> int:
    s = _mix32((seed & counter_rng.M32) ^ ((seed >> 32) & counter_rng.M32))
    key = _mix32(_mix32(((row >> 32) & counter_rng.M32) ^ s) ^ (row & counter_rng.M32))
    return _mix32(_mix32(key ^ ((col * counter_rng.COL_MUL) & counter_rng.M32)))


def test_the_int32_hash_is_the_uint32_hash():
    """The tensors hold uint32 bit patterns in int32 (wrapping multiply, masked logical shift):
    compared with plain integers on rows up to 2**63, odd sizes (vector tails) and all seeds."""
    g = torch.Generator().manual_seed(0)
    rows = torch.cat([torch.randint(0, 2**62, (37,), generator=g),
                      torch.tensor([0, 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1])])
    cols = torch.tensor([0, 1, 2, 99, 2**15, 2**20 + 3, 30521])
    for seed in (0, 1234, 2**32 + 5, 2**63 - 1, -7):
        col_words = counter_rng.to_bits((cols * counter_rng.COL_MUL) & counter_rng.M32)
        x = counter_rng.row_keys(seed, rows)[:, None] ^ col_words
        # back to unsigned values
        got = counter_rng.mix32(counter_rng.mix32(x)).to(torch.int64) & counter_rng.M32
        want = torch.tensor([[_uniform_bits(seed, r, c) for c in cols.tolist()]
                             for r in rows.tolist()])
        assert torch.equal(got, want), seed


def test_the_known_bad_slot_has_finite_noise():
    assert _uniform_bits(BAD_SEED, BAD_ROW, BAD_COL) >> 8 == 2**24 - 1  # really that counter
    g = counter_rng.gumbel_noise(BAD_SEED, torch.tensor([BAD_ROW]), 4096)
    assert torch.isfinite(g).all()


def test_the_known_bad_slot_samples_from_the_logits():
    # only BAD_COL's group of the two-level draw can win, and inside it column BAD_COL is 1000
    # nats less likely than the rest: its noise must not make it win
    logits = torch.full((1, 1, 4096), -1000.0)
    group = BAD_COL // sampler.GROUP * sampler.GROUP
    logits[0, 0, group:group + sampler.GROUP] = 0.0
    logits[0, 0, BAD_COL] = -1000.0
    sampled, _ = sampling.sample_replacements(logits, temperature=1.0, seed=BAD_SEED,
                                               sample_ids=torch.tensor([BAD_ROW]))
    assert group <= sampled.item() < group + sampler.GROUP and sampled.item() != BAD_COL
