"""Fused Triton kernels of fast_electra_ds, each beside its plain-torch reference.

sampler    fused_sample: two-level Gumbel-max sampling + logsumexp + expected logit over the
           vocabulary, streamed in tiles without materializing [M, V] logits
rtd_loss   fused_rtd_loss: the discriminator's final projection, masked BCE loss, accuracy counts
           and gradients in one pass over the hidden states

Triton is optional: without it (or on CPU tensors) the wrappers run the references.
"""

from fast_electra_kernels.rtd_loss import FusedRTDLoss, fused_rtd_loss, rtd_loss_reference
from fast_electra_kernels.sampler import SampleOutput, fused_sample, sample_reference

__all__ = [
    "FusedRTDLoss",
    "SampleOutput",
    "fused_rtd_loss",
    "fused_sample",
    "rtd_loss_reference",
    "sample_reference",
]
