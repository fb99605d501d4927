"""Triton kernels of the fused sampler (the public API is sampler.py).

Shapes (one launch):
  h        [M, H]   hidden states at masked positions, after the MLM head's transform
                    (fp16 / bf16 / fp32, unit stride along H)
  W        [V, H]   decoder weight, same dtype as h (unit stride along H)
  b        [V]      decoder bias (any float dtype; zeros where there is none)
  rows     [M]      int64 global row ids: the RNG counter of each row (counter_rng.py)
  partials [S, M]   per vocabulary split s: running max, sum of exp, sum of exp * z,
                    best group score (sampler.gumbel_max) and the column drawn in that
                    group, largest logit and its column
                    (S = number of splits, usually 1)
  out      [M]      int64 token, fp32 lse = logsumexp(z), fp32 E_p[z], int64 argmax of the
                    logits, with logits = h W^T + b and z = logits / T

Grid (cdiv(M, BLOCK_M), S): a program streams its row block over its share of the vocabulary in
BLOCK_V tiles; each tile's logits are a [BLOCK_M, BLOCK_V] fp32 accumulator built in BLOCK_K
steps over H. [M, V] never exists in memory: per row it keeps an online logsumexp (running max,
running sum of exp, running sum of exp * z, merged from per-group sums), an online two-level
Gumbel-max (the best group score so far and the column drawn in that group; a tile holds
BLOCK_V / GROUP whole groups) and an online argmax of the logits (running largest logit, for the
generator's accuracy). With S > 1
the splits' partials are merged by `merge_partials` (a few [S, M] torch ops).

The Gumbel noise re-implements counter_rng.py on uint32: products wrap modulo 2**32, which is the
reference's `& M32`, and `>>` on uint32 is a logical shift, as on the reference's non-negative
int64 values. The uniforms are therefore bit-identical to the reference's; the noise
-log(-log(u)) can differ from torch's in the last bits where the GPU's log is approximate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fast_electra_kernels import counter_rng, sampler
from fast_electra_kernels._dispatch import FP_FUSION

MIX_MUL = tl.constexpr(counter_rng.MIX_MUL)
COL_MUL = tl.constexpr(counter_rng.COL_MUL)
# counter_rng.uniform_from_bits: the top UNIFORM_BITS bits k -> (k + 0.5) / 2**UNIFORM_BITS, exact
UNIFORM_SHIFT = tl.constexpr(32 - counter_rng.UNIFORM_BITS)
UNIFORM_SCALE = tl.constexpr(2.0 ** -counter_rng.UNIFORM_BITS)
MIN_NEG_LOG_U = tl.constexpr(counter_rng.MIN_NEG_LOG_U)
GROUP_SALT = tl.constexpr(counter_rng.GROUP_SALT)
GROUP = tl.constexpr(sampler.GROUP)  # columns per group of the two-level draw


@triton.jit
def _mix32(x):
    """counter_rng.mix32 on uint32 values."""
    x = ((x >> 16) ^ x) * MIX_MUL
    x = ((x >> 16) ^ x) * MIX_MUL
    return (x >> 16) ^ x


@triton.jit
def _row_keys(seed_word, rows):
    """counter_rng.row_keys: seed_word is the host's (seed & M32) ^ ((seed >> 32) & M32) as an
    int32 (`seed_word`); rows int64."""
    s = _mix32(seed_word.to(tl.uint32))
    # int64 -> uint32 truncates: the reference's `& M32` (for hi, after its arithmetic shift)
    hi = (rows >> 32).to(tl.uint32)
    lo = rows.to(tl.uint32)
    return _mix32(_mix32(hi ^ s) ^ lo)


@triton.jit
def _uniforms(keys, cols):
    """counter_rng.uniform_from_keys: keys [BM] uint32, cols [BV] int32 -> [BM, BV] fp32 in
    (0, 1)."""
    x = keys[:, None] ^ (cols.to(tl.uint32) * COL_MUL)[None, :]
    x = _mix32(_mix32(x))
    return ((x >> UNIFORM_SHIFT).to(tl.float32) + 0.5) * UNIFORM_SCALE


@triton.jit
def _gumbel(u):
    """counter_rng.gumbel_from_uniform: finite for every uniform _uniforms returns, also where the
    GPU's log is approximate (the clamp keeps -log(u) > 0 near u = 1)."""
    return -tl.log(tl.maximum(-tl.log(u), MIN_NEG_LOG_U))


