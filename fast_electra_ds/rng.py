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


def uniform_from_keys(keys: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[N, V] float32 uniforms in (0, 1) for row keys [N] and column ids [V] (both int64)."""
    x = keys[:, None] ^ ((cols * COL_MUL) & M32)[None, :]
    x = mix32(mix32(x))
    # top 24 bits -> an exact float32 in (0, 1): never 0 or 1, so -log(-log(u)) is finite
    x >>= 8
    return x.to(torch.float32).add_(0.5).mul_(1.0 / (1 << 24))


def gumbel_noise(seed: int, rows: torch.Tensor, num_cols: int) -> torch.Tensor:
    """[N, V] float32 standard Gumbel noise for global row ids `rows` [N] and columns 0..V-1."""
    cols = torch.arange(num_cols, dtype=torch.int64, device=rows.device)
    u = uniform_from_keys(row_keys(seed, rows), cols)
    return u.log_().neg_().log_().neg_()
