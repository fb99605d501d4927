"""Fused replaced-token-detection (RTD) loss: final projection, masked BCE, counts and gradients.

Shapes:
  x       [..., H]  discriminator hidden states after ElectraDiscriminatorPredictions' dense layer
                    and activation (the input of its dense_prediction H -> 1)
  w       [H]       dense_prediction.weight (flattened); b [] or [1] dense_prediction.bias
  labels  [...]     1 = replaced, 0 = original (float, int or bool)
  mask    [...]     nonzero = real token, 0 = padding (float, int or bool)
  z       [N]       logits x w + b in fp32 (N = number of positions in `...`)
  loss    []        fp32 mean of BCE-with-logits(z, labels) over real tokens (0 if there are
                    none, as in fast_electra_ds.method.objectives.rtd_loss)
  counts  dict of [] int64: replaced_correct, replaced_total, original_correct, original_total
          (a prediction is "replaced" when z > 0; padding is not counted)

Three layers, as in Liger-Kernel: the Triton kernels (rtd_loss_triton.py), the autograd Function
`FusedRTDLoss` and the wrapper `fused_rtd_loss` choosing it or the plain-torch `rtd_loss_reference`.
The forward reads x once and, when a gradient is wanted, also computes dz and the w / b gradients
there; backward only scales those by the incoming gradient and writes dx = g dz w.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fast_electra_kernels._dispatch import use_triton_for

COUNT_NAMES = ("replaced_correct", "replaced_total", "original_correct", "original_total")


def _counts_dict(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    return dict(zip(COUNT_NAMES, counts.unbind()))


def rtd_loss_reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, labels: torch.Tensor,
                       mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Plain torch, fp32: masked mean of binary_cross_entropy_with_logits, and the counts."""
    z = x.reshape(-1, x.shape[-1]).float() @ w.float().reshape(-1) + b.float().reshape(())  # [N]
    y = labels.reshape(-1).float()
    is_real = mask.reshape(-1) != 0
    per_token = F.binary_cross_entropy_with_logits(z, y, reduction="none")  # [N]
    loss = (per_token * is_real).sum() / is_real.sum().clamp_min(1)
    is_replaced = y > 0.5
    correct = (z > 0) == is_replaced
    counts = torch.stack([
        (is_real & is_replaced & correct).sum(),
        (is_real & is_replaced).sum(),
        (is_real & ~is_replaced & correct).sum(),
        (is_real & ~is_replaced).sum(),
    ])
    return loss, _counts_dict(counts)


class FusedRTDLoss(torch.autograd.Function):
    """(x [N, H], w [H], b, labels [N], mask [N]) -> (loss [] fp32, counts [4] int64)."""

    @staticmethod
    def forward(ctx, x, w, b, labels, mask):
        from fast_electra_kernels import rtd_loss_triton  # triton is optional: imported on use

        compute_grad = any(ctx.needs_input_grad[:3])
        loss, counts, dz, dw, db = rtd_loss_triton.forward(x, w, b, labels, mask, compute_grad)
        ctx.mark_non_differentiable(counts)
        if compute_grad:
            ctx.save_for_backward(dz, dw, db, w)
            ctx.x_dtype = x.dtype
            ctx.b_meta = (b.shape, b.dtype)
        return loss, counts

    @staticmethod
    def backward(ctx, grad_loss, _grad_counts):
        from fast_electra_kernels import rtd_loss_triton

        dz, dw, db, w = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = rtd_loss_triton.input_grad(dz, w, grad_loss, ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = (dw * grad_loss).to(w.dtype)
        if ctx.needs_input_grad[2]:
            b_shape, b_dtype = ctx.b_meta
            grad_b = (db * grad_loss).reshape(b_shape).to(b_dtype)
        return grad_x, grad_w, grad_b, None, None


def fused_rtd_loss(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, labels: torch.Tensor,
                   mask: torch.Tensor, use_triton: bool | None = None,
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RTD loss and counts; see the module docstring for shapes.

    The counts stay on the device (no host sync); call .item() when logging.
    use_triton: None picks the Triton kernels on CUDA tensors (or CPU tensors under
    TRITON_INTERPRET=1) and the reference otherwise; True / False force one.
    """
    if not use_triton_for(use_triton, x, w):
        return rtd_loss_reference(x, w, b, labels, mask)
    H = x.shape[-1]
    loss, counts = FusedRTDLoss.apply(x.reshape(-1, H), w.reshape(-1), b,
                                      labels.reshape(-1), mask.reshape(-1))
    return loss, _counts_dict(counts)
