"""Fused generator sampling: Gumbel-max draw, log-sum-exp and expected logit in one pass.

Shapes:
  h     [M, H]  generator hidden states at the M masked positions, after the MLM head's
                transform (what enters the decoder); fp16 / bf16 / fp32
  W     [V, H]  decoder (output embedding) weight; b [V] its bias, or None
  rows  [M]     int64 global row ids, the RNG counters (counter_rng.py)
  z     [M, V]  logits / T = (h W^T + b) / T: the reference materializes it, the kernel never does
  out   SampleOutput of [M] tensors: tokens int64, lse fp32, expected_logit fp32, argmax int64

A draw is argmax_v(z_v + g_v) with g standard Gumbel noise from counter_rng, a sample from
softmax(z). lse = logsumexp_v z_v and expected_logit = E_p[z] = sum_v p_v z_v, so the entropy of
p = softmax(z) is lse - expected_logit (SampleOutput.entropy). argmax = argmax_v logits_v (the
first on a tie, as torch.argmax) is the generator's prediction, for its accuracy metric.

Three layers, as in Liger-Kernel: the Triton kernel (sampler_triton.py), `fused_sample` choosing it
or the plain-torch `sample_reference`. Sampling is not differentiable and the outputs carry no
gradient: the frozen generator of Fast-ELECTRA runs under torch.no_grad.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fast_electra_kernels import counter_rng
from fast_electra_kernels._dispatch import use_triton_for


class SampleOutput(NamedTuple):
    tokens: torch.Tensor  # [M] int64 sampled vocabulary ids
    lse: torch.Tensor  # [M] fp32 logsumexp of logits / T
    expected_logit: torch.Tensor  # [M] fp32 E_p[logits / T], p = softmax(logits / T)
    argmax: torch.Tensor  # [M] int64 argmax of the logits, before the temperature

    @property
    def entropy(self) -> torch.Tensor:
        """[M] fp32 entropy of softmax(logits / T), in nats."""
        return self.lse - self.expected_logit


def sample_reference(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None,
                     temperature: float, seed: int, rows: torch.Tensor) -> SampleOutput:
    """Plain torch: materialize the logits [M, V] in fp32 and z = logits / T, add the
    counter-based Gumbel noise to z, argmax."""
    logits = h.float() @ W.float().T  # [M, V]
    if b is not None:
        logits = logits + b.float()
    z = logits / temperature
    tokens = (z + counter_rng.gumbel_noise(seed, rows, W.shape[0])).argmax(dim=-1)
    lse = torch.logsumexp(z, dim=-1)
    expected = (torch.softmax(z, dim=-1) * z).sum(dim=-1)
    return SampleOutput(tokens, lse, expected, logits.argmax(dim=-1))


@torch.no_grad()
def fused_sample(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, *,
                 temperature: float, seed: int, rows: torch.Tensor,
                 use_triton: bool | None = None) -> SampleOutput:
    """Sample one token per row of h from softmax((h W^T + b) / temperature).

    Draws are a pure function of (seed, rows, logits): the same on every rank layout and on both
    paths, up to logits so close that the paths' different summation orders reorder them.
    use_triton: None picks the Triton kernel on CUDA tensors (or CPU tensors under
    TRITON_INTERPRET=1) and the reference otherwise; True / False force one.
    """
    if use_triton_for(use_triton, h, W, rows):
        # imported here: triton is an optional dependency, and importing it decides whether the
        # kernels are compiled or interpreted (TRITON_INTERPRET is read at decoration)
        from fast_electra_kernels import sampler_triton

        return SampleOutput(*sampler_triton.sample(h, W, b, temperature, seed, rows))
    return sample_reference(h, W, b, temperature, seed, rows)
