"""The counter-based sampling noise (fast_electra_ds/rng.py): exact and finite for every counter.

The uniforms come from the top bits of a 32-bit hash. Every code those bits can hold must give a
uniform strictly inside (0, 1) and a finite Gumbel value; otherwise a slot whose hash hits the bad
code samples that column whatever the logits say.
"""

from __future__ import annotations

import torch

from fast_electra_ds import generator, rng

# A counter whose hash has all of its top 24 bits set: (seed, noise row, column). Under the old
# 24-bit map its uniform rounded to exactly 1.0 and its Gumbel noise was +inf.
BAD_SEED, BAD_ROW, BAD_COL = 1234, 1086, 2158


def test_every_uniform_code_is_strictly_inside_and_gives_finite_gumbel():
    codes = torch.arange(2**rng.UNIFORM_BITS, dtype=torch.int64)
    shift = 32 - rng.UNIFORM_BITS
    for low_bits in (0, (1 << shift) - 1):  # the bits below the code do not matter
        u = rng.uniform_from_bits((codes << shift) | low_bits)
        assert u.dtype == torch.float32
        assert (u > 0).all() and (u < 1).all()
        # exact: every code its own value, in order, at the spacing of the map
        assert (u[1:] > u[:-1]).all()
        assert torch.equal(u.double(), (codes.double() + 0.5) / 2**rng.UNIFORM_BITS)
        g = rng.gumbel_from_uniform(u.clone())
        assert torch.isfinite(g).all()
        assert -2.9 < g.min().item() < -2.8 and 16.6 < g.max().item() < 16.7


def test_the_known_bad_slot_has_finite_noise():
    x = rng.mix32(rng.mix32(rng.row_keys(BAD_SEED, torch.tensor([BAD_ROW]))
                            ^ ((BAD_COL * rng.COL_MUL) & rng.M32)))
    assert x.item() >> 8 == 2**24 - 1  # really the counter this test is about
    g = rng.gumbel_noise(BAD_SEED, torch.tensor([BAD_ROW]), 4096)
    assert torch.isfinite(g).all()


def test_the_known_bad_slot_samples_from_the_logits():
    # column BAD_COL is 1000 nats less likely than the rest: its noise must not make it win
    logits = torch.zeros(1, 1, 4096)
    logits[0, 0, BAD_COL] = -1000.0
    sampled, _ = generator.sample_replacements(logits, temperature=1.0, seed=BAD_SEED,
                                               sample_ids=torch.tensor([BAD_ROW]))
    assert sampled.item() != BAD_COL
