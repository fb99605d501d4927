"""Fused generator sampling: Gumbel-max draw, log-sum-exp and expected logit in one pass.

Shapes:
  h     [M, H]  generator hidden states at the M masked positions, after the MLM head's
                transform (what enters the decoder); fp16 / bf16 / fp32
  W     [V, H]  decoder (output embedding) weight; b [V] its bias, or None
  rows  [M]     int64 global row ids, the RNG counters (counter_rng.py)
  z     [M, V]  logits / T = (h W^T + b) / T: the reference materializes it, the kernel never does
  out   SampleOutput of [M] tensors: tokens int64, lse fp32, expected_logit fp32, argmax int64

A draw is a two-level Gumbel-max (`gumbel_max`): a group of GROUP consecutive columns, then a
column inside it, each the argmax of its log-probability plus standard Gumbel noise from
counter_rng, which is an exact sample from softmax(z). lse = logsumexp_v z_v and
expected_logit = E_p[z] = sum_v p_v z_v, so the entropy of p = softmax(z) is
lse - expected_logit (SampleOutput.entropy). argmax = argmax_v logits_v (the
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


# Columns per group of the two-level draw. Part of what a draw is: another value draws other
# tokens. The kernel's vocabulary tiles hold whole groups (BLOCK_V a multiple of GROUP).
GROUP = 64
# z is clamped to [-_LIMIT, _LIMIT], and padded to whole groups with -_LIMIT. An infinite logit
# (an fp16 decoder's output overflows past 65504) then counts as what it is, probability 1 or 0,
# where inf - inf or 0 * -inf would be nan; exp(-_LIMIT - max) is 0 and, unlike -inf, 0 * -_LIMIT
# is 0; a group of 64 such values still sums to a finite float32 (64e36 < 3.4e38). With noise in
# [-2.9, 16.7] a padded column never wins against a real one above -_LIMIT. Finite logits below
# _LIMIT in magnitude are left exactly as they are.
_LIMIT = 1.0e36


def gumbel_max(z: torch.Tensor, keys: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw a column of each row of softmax(z); z [n, V] fp32 (+-inf allowed), keys [n] int32 row
    keys (counter_rng.row_keys). Returns tokens [n] int64, lse [n] = logsumexp(z) and expected [n] =
    E_p[z], both fp32.

    Two-level Gumbel-max. Split the V columns into groups of GROUP; group c has probability
    P_c = sum_{v in c} p_v, so log P_c + lse = logsumexp_{v in c} z_v =: L_c. Draw the group
    c* = argmax_c (L_c + g_c), then the column v* = argmax_{v in c*} (z_v + g'_v), with g, g'
    independent standard Gumbel noise. By the Gumbel-max theorem twice, P(c*) = P_c and
    P(v* | c*) = p_v / P_c, so P(v*) = p_v: an exact sample, as one argmax over all V columns
    would be. It needs V / GROUP + GROUP noise values per row instead of V: hashing every
    (row, column) pair was most of the sampler's time on a CPU. The column noise g' is
    counter_rng's noise of that (row, column), the group noise that of (group_keys, group).

    The group sums give lse and E_p[z] (the entropy is lse - E_p[z]) in the same pass.
    """
    n, v = z.shape
    groups = -(-v // GROUP)
    z3 = z.new_full((n, groups * GROUP), -_LIMIT)
    z3[:, :v] = z
    z3 = z3.clamp_(-_LIMIT, _LIMIT).view(n, groups, GROUP)
    gmax = z3.amax(-1)  # [n, groups], finite: every group has a real column
    e = torch.exp(z3 - gmax[..., None])  # [n, groups, GROUP]
    gsum = e.sum(-1)  # [n, groups]
    gdot = (e * z3).sum(-1)  # [n, groups]
    group_ids = torch.arange(groups, dtype=torch.int64, device=z.device)
    group_noise = counter_rng.gumbel_from_uniform(
        counter_rng.uniform_from_keys(counter_rng.group_keys(keys), group_ids))  # [n, groups]
    group = (gmax + gsum.log() + group_noise).argmax(-1)  # [n]

    rows = torch.arange(n, device=z.device)
    cols = group[:, None] * GROUP + torch.arange(GROUP, device=z.device)  # [n, GROUP]
    noise = counter_rng.gumbel_from_uniform(counter_rng.uniform_from_keys(keys, cols))
    tokens = group * GROUP + (z3[rows, group] + noise).argmax(-1)  # [n]

    top = gmax.amax(-1)  # [n]
    scale = torch.exp(gmax - top[:, None])  # [n, groups]
    total = (gsum * scale).sum(-1)
    return tokens, top + total.log(), (gdot * scale).sum(-1) / total


def sample_reference(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None,
                     temperature: float, seed: int, rows: torch.Tensor) -> SampleOutput:
    """Plain torch: materialize the logits [M, V] in fp32 and z = logits / T, draw with
    `gumbel_max`."""
    logits = h.float() @ W.float().T  # [M, V]
    if b is not None:
        logits = logits + b.float()
    z = logits / temperature
    tokens, lse, expected = gumbel_max(z, counter_rng.row_keys(seed, rows))
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
