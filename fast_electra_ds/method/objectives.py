"""One nn.Module per training mode: a batch in, a loss and metrics out.

  fast-electra  FastElectraObjective(discriminator): the frozen generator corrupted the batch
                outside the engine; this module only scores replaced-token detection (RTD).
  electra       ElectraObjective(generator, discriminator): both models in one module (one
                engine, one optimizer), embeddings shared; L = L_MLM + rtd_weight * L_RTD.
  mlm           MLMObjective(generator): masked-LM training, e.g. of a generator for fast-electra.

Every forward returns {"loss": scalar with graph, **metric sums} (the keys: metrics.py).

Temperature and seed are plain python numbers given per call, not module state, so a checkpoint
holds weights only and the schedule stays with the mode (modes.py).

fused=True (config kernels, resolved by kernel_switch.resolve_kernels) computes the training loss
of the discriminator with the fused RTD kernel (kernel_switch.rtd_loss) instead of `rtd_loss` on
its logits; `rtd_outputs` keeps the reference, for callers that want the logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fast_electra_ds.method import kernel_switch
from fast_electra_ds.method import mlm_head, sampling
from fast_electra_ds.method.models import tie_embeddings
from fast_electra_ds.metrics import count, loss_metrics


def rtd_loss(logits: torch.Tensor, labels: torch.Tensor,
             attention_mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Replaced-token detection loss: the plain-torch reference (a fused kernel must match it).

    logits [B, L] (any float dtype; computed in fp32), labels [B, L] (1 = replaced),
    attention_mask [B, L] (0 on padding). Returns the mean BCE-with-logits over non-padding
    tokens ([CLS]/[SEP] included, as in ELECTRA) and the counts listed in the module doc.
    """
    logits = logits.float()
    replaced = labels > 0.5  # [B, L]
    real = attention_mask.bool()  # [B, L]
    per_token = F.binary_cross_entropy_with_logits(logits, replaced.float(),
                                                   reduction="none")  # [B, L]
    loss_sum = torch.where(real, per_token, 0.0).sum()
    num_tokens = real.sum()
    loss = loss_sum / num_tokens.clamp_min(1)
    hit = (logits > 0) == replaced  # [B, L]
    counts = {
        "rtd_loss_sum": loss_sum.detach().double(),
        "rtd_replaced_total": count(real & replaced),
        "rtd_replaced_correct": count(real & replaced & hit),
        "rtd_original_total": count(real & ~replaced),
        "rtd_original_correct": count(real & ~replaced & hit),
    }
    return loss, counts


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor,
             weights: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Weighted cross-entropy over the prediction slots.

    logits [B, K, V], labels [B, K] (original tokens), weights [B, K] (0 on unused slots).
    Returns the mean over used slots (fp32) and {mlm_loss_sum, num_slots, mlm_correct}.
    """
    b, k, v = logits.shape
    per_slot = F.cross_entropy(logits.float().reshape(b * k, v), labels.reshape(b * k),
                               reduction="none").view(b, k)  # [B, K]
    loss_sum = (per_slot * weights).sum()
    loss = loss_sum / weights.sum().clamp_min(1)
    return loss, {"mlm_loss_sum": loss_sum.detach().double(),
                  **sampling.mlm_counts(logits, labels, weights)}


class _DiscriminatorObjective(nn.Module):
    """What the objectives with a discriminator share: its RTD loss on a corrupted batch.

    fused: the training loss through the fused RTD kernel (see the module doc).
    """

    discriminator: nn.Module
    fused: bool

    def rtd_outputs(self, corrupted_ids: torch.Tensor, attention_mask: torch.Tensor,
                    rtd_labels: torch.Tensor, token_type_ids: torch.Tensor) -> dict:
        """{"loss": the RTD loss, "logits": [B, L], RTD counts}: the reference, with logits."""
        logits = self.discriminator(input_ids=corrupted_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids).logits  # [B, L]
        loss, counts = rtd_loss(logits, rtd_labels, attention_mask)
        return {"loss": loss, "logits": logits, **counts}

    def _rtd_loss(self, corrupted_ids: torch.Tensor, attention_mask: torch.Tensor,
                  rtd_labels: torch.Tensor, token_type_ids: torch.Tensor) -> dict:
        """{"loss": the RTD loss, RTD counts} for training, through the kernel when fused."""
        if self.fused:
            return self._rtd_loss_fused(corrupted_ids, attention_mask, rtd_labels,
                                        token_type_ids)
        out = self.rtd_outputs(corrupted_ids, attention_mask, rtd_labels, token_type_ids)
        del out["logits"]  # not a summable metric; the engine's output stays small
        return out

    def _rtd_loss_fused(self, corrupted_ids: torch.Tensor, attention_mask: torch.Tensor,
                        rtd_labels: torch.Tensor, token_type_ids: torch.Tensor) -> dict:
        """`rtd_outputs` without the logits, through the fused RTD kernel.

        The discriminator (an ElectraForPreTraining) runs up to the input of its final H -> 1
        projection: encoder, then the prediction head's dense layer and activation. The kernel
        does the projection, the masked BCE, the counts and their gradients in one read of that
        input. Under ZeRO-3 the projection's parameters, read here outside their module's
        forward, are gathered by DeepSpeed on access (it registers them as external parameters
        of the running module).
        """
        hidden = self.discriminator.electra(input_ids=corrupted_ids,
                                            attention_mask=attention_mask,
                                            token_type_ids=token_type_ids,
                                            return_dict=True).last_hidden_state  # [B, L, H]
        head = self.discriminator.discriminator_predictions
        x = head.activation(head.dense(hidden))  # [B, L, H]
        loss, counts = kernel_switch.rtd_loss(x, head.dense_prediction.weight[0],
                                              head.dense_prediction.bias, rtd_labels,
                                              attention_mask)
        metrics = {f"rtd_{name}": n.double() for name, n in counts.items()}
        # the kernel returns the mean over real tokens; the metric is the sum (metrics.py)
        num_real = metrics["rtd_replaced_total"] + metrics["rtd_original_total"]
        return {"loss": loss, "rtd_loss_sum": loss.detach().double() * num_real, **metrics}


class FastElectraObjective(_DiscriminatorObjective):
    """mode=fast-electra: the discriminator alone; the engine wraps this module."""

    def __init__(self, discriminator: nn.Module, fused: bool = False):
        super().__init__()
        self.discriminator = discriminator
        self.fused = fused

    def forward(self, corrupted_ids: torch.Tensor, attention_mask: torch.Tensor,
                rtd_labels: torch.Tensor, token_type_ids: torch.Tensor) -> dict:
        """corrupted_ids [B, L], attention_mask [B, L], rtd_labels [B, L] from
        FrozenGenerator.corrupt; token_type_ids [B, L] the batch's segments."""
        out = self._rtd_loss(corrupted_ids, attention_mask, rtd_labels, token_type_ids)
        return {**out, **loss_metrics(out["loss"])}


