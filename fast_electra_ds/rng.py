"""Counter-based random numbers for sampling replacements.

A draw is a pure function of (seed, row, column): row is the global prediction slot
(sample_id * K + slot) and column the vocabulary id. So the same sequence gets the same
replacement noise whatever the rank layout, micro-batch split, device, or whether the eager
path or the fused Triton sampler (kernels/) computes it: the kernel re-implements exactly these
integer operations on uint32 and must match bit for bit.

All arithmetic is on uint32 values held in int64 tensors: a product of a value < 2**32 and a
constant < 2**27 stays < 2**59, so nothing overflows and masking to 32 bits gives the uint32
result.
"""

from __future__ import annotations

import torch

M32 = 0xFFFFFFFF
MIX_MUL = 0x045D9F3B  # the "lowbias" 32-bit integer hash multiplier
COL_MUL = 0x9E3779B1 & 0x07FFFFFF  # spreads consecutive columns; < 2**27 (see above)


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (two multiply-xorshift rounds), in place on `x` (int64 holding
    uint32 values), which it returns. In place because on CPU this hash over [rows, vocab] is
    the sampler's main cost, and it is memory-bound: each new temporary is another pass."""
    for _ in range(2):
        x ^= x >> 16
        x *= MIX_MUL
        x &= M32
    x ^= x >> 16
    return x


def row_keys(seed: int, rows: torch.Tensor) -> torch.Tensor:
    """[N] int64 uint32 keys, one per global row id (rows: [N] int64, any size up to 2**63)."""
    s = mix32(torch.tensor((seed & M32) ^ ((seed >> 32) & M32), dtype=torch.int64,
                           device=rows.device))
    hi = (rows >> 32) & M32
    lo = rows & M32
    return mix32(mix32(hi ^ s) ^ lo)


# Uniforms take the top 23 bits k of a hash: (k + 0.5) / 2**23 is exact in float32 (2k + 1 needs
# 24 significant bits, which float32 has), so every code maps to a distinct value in
# [2**-24, 1 - 2**-24]: never 0 or 1. (24 bits would not do: (2**24 - 0.5) / 2**24 rounds to 1.0,
# and -log(-log(1.0)) = +inf makes that column win whatever its logit.)
UNIFORM_BITS = 23
# -log(u) is at least -log(1 - 2**-24), which is 2**-24 in float32. An exact log never goes below
# it, so clamping there changes nothing; an approximate one (a GPU's fast log near 1) could return
# 0 and turn the Gumbel noise -log(-log(u)) into +inf.
MIN_NEG_LOG_U = 2.0 ** -24


def uniform_from_bits(x: torch.Tensor) -> torch.Tensor:
    """[...] float32 uniforms in (0, 1) from hashed words `x` (int64 holding uint32 values,
    overwritten): the top UNIFORM_BITS bits k -> (k + 0.5) / 2**UNIFORM_BITS, exactly."""
    x >>= 32 - UNIFORM_BITS
    return x.to(torch.float32).add_(0.5).mul_(2.0 ** -UNIFORM_BITS)


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise -log(-log(u)), in place on float32 `u`: finite for every uniform
    `uniform_from_bits` can return (in [-2.82, 16.64])."""
    return u.log_().neg_().clamp_min_(MIN_NEG_LOG_U).log_().neg_()


def uniform_from_keys(keys: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[N, V] float32 uniforms in (0, 1) for row keys [N] and column ids [V] (both int64)."""
    x = keys[:, None] ^ ((cols * COL_MUL) & M32)[None, :]
    return uniform_from_bits(mix32(mix32(x)))


def gumbel_noise(seed: int, rows: torch.Tensor, num_cols: int) -> torch.Tensor:
    """[N, V] float32 standard Gumbel noise for global row ids `rows` [N] and columns 0..V-1."""
    cols = torch.arange(num_cols, dtype=torch.int64, device=rows.device)
    return gumbel_from_uniform(uniform_from_keys(row_keys(seed, rows), cols))