@triton.jit(do_not_specialize=["seed_word"])
def _noise_kernel(rows_ptr, u_ptr, g_ptr, M, V, seed_word,
                  BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr):
    """Debug path: write the sampler's uniforms and Gumbel noise [M, V] (tests compare them)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_v = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    m_mask = offs_m < M
    keys = _row_keys(seed_word, tl.load(rows_ptr + offs_m, mask=m_mask, other=0))
    u = _uniforms(keys, offs_v)
    out = offs_m[:, None] * V + offs_v[None, :]
    mask = m_mask[:, None] & (offs_v < V)[None, :]
    tl.store(u_ptr + out, u, mask=mask)
    tl.store(g_ptr + out, _gumbel(u), mask=mask)


@triton.jit(do_not_specialize=["seed_word"])
def _fused_sample_kernel(
    h_ptr, w_ptr, b_ptr, rows_ptr,
    max_ptr, sum_ptr, dot_ptr, best_ptr, idx_ptr, high_ptr, high_idx_ptr,  # partials [S, M]
    M, V, H, stride_hm, stride_wv, temperature, seed_word, tiles_per_split,
    DOT_IN_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUPS_PER_TILE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    keys = _row_keys(seed_word, tl.load(rows_ptr + offs_m, mask=m_mask, other=0))
    gkeys = _mix32(keys ^ GROUP_SALT)  # counter_rng.group_keys

    run_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_M], tl.float32)  # sum exp(z - run_max)
    run_dot = tl.zeros([BLOCK_M], tl.float32)  # sum exp(z - run_max) * z
    best = tl.full([BLOCK_M], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_M], tl.int32)
    high = tl.full([BLOCK_M], float("-inf"), tl.float32)  # largest logit so far
    high_idx = tl.zeros([BLOCK_M], tl.int32)

    v_begin = split * tiles_per_split * BLOCK_V
    v_end = tl.minimum(V, v_begin + tiles_per_split * BLOCK_V)
    for v0 in range(v_begin, v_end, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)
        v_mask = offs_v < v_end
        acc = tl.zeros([BLOCK_M, BLOCK_V], tl.float32)
        for k0 in range(0, H, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < H
            h = tl.load(h_ptr + offs_m[:, None] * stride_hm + offs_k[None, :],
                        mask=m_mask[:, None] & k_mask[None, :], other=0.0)
            w = tl.load(w_ptr + offs_v[None, :] * stride_wv + offs_k[:, None],
                        mask=k_mask[:, None] & v_mask[None, :], other=0.0)
            if DOT_IN_FP32:
                acc = tl.dot(h.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(h, w, acc)
        acc += tl.load(b_ptr + offs_v, mask=v_mask, other=0.0).to(tl.float32)[None, :]
        logits = tl.where(v_mask[None, :], acc, float("-inf"))
        tile_high = tl.max(logits, axis=1)
        # the first maximal column, as torch.argmax; strict > keeps the earlier tile on a tie
        tile_high_idx = v0 + tl.argmax(logits, axis=1)
        higher = tile_high > high
        high = tl.where(higher, tile_high, high)
        high_idx = tl.where(higher, tile_high_idx, high_idx)

        # divide, as the reference does (not multiply by 1/T, which rounds differently)
        z_finite = acc / temperature  # padded columns hold 0 here (zero-filled loads)
        z = tl.where(v_mask[None, :], z_finite, float("-inf"))

        # The tile's groups of GROUP columns (sampler.gumbel_max): each group's max, sum of
        # exp(z - max) and sum of exp(z - max) * z. A group of padded columns only (in the
        # last tile) has max -inf; 0 stands in for it so that exp gives 0, not nan.
        z3 = tl.reshape(z, [BLOCK_M, GROUPS_PER_TILE, GROUP])
        group_max = tl.max(z3, axis=2)  # [BLOCK_M, GROUPS_PER_TILE]
        group_real = group_max > float("-inf")
        group_max = tl.where(group_real, group_max, 0.0)
        e = tl.exp(z3 - group_max[:, :, None])  # 0 in padded columns
        group_sum = tl.sum(e, axis=2)
        # e * z_finite, not e * z: padded columns give 0 * 0, not 0 * -inf = nan
        group_dot = tl.sum(e * tl.reshape(z_finite, [BLOCK_M, GROUPS_PER_TILE, GROUP]), axis=2)

        # the online logsumexp and E_p[z] over the row, merged from the groups as the reference
        # merges them
        tile_max = tl.max(tl.where(group_real, group_max, float("-inf")), axis=1)
        new_max = tl.maximum(run_max, tile_max)
        alpha = tl.exp(run_max - new_max)  # 0 on the first tile (run_max = -inf)
        scale = tl.exp(tl.where(group_real, group_max - new_max[:, None], float("-inf")))
        run_sum = run_sum * alpha + tl.sum(group_sum * scale, axis=1)
        run_dot = run_dot * alpha + tl.sum(group_dot * scale, axis=1)
        run_max = new_max

        # level 1: each group's score, its logsumexp plus the group's own noise
        group_ids = v0 // GROUP + tl.arange(0, GROUPS_PER_TILE)
        group_lse = group_max + tl.log(tl.where(group_real, group_sum, 1.0))
        group_score = tl.where(group_real, group_lse + _gumbel(_uniforms(gkeys, group_ids)),
                               float("-inf"))
        # level 2, in every group (the reference does it in the winning group only: the same
        # noise, so the same column): the argmax of z plus the column's noise. Padded columns
        # stay out explicitly: -inf plus noise must never be what an argmax looks at.
        score = tl.where(v_mask[None, :], z + _gumbel(_uniforms(keys, offs_v)), float("-inf"))
        column = tl.argmax(tl.reshape(score, [BLOCK_M, GROUPS_PER_TILE, GROUP]), axis=2)
        tile_best = tl.max(group_score, axis=1)
        tile_group = tl.argmax(group_score, axis=1)  # [BLOCK_M], the first on a tie
        chosen = tl.arange(0, GROUPS_PER_TILE)[None, :] == tile_group[:, None]
        tile_idx = v0 + tile_group * GROUP + tl.sum(tl.where(chosen, column, 0), axis=1)
        # strict: on an exact tie the earlier (lower) group stays, as torch.argmax picks
        better = tile_best > best
        best = tl.where(better, tile_best, best)
        best_idx = tl.where(better, tile_idx, best_idx)

    out = split * M + offs_m
    tl.store(max_ptr + out, run_max, mask=m_mask)
    tl.store(sum_ptr + out, run_sum, mask=m_mask)
    tl.store(dot_ptr + out, run_dot, mask=m_mask)
    tl.store(best_ptr + out, best, mask=m_mask)
    tl.store(idx_ptr + out, best_idx, mask=m_mask)
    tl.store(high_ptr + out, high, mask=m_mask)
    tl.store(high_idx_ptr + out, high_idx, mask=m_mask)


def seed_word(seed: int) -> int:
    """The 32-bit word counter_rng.row_keys mixes into its seed key, computed once on the host,
    as the int32 with those bits. Triton types a Python int argument by its value (i32 below
    2**31, i64 above) and compiles a kernel per type: an int32 always keeps it to one. The
    kernels read it back with .to(tl.uint32): the same bits."""
    word = (seed & counter_rng.M32) ^ ((seed >> 32) & counter_rng.M32)
    return word - (1 << 32) if word >= 1 << 31 else word


# the debug kernel's launch (fixed: it is not on the training path)
NOISE_BLOCK_M, NOISE_BLOCK_V, NOISE_NUM_WARPS, NOISE_NUM_STAGES = 32, 128, 4, 3


def noise(seed: int, rows: torch.Tensor, num_cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler's uniforms and Gumbel noise, both [M, num_cols] fp32 (a debug path)."""
    M = rows.shape[0]
    u = torch.empty(M, num_cols, dtype=torch.float32, device=rows.device)
    g = torch.empty_like(u)
    grid = (triton.cdiv(M, NOISE_BLOCK_M), triton.cdiv(num_cols, NOISE_BLOCK_V))
    _noise_kernel[grid](rows.contiguous(), u, g, M, num_cols, seed_word(seed),
                        BLOCK_M=NOISE_BLOCK_M, BLOCK_V=NOISE_BLOCK_V, num_warps=NOISE_NUM_WARPS,
                        num_stages=NOISE_NUM_STAGES, enable_fp_fusion=FP_FUSION)
    return u, g


