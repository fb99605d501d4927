"""A HF masked LM's output head, applied at the selected positions only.

`masked_logits` runs a masked LM but applies its vocabulary projection only at the K selected
positions of each sequence ([B, K, V] instead of [B, L, V]: the projection is most of a small
generator's cost). `masked_hidden` and `output_projection` expose the two halves for the fused
sampling kernel. `mlm_head` knows where those parts live in the architectures listed there (BERT,
RoBERTa, XLM-R, DistilBERT, ELECTRA); any other masked LM falls back to full logits, gathered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

_log = logging.getLogger(__name__)

_fallback_warned: set[str] = set()


# --------------------------------------------------------------------------------------------
# The masked-LM head, applied at the selected positions only


@dataclass(frozen=True)
class MLMHead:
    """A masked LM split into the parts the masked-only forward needs."""

    encoder: nn.Module  # (input_ids, attention_mask) -> output whose [0] is hidden [B, L, H]
    transform: Callable[[torch.Tensor], torch.Tensor]  # [..., H] -> [..., E], before the decoder
    decoder: nn.Linear  # E -> V, the output projection (usually tied to the word embeddings)


def unwrap(model: nn.Module) -> nn.Module:
    """The HF model inside a DeepSpeed InferenceEngine (or the model itself)."""
    from transformers import PreTrainedModel

    while not isinstance(model, PreTrainedModel) and hasattr(model, "module"):
        model = model.module
    return model


def mlm_head(model: nn.Module) -> MLMHead | None:
    """The parts of a supported masked LM, or None for an architecture not listed here."""
    from transformers import (
        BertForMaskedLM,
        DistilBertForMaskedLM,
        ElectraForMaskedLM,
        RobertaForMaskedLM,
        XLMRobertaForMaskedLM,
    )
    from transformers.activations import gelu

    model = unwrap(model)
    if isinstance(model, ElectraForMaskedLM):
        return MLMHead(model.electra, model.generator_predictions, model.generator_lm_head)
    if isinstance(model, BertForMaskedLM):
        head = model.cls.predictions
        return MLMHead(model.bert, head.transform, head.decoder)
    if isinstance(model, (RobertaForMaskedLM, XLMRobertaForMaskedLM)):
        lm = model.lm_head  # RobertaLMHead.forward without its decoder: dense, gelu, layer_norm
        return MLMHead(model.roberta, lambda h: lm.layer_norm(gelu(lm.dense(h))), lm.decoder)
    if isinstance(model, DistilBertForMaskedLM):
        return MLMHead(model.distilbert,
                       lambda h: model.vocab_layer_norm(model.activation(model.vocab_transform(h))),
                       model.vocab_projector)
    return None


def _require_head(model: nn.Module) -> MLMHead:
    head = mlm_head(model)
    if head is None:
        raise ValueError(f"{type(unwrap(model)).__name__} has no masked-only head path; use "
                         f"masked_logits, which falls back to full logits")
    return head


def head_transform(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Encoder states [..., H] -> the decoder's input [..., E] (the head minus its projection)."""
    return _require_head(model).transform(hidden)


def output_projection(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [V, E], bias [V]) of the output projection: logits = h @ weight.T + bias.

    Direct parameter access, meant for the frozen generator (never ZeRO-partitioned); a ZeRO-3
    trained model would need deepspeed.zero.GatheredParameters around it.
    """
    decoder = _require_head(model).decoder
    bias = decoder.bias if decoder.bias is not None else decoder.weight.new_zeros(
        decoder.weight.shape[0])
    return decoder.weight, bias


def segment_kwargs(model: nn.Module, token_type_ids: torch.Tensor | None) -> dict:
    """{"token_type_ids": ...} for a model with segment embeddings, else {}: RoBERTa-style
    masked LMs have one token type (type_vocab_size 1), DistilBERT none, and a type-1 id would
    index past their table."""
    if token_type_ids is None or getattr(unwrap(model).config, "type_vocab_size", 0) < 2:
        return {}
    return {"token_type_ids": token_type_ids}


def masked_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  positions: torch.Tensor, token_type_ids: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """[B, K, E] decoder inputs at `positions` [B, K]: encoder, gather, head transform."""
    head = _require_head(model)
    hidden = head.encoder(input_ids=input_ids, attention_mask=attention_mask,
                          **segment_kwargs(model, token_type_ids))[0]  # [B, L, H]
    index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # [B, K, H]
    return head.transform(torch.gather(hidden, 1, index))  # [B, K, E]


def masked_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  positions: torch.Tensor, token_type_ids: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """[B, K, V] logits of a masked LM at `positions` [B, K], in the model's dtype.

    Supported architectures (see `mlm_head`) run the vocabulary projection on the K selected
    positions only. Any other masked LM computes logits everywhere, then gathers (warned once).
    """
    head = mlm_head(model)
    if head is not None:
        # the decoder is called as a module, not as F.linear on its weight: under ZeRO-3 (the
        # trained generator of mode=electra/mlm) a module call is what gathers its parameters
        return head.decoder(masked_hidden(model, input_ids, attention_mask, positions,
                                          token_type_ids))
    name = type(unwrap(model)).__name__
    if name not in _fallback_warned:
        _fallback_warned.add(name)
        _log.warning("%s: no masked-only head path; computing logits at every position, then "
                     "gathering (slower, same result)", name)
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   **segment_kwargs(model, token_type_ids)).logits  # [B, L, V]
    index = positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])  # [B, K, V]
    return torch.gather(logits, 1, index)


