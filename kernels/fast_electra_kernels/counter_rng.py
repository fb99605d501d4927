"""Counter-based random numbers for sampling replacements.

A draw is a pure function of (seed, row, column): row is the global prediction slot
(sample_id * K + slot) and column the vocabulary id. So the same sequence gets the same
replacement noise whatever the rank layout, micro-batch split, device, or whether the eager
path or the fused Triton sampler (kernels/) computes it: the kernel re-implements exactly these
integer operations on uint32 and must match bit for bit.

All arithmetic is on uint32 bit patterns held in int32 tensors (torch has no uint32 arithmetic on
CPU): multiplication and xor wrap modulo 2**32 in two's complement exactly as on uint32, and `>>`,
arithmetic on int32, is made logical by masking off the bits it shifts in. That is half the memory
of int64 and the CPU's native 32-bit vector multiply (AVX2 has none for 64 bits): the hash over
[rows, vocab] is the eager sampler's main cost, 2.8x faster this way than in int64.
"""

from __future__ import annotations

import torch

M32 = 0xFFFFFFFF
MIX_MUL = 0x045D9F3B  # the "lowbias" 32-bit integer hash multiplier
COL_MUL = 0x9E3779B1 & 0x07FFFFFF  # spreads consecutive columns


def to_bits(x: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2**32) -> int32 tensors holding the same 32 bits."""
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (two multiply-xorshift rounds), in place on `x` (int32 bit
    patterns), which it returns. In place because over [rows, vocab] every temporary is another
    pass over memory."""
    for _ in range(2):
        x ^= (x >> 16) & 0xFFFF
        x *= MIX_MUL
    x ^= (x >> 16) & 0xFFFF
    return x


def row_keys(seed: int, rows: torch.Tensor) -> torch.Tensor:
    """[N] int32 keys (uint32 bit patterns), one per global row id (rows: [N] int64, any size up
    to 2**63)."""
    word = (seed & M32) ^ ((seed >> 32) & M32)
    s = mix32(to_bits(torch.tensor(word, dtype=torch.int64, device=rows.device)))
    hi = to_bits((rows >> 32) & M32)
    lo = to_bits(rows & M32)
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
    """[...] float32 uniforms in (0, 1) from hashed words `x` (int32 bit patterns, overwritten):
    the top UNIFORM_BITS bits k -> (k + 0.5) / 2**UNIFORM_BITS, exactly."""
    x >>= 32 - UNIFORM_BITS
    x &= (1 << UNIFORM_BITS) - 1  # the logical shift's zeros
    return x.to(torch.float32).add_(0.5).mul_(2.0 ** -UNIFORM_BITS)


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise -log(-log(u)), in place on float32 `u`: finite for every uniform
    `uniform_from_bits` can return (in [-2.82, 16.64])."""
    return u.log_().neg_().clamp_min_(MIN_NEG_LOG_U).log_().neg_()


def uniform_from_keys(keys: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[N, V] float32 uniforms in (0, 1) for row keys [N] (int32, from row_keys) and column ids
    (int64): [V], the same for every row, or [N, V], each row its own."""
    words = to_bits((cols * COL_MUL) & M32)
    x = keys[:, None] ^ (words[None, :] if words.dim() == 1 else words)
    return uniform_from_bits(mix32(mix32(x)))


# The two-level sampler (sampler.gumbel_max) draws a group of columns with noise of its own: keyed
# by a second hash of the row key, so it is independent of the columns' noise at the same ids.
GROUP_SALT = 0x1B873593


def group_keys(keys: torch.Tensor) -> torch.Tensor:
    """[N] int32 keys of the group-level noise, from row keys [N] (row_keys)."""
    return mix32(keys ^ GROUP_SALT)


def gumbel_noise(seed: int, rows: torch.Tensor, num_cols: int) -> torch.Tensor:
    """[N, V] float32 standard Gumbel noise for global row ids `rows` [N] and columns 0..V-1."""
    cols = torch.arange(num_cols, dtype=torch.int64, device=rows.device)
    return gumbel_from_uniform(uniform_from_keys(row_keys(seed, rows), cols))