def default_num_splits(device: torch.device, M: int, V: int, block_m: int,
                       block_v: int) -> int:
    """Vocabulary splits: enough for ~2 programs per SM when row blocks alone would leave SMs
    idle (few masked rows); 1 on the CPU interpreter, which runs programs one after another."""
    if device.type != "cuda":
        return 1
    num_sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton.cdiv(V, block_v), triton.cdiv(2 * num_sms, triton.cdiv(M, block_m))))


def merge_partials(run_max, run_sum, run_dot, best, best_idx, high, high_idx):
    """Merge [S, M] per-split partials into (tokens int64, lse fp32, E[z] fp32, argmax int64),
    each [M]."""
    top = run_max.max(dim=0).values  # [M]
    scale = torch.exp(run_max - top)  # [S, M]
    total = (run_sum * scale).sum(dim=0)
    lse = top + torch.log(total)
    expected = (run_dot * scale).sum(dim=0) / total
    # argmax returns the first maximal split, i.e. the lowest columns on an exact tie (for both)
    split = best.argmax(dim=0, keepdim=True)  # [1, M]
    tokens = best_idx.gather(0, split).squeeze(0).to(torch.int64)
    argmax = high_idx.gather(0, high.argmax(dim=0, keepdim=True)).squeeze(0).to(torch.int64)
    return tokens, lse, expected, argmax


@dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes and launch options of one `_fused_sample_kernel` launch.

    BLOCK_K is not part of it: it is fixed by the operands' dtype (`default_block_k`), so that a
    config never changes the order in which a logit's products are summed, hence never a draw.
    """

    block_m: int  # rows of h per program
    block_v: int  # vocabulary columns per tile (a multiple of sampler.GROUP)
    num_warps: int
    num_stages: int


# The configs tried, in order of preference: the widest tiles first (fewer passes over W and h),
# then fewer rows. benchmarks/kernel_resources.py --candidates compiles them all.
CANDIDATES = (LaunchConfig(64, 128, 8, 3), LaunchConfig(64, 64, 8, 3),
              LaunchConfig(32, 128, 8, 3), LaunchConfig(32, 64, 4, 3))

# The default config by (GPU family, fp32 dot, aligned). A family is the capability the table was
# checked on: sm_80 stands for every 8.x GPU, sm_90 for 9.0 and later. "aligned": Triton
# specializes H and both row strides as multiples of 16 (every ELECTRA / BERT size), and the
# tiles are then loaded as vectors and pipelined over num_stages; otherwise element by element,
# which costs registers. Each entry is the first of CANDIDATES that the ptxas of Triton 3.9 (12.9
# for sm_80, 13.4 for sm_90) and of Triton 3.6 (12.8 for both, the GPU machine's) compile
# without spilling registers (benchmarks/results/kernel_resources*.md; the installed Triton's is
# asserted by tests/test_kernel_compile.py). Speed on a GPU is not measured yet (no GPU where
# this was written).
_CONFIGS = {
    (80, False, True): CANDIDATES[0],
    (80, False, False): CANDIDATES[1],
    (80, True, True): CANDIDATES[2],
    (80, True, False): CANDIDATES[1],
    (90, False, True): CANDIDATES[0],
    (90, False, False): CANDIDATES[0],
    (90, True, True): CANDIDATES[3],
    (90, True, False): CANDIDATES[1],
}
FAMILIES = (80, 90)


def family(capability: int | None) -> int:
    """The `_CONFIGS` family of a CUDA capability (major * 10 + minor); None (the CPU
    interpreter, where tile sizes change only the speed) takes sm_80's."""
    if capability is None or capability < 90:
        return 80
    return 90


def default_block_k(dot_in_fp32: bool) -> int:
    """Columns of H per dot step: 32 for fp32 operands (a [64, 32] fp32 tile of h is as many
    bytes as a [64, 64] 16-bit one), 64 for fp16 / bf16."""
    return 32 if dot_in_fp32 else 64


def launch_config(capability: int | None, dot_in_fp32: bool, aligned: bool) -> LaunchConfig:
    """The default launch of `sample` on a GPU of this capability (None: the interpreter)."""
    return _CONFIGS[family(capability), dot_in_fp32, aligned]


