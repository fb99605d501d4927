"""Triton kernels of the fused replaced-token-detection loss (the public API is rtd_loss.py).

Shapes (N tokens, hidden size H, P programs):
  x        [N, H]  discriminator hidden states after its prediction dense layer and activation
                   (any float dtype, unit stride along H)
  w        [H]     dense_prediction weight; b [] or [1] its bias
  labels   [N]     1 = replaced, 0 = original (float, int or bool)
  mask     [N]     nonzero = real token, 0 = padding (float, int or bool)
  n_real   []      fp32 max(1, number of real tokens) (a device tensor: no host sync)
  z, dz    [N]     fp32 logits x w + b; dz = (sigmoid(z) - y) [mask != 0] / n_real = d loss / d z
  partials [P], [P, 4], [P, H]   per-program loss sums, counts, and dw = sum_n dz_n x_n
  dx       [N, H]  g * dz[:, None] * w[None, :] (g = d out / d loss), x's dtype

Forward grid (P,): each program strides over row blocks of BLOCK_N rows (P is capped near a few
programs per SM), holds a [BLOCK_N, next_pow2(H)] tile of x in registers, and in that single read
of x computes z, the masked BCE sum, the four counts, dz, and its running sums of dz * x (dw) and
dz (db). Per-program partials are summed by torch afterwards: deterministic, no atomics.
Backward needs no second read of x: dw and db are the saved sums times g, and dx is the outer
product g * dz w, written by `_rtd_input_grad_kernel` (grid over [BLOCK_N, BLOCK_H] tiles).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fast_electra_kernels._dispatch import FP_FUSION


@triton.jit
def _rtd_forward_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, mask_ptr, n_real_ptr,
    loss_ptr, counts_ptr, dz_ptr, dw_ptr, db_ptr,
    N, H, stride_xn,
    COMPUTE_GRAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_H)
    col_mask = cols < H
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr).to(tl.float32)
    inv_n_real = 1.0 / tl.load(n_real_ptr)

    # vectors summed once at the end: one reduction per program, not one per row block
    loss_acc = tl.zeros([BLOCK_N], tl.float32)
    rep_correct = tl.zeros([BLOCK_N], tl.int32)
    rep_total = tl.zeros([BLOCK_N], tl.int32)
    orig_correct = tl.zeros([BLOCK_N], tl.int32)
    orig_total = tl.zeros([BLOCK_N], tl.int32)
    dw_acc = tl.zeros([BLOCK_H], tl.float32)
    db_acc = tl.zeros([BLOCK_N], tl.float32)

    for block in range(pid, tl.cdiv(N, BLOCK_N), num_programs):
        rows = block * BLOCK_N + tl.arange(0, BLOCK_N)
        row_mask = rows < N
        x = tl.load(x_ptr + rows[:, None] * stride_xn + cols[None, :],
                    mask=row_mask[:, None] & col_mask[None, :], other=0.0).to(tl.float32)
        z = tl.sum(x * w[None, :], axis=1) + b
        y = tl.load(y_ptr + rows, mask=row_mask, other=0).to(tl.float32)
        is_real = tl.load(mask_ptr + rows, mask=row_mask, other=0) != 0
        real = is_real.to(tl.float32)

        # BCE with logits, stable form: max(z, 0) - z y + log(1 + exp(-|z|))
        loss_acc += (tl.maximum(z, 0.0) - z * y + tl.log(1.0 + tl.exp(-tl.abs(z)))) * real

        is_replaced = y > 0.5
        correct = (z > 0) == is_replaced
        rep_total += (is_real & is_replaced).to(tl.int32)
        rep_correct += (is_real & is_replaced & correct).to(tl.int32)
        orig_total += (is_real & ~is_replaced).to(tl.int32)
        orig_correct += (is_real & ~is_replaced & correct).to(tl.int32)

        if COMPUTE_GRAD:
            dz = (tl.sigmoid(z) - y) * real * inv_n_real  # 0 on padding and out-of-range rows
            tl.store(dz_ptr + rows, dz, mask=row_mask)
            dw_acc += tl.sum(dz[:, None] * x, axis=0)
            db_acc += dz

    tl.store(loss_ptr + pid, tl.sum(loss_acc, axis=0))
    tl.store(counts_ptr + pid * 4 + 0, tl.sum(rep_correct, axis=0))
    tl.store(counts_ptr + pid * 4 + 1, tl.sum(rep_total, axis=0))
    tl.store(counts_ptr + pid * 4 + 2, tl.sum(orig_correct, axis=0))
    tl.store(counts_ptr + pid * 4 + 3, tl.sum(orig_total, axis=0))
    if COMPUTE_GRAD:
        tl.store(dw_ptr + pid * H + cols, dw_acc, mask=col_mask)
        tl.store(db_ptr + pid, tl.sum(db_acc, axis=0))


@triton.jit
def _rtd_input_grad_kernel(dz_ptr, w_ptr, grad_ptr, dx_ptr, N, H,
                           BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    row_mask = rows < N
    col_mask = cols < H
    g = tl.load(grad_ptr).to(tl.float32)
    dz = tl.load(dz_ptr + rows, mask=row_mask, other=0.0) * g
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    dx = dz[:, None] * w[None, :]
    tl.store(dx_ptr + rows[:, None] * H + cols[None, :], dx.to(dx_ptr.dtype.element_ty),
             mask=row_mask[:, None] & col_mask[None, :])


# Launch options, passed explicitly so that what tests/test_kernel_compile.py compiles ahead of
# time is what runs, whatever Triton's defaults (spill-free on sm_80 / sm_90 / sm_100 with the
# blocks below: benchmarks/results/kernel_resources*.md)
NUM_WARPS, NUM_STAGES = 4, 3


def forward_blocks(H: int) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_H) of the forward kernel: a row holds all of H (padded to a power of 2),
    and a [BLOCK_N, BLOCK_H] fp32 tile of at most 8192 values stays in registers."""
    block_h = triton.next_power_of_2(H)
    return max(1, min(64, 8192 // block_h)), block_h


def input_grad_blocks(H: int) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_H) of the dx kernel: [32, up to 256] tiles of the outer product."""
    return 32, min(256, triton.next_power_of_2(H))


def _as_loadable(t: torch.Tensor) -> torch.Tensor:
    # bool tensors are loaded through a zero-copy uint8 view; contiguous so a row id is an offset
    t = t.contiguous()
    return t.view(torch.uint8) if t.dtype == torch.bool else t


def _default_num_programs(x: torch.Tensor, num_row_blocks: int) -> int:
    if not x.is_cuda:
        return min(num_row_blocks, 4)  # the interpreter runs programs one after another
    num_sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    return min(num_row_blocks, 4 * num_sms)


def forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, labels: torch.Tensor,
            mask: torch.Tensor, compute_grad: bool, *, block_n: int | None = None,
            num_programs: int | None = None):
    """x [N, H]. Returns loss [] fp32, counts [4] int64 (replaced correct / total, original
    correct / total), and when compute_grad dz [N] fp32, dw [H] fp32, db [] fp32 (for g = 1)."""
    N, H = x.shape
    if x.stride(1) != 1:
        x = x.contiguous()
    default_block_n, block_h = forward_blocks(H)
    block_n = block_n or default_block_n
    num_row_blocks = triton.cdiv(N, block_n)
    if num_programs is None:
        num_programs = _default_num_programs(x, num_row_blocks)
    labels, mask = _as_loadable(labels), _as_loadable(mask)
    # clamped as in objectives.rtd_loss: a micro-batch of padding only gives loss 0, not nan
    n_real = (mask != 0).sum(dtype=torch.float32).clamp_min(1)

    device = x.device
    loss_part = torch.empty(num_programs, dtype=torch.float32, device=device)
    counts_part = torch.empty(num_programs, 4, dtype=torch.int32, device=device)
    if compute_grad:
        dz = torch.empty(N, dtype=torch.float32, device=device)
        dw_part = torch.empty(num_programs, H, dtype=torch.float32, device=device)
        db_part = torch.empty(num_programs, dtype=torch.float32, device=device)
    else:  # never written: COMPUTE_GRAD=False compiles the gradient code away
        dz = dw_part = db_part = loss_part
    _rtd_forward_kernel[(num_programs,)](
        x, w.contiguous(), b, labels, mask, n_real,
        loss_part, counts_part, dz, dw_part, db_part,
        N, H, x.stride(0),
        COMPUTE_GRAD=compute_grad, BLOCK_N=block_n, BLOCK_H=block_h, num_warps=NUM_WARPS,
        num_stages=NUM_STAGES, enable_fp_fusion=FP_FUSION,
    )
    loss = loss_part.sum() / n_real
    counts = counts_part.sum(dim=0, dtype=torch.int64)
    if not compute_grad:
        return loss, counts, None, None, None
    return loss, counts, dz, dw_part.sum(dim=0), db_part.sum()


def input_grad(dz: torch.Tensor, w: torch.Tensor, grad_loss: torch.Tensor,
               dtype: torch.dtype) -> torch.Tensor:
    """dx [N, H] = grad_loss * dz[:, None] * w[None, :], written once in `dtype`."""
    N, H = dz.shape[0], w.shape[0]
    dx = torch.empty(N, H, dtype=dtype, device=dz.device)
    block_n, block_h = input_grad_blocks(H)
    grid = (triton.cdiv(N, block_n), triton.cdiv(H, block_h))
    _rtd_input_grad_kernel[grid](dz, w.contiguous(), grad_loss.float().contiguous(), dx, N, H,
                                 BLOCK_N=block_n, BLOCK_H=block_h, num_warps=NUM_WARPS,
                                 num_stages=NUM_STAGES, enable_fp_fusion=FP_FUSION)
    return dx