class ElectraObjective(_DiscriminatorObjective):
    """mode=electra: generator and discriminator trained jointly, as in the original ELECTRA.

    The generator's embeddings become the discriminator's at construction (`tie_embeddings`).
    Sampling is outside the graph: the discriminator's loss sends no gradient to the generator
    except through the shared embeddings.

    fused: the discriminator's loss through the fused RTD kernel (see the module doc). Sampling
    stays eager here: the MLM loss needs the generator's [B, K, V] logits anyway, so the fused
    sampler's saving (never building them) does not apply.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, rtd_weight: float = 50.0,
                 fused: bool = False):
        super().__init__()
        tie_embeddings(generator, discriminator)
        self.generator = generator
        self.discriminator = discriminator
        self.rtd_weight = rtd_weight
        self.fused = fused

    def forward(self, input_ids: torch.Tensor, masked_ids: torch.Tensor,
                attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                positions: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                sample_ids: torch.Tensor, temperature: float, seed: int) -> dict:
        """The fields of a MaskedBatch (all [B, L] or [B, K], sample_ids [B]), T and the seed."""
        gen_logits = mlm_head.masked_logits(self.generator, masked_ids, attention_mask,
                                            positions, token_type_ids)  # [B, K, V]
        mlm, mlm_metrics = mlm_loss(gen_logits, labels, weights)
        corrupted_ids, rtd_labels, gen_metrics = sampling.corrupt_from_logits(
            gen_logits.detach(), input_ids=input_ids, positions=positions, weights=weights,
            sample_ids=sample_ids, temperature=temperature, seed=seed)  # [B, L], [B, L]
        rtd_metrics = self._rtd_loss(corrupted_ids, attention_mask, rtd_labels, token_type_ids)
        loss = mlm + self.rtd_weight * rtd_metrics.pop("loss")
        return {"loss": loss, **loss_metrics(loss), **mlm_metrics, **gen_metrics, **rtd_metrics}


class MLMObjective(nn.Module):
    """mode=mlm: a masked LM on its own (save the generator with save_pretrained afterwards)."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, masked_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor,
                weights: torch.Tensor) -> dict:
        logits = mlm_head.masked_logits(self.generator, masked_ids, attention_mask, positions,
                                        token_type_ids)  # [B, K, V]
        loss, metrics = mlm_loss(logits, labels, weights)
        return {"loss": loss, **loss_metrics(loss), **metrics}