def is_aligned(H: int, *row_strides: int) -> bool:
    """Whether Triton specializes H and the row strides as multiples of 16 (the loads then
    vectorize; see `_CONFIGS`)."""
    return all(n % 16 == 0 for n in (H, *row_strides))


def capability_of(device: torch.device) -> int | None:
    """major * 10 + minor of a CUDA device, None for the CPU (the interpreter)."""
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def uses_fp32_dot(dtype: torch.dtype, on_cuda: bool) -> bool:
    """fp32 inputs: full-precision products like the reference's fp32 matmul (tf32 would drift).
    fp16 / bf16 products are exact in the fp32 accumulator, so the tensor-core dot on them is
    exact too; but the CPU interpreter multiplies bf16 bit patterns as integers
    (triton-lang/triton#11584), so there bf16 operands are widened to fp32 first (same
    values)."""
    return dtype == torch.float32 or (not on_cuda and dtype == torch.bfloat16)


def sample(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, temperature: float,
           seed: int, rows: torch.Tensor, *, block_m: int | None = None,
           block_v: int | None = None, block_k: int | None = None,
           num_splits: int | None = None, num_warps: int | None = None,
           num_stages: int | None = None):
    """Launch the fused sampler; returns (tokens [M] int64, lse [M] fp32, E[z] [M] fp32,
    argmax of the logits [M] int64).

    Tile sizes and launch options default to `launch_config` for this device, operand dtype and
    alignment (any given one overrides its default); `num_splits` (vocabulary splits, merged
    afterwards) defaults to `default_num_splits`. The draws depend on none of the tiles, warps,
    stages or splits (tests/test_kernels_sampler.py), lse and E[z] only in the order the tiles
    are merged; block_k (by default fixed per dtype, and in no config) orders the dot's sums.
    """
    M, H = h.shape
    V = W.shape[0]
    if h.stride(1) != 1:
        h = h.contiguous()
    if W.stride(1) != 1:
        W = W.contiguous()
    fp32_dot = uses_fp32_dot(h.dtype, h.is_cuda)
    config = launch_config(capability_of(h.device), fp32_dot,
                           is_aligned(H, h.stride(0), W.stride(0)))
    block_m = block_m or config.block_m
    block_v = block_v or config.block_v
    block_k = block_k or default_block_k(fp32_dot)
    if block_v % sampler.GROUP:
        raise ValueError(f"block_v={block_v}: the vocabulary tiles hold whole groups of the "
                         f"two-level draw, so block_v must be a multiple of {sampler.GROUP}")
    num_row_blocks = triton.cdiv(M, block_m)
    num_tiles = triton.cdiv(V, block_v)
    if num_splits is None:
        num_splits = default_num_splits(h.device, M, V, block_m, block_v)
    tiles_per_split = triton.cdiv(num_tiles, num_splits)
    num_splits = triton.cdiv(num_tiles, tiles_per_split)  # no empty split

    # one allocation per output: each pointer is then 16-byte aligned whatever M is, so Triton
    # compiles one specialization of them (the one tests/test_kernel_compile.py compiles)
    def partial(dtype):
        return torch.empty(num_splits, M, dtype=dtype, device=h.device)

    if b is None:
        # zeros, not a kernel variant without the bias: one compiled kernel less, and the library
        # always has a bias (mlm_head.output_projection makes a zero one where a head has none)
        b = W.new_zeros(V)
    run_max, run_sum, run_dot, best, high = (partial(torch.float32) for _ in range(5))
    best_idx, high_idx = partial(torch.int32), partial(torch.int32)
    _fused_sample_kernel[(num_row_blocks, num_splits)](
        h, W, b, rows.contiguous(),
        run_max, run_sum, run_dot, best, best_idx, high, high_idx,
        M, V, H, h.stride(0), W.stride(0), float(temperature), seed_word(seed),
        tiles_per_split,
        DOT_IN_FP32=fp32_dot,
        BLOCK_M=block_m, BLOCK_V=block_v, BLOCK_K=block_k, GROUPS_PER_TILE=block_v // sampler.GROUP,
        num_warps=num_warps or config.num_warps, num_stages=num_stages or config.num_stages,
        enable_fp_fusion=FP_FUSION,
    )
    return merge_partials(run_max, run_sum, run_dot, best, best_idx, high, high_idx)
