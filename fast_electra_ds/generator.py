"""The auxiliary masked LM and how replacements are drawn from it.

Three layers, each usable alone:

  masked_logits      run a HF masked LM, but apply its output head only at the K selected
                     positions of each sequence ([B, K, V] instead of [B, L, V]: the vocabulary
                     projection is most of a small generator's cost). `masked_hidden`,
                     `output_projection` expose the two halves for a fused sampling kernel.
  sample_replacements  Gumbel-max sampling from softmax(logits / T) with counter-based noise
                     (rng.py): a draw depends only on (seed, sample id, slot, vocab id).
  corrupt_from_logits  ELECTRA's corruption: every selected position of the ORIGINAL sequence
                     gets a sample; the RTD label is 1 where the sample differs from the original.
  corrupt            all of the above for one MaskedBatch and any masked LM (frozen or trained);
                     with fused=True (config kernels) the fused Triton sampler replaces the
                     logits and sampling (fused.py): same draws, no [B, K, V] tensor.

`FrozenGenerator` (mode=fast-electra) loads a trained masked LM, checks that it fits the data,
freezes it, and runs it outside the training engine. The jointly trained generator of
mode=electra uses the same functions from objectives.py.

Metric keys returned here are sums and counts; objectives.finalize_metrics turns them into rates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fast_electra_ds import fused, rng
from fast_electra_ds.errors import UserError
from fast_electra_ds.masking import MaskedBatch

_log = logging.getLogger(__name__)

# Rows of [*, V] fp32 scratch handled at once when sampling: bounds the temporary memory of the
# eager sampler (logits copy, noise, softmax) to a few hundred MB whatever B * K is.
_SAMPLE_CHUNK_ELEMENTS = 1 << 25
_SAMPLE_CHUNK_ELEMENTS_CPU = 1 << 18

# Files whose presence in a model folder means it carries a tokenizer to check against the data.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                    "spiece.model", "sentencepiece.bpe.model")

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
    from transformers import (BertForMaskedLM, DistilBertForMaskedLM, ElectraForMaskedLM,
                              RobertaForMaskedLM, XLMRobertaForMaskedLM)
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


# --------------------------------------------------------------------------------------------
# Sampling and corruption


@torch.no_grad()
def sample_replacements(logits: torch.Tensor, *, temperature: float, seed: int,
                        sample_ids: torch.Tensor,
                        weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Draw one token per slot from softmax(logits / T), reproducibly.

    logits: [B, K, V] (any float dtype; the arithmetic is fp32). sample_ids: [B] global sample
    index of each sequence; slot k of sample s uses the noise row s * K + k, so a draw does not
    depend on batch composition, rank layout or device. weights: [B, K], 0 on unused slots
    (default: all used); only used slots count in the stats.

    Returns sampled [B, K] int64 and stats {"gen_entropy_sum": sum over used slots of the
    entropy (nats) of softmax(logits / T)}, a float64 scalar tensor.
    """
    assert temperature > 0, temperature
    b, k, v = logits.shape
    rows = noise_rows(sample_ids.to(logits.device), k)  # [B*K]
    flat = logits.reshape(b * k, v)  # [N, V]
    sampled = torch.empty(b * k, dtype=torch.int64, device=logits.device)  # [N]
    entropy = torch.empty(b * k, dtype=torch.float32, device=logits.device)  # [N]
    # on CPU, chunks small enough that the in-place noise passes stay in cache
    chunk_elements = _SAMPLE_CHUNK_ELEMENTS if logits.is_cuda else _SAMPLE_CHUNK_ELEMENTS_CPU
    chunk = max(1, chunk_elements // v)
    for start in range(0, b * k, chunk):
        end = min(start + chunk, b * k)
        z = flat[start:end].float() / temperature  # [n, V]
        # Gumbel-max: argmax(z + g) with g ~ Gumbel(0, 1) iid is an exact draw from softmax(z)
        sampled[start:end] = (z + rng.gumbel_noise(seed, rows[start:end], v)).argmax(-1)
        entropy[start:end] = torch.special.entr(torch.softmax(z, dim=-1)).sum(-1)
    sampled = sampled.view(b, k)
    used = torch.ones(b, k, device=logits.device) if weights is None else (weights > 0).float()
    stats = {"gen_entropy_sum": (entropy.view(b, k) * used).sum().double()}
    return sampled, stats


def replace_at_positions(input_ids: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor,
                         sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's input and targets.

    input_ids [B, L] are the ORIGINAL tokens (not the generator's masked input): every used slot
    (weights > 0) of `positions` [B, K] takes its sample [B, K], whether the masker turned it into
    [MASK] or kept it (ELECTRA). Returns corrupted_ids [B, L] int64 and rtd_labels [B, L] float32,
    1.0 where the token now differs from the original (a sample equal to the original is 0).
    """
    b, length = input_ids.shape
    used = weights > 0  # [B, K]
    # Unused slots write into a scratch column L that is then dropped: no host sync (nonzero),
    # and an unused slot's dummy position can never overwrite a used one.
    index = torch.where(used, positions, torch.full_like(positions, length))  # [B, K]
    extended = torch.cat([input_ids, input_ids.new_zeros(b, 1)], dim=1)  # [B, L + 1]
    extended.scatter_(1, index, sampled.to(input_ids.dtype))
    corrupted = extended[:, :length]  # [B, L]
    rtd_labels = (corrupted != input_ids).float()  # [B, L]
    return corrupted, rtd_labels


@torch.no_grad()
def mlm_counts(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> dict:
    """{"num_slots", "mlm_correct"}: used slots, and those where argmax(logits) is the label."""
    used = weights > 0  # [B, K]
    return {"num_slots": used.sum().double(),
            "mlm_correct": ((logits.argmax(-1) == labels) & used).sum().double()}


@torch.no_grad()
def corrupt_from_logits(logits: torch.Tensor, *, input_ids: torch.Tensor,
                        positions: torch.Tensor, weights: torch.Tensor, sample_ids: torch.Tensor,
                        temperature: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Generator logits [B, K, V] -> (corrupted_ids [B, L], rtd_labels [B, L], metrics).

    No gradient flows through sampling (ELECTRA). metrics: gen_entropy_sum (entropy at T over used
    slots) and gen_num_replaced (used slots whose sample differs from the original; since used
    positions are distinct, this is rtd_labels.sum()).
    """
    sampled, stats = sample_replacements(logits, temperature=temperature, seed=seed,
                                         sample_ids=sample_ids, weights=weights)
    corrupted, rtd_labels = replace_at_positions(input_ids, positions, weights, sampled)
    metrics = {**stats, "gen_num_replaced": rtd_labels.sum().double()}
    return corrupted, rtd_labels, metrics


def noise_rows(sample_ids: torch.Tensor, num_slots: int) -> torch.Tensor:
    """[B * K] int64 RNG rows: slot k of sample s draws with row s * K + k (see
    sample_replacements), whichever sampler runs."""
    slots = torch.arange(num_slots, dtype=torch.int64, device=sample_ids.device)
    return (sample_ids.to(torch.int64)[:, None] * num_slots + slots).reshape(-1)


@torch.no_grad()  # not inference_mode: the outputs feed the discriminator's backward pass
def corrupt(model: nn.Module, batch: MaskedBatch, *, temperature: float, seed: int,
            fused: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Run a masked LM on `batch` and build the discriminator's input from its samples.

    Returns corrupted_ids [B, L] int64, rtd_labels [B, L] float32 and metrics (float64 scalar
    tensors, sums and counts): num_slots, mlm_correct (argmax at a used slot is the original
    token), gen_entropy_sum (at T), gen_num_replaced. `model` and `batch` on the same device.

    fused: sample with the fused Triton kernel (fused.sample) instead of building [B, K, V]
    logits; needs an architecture with a masked-only head (`mlm_head`) and parameters that are
    not ZeRO-3 partitioned (`output_projection`), as a frozen generator's are.
    """
    if fused:
        return _corrupt_fused(model, batch, temperature=temperature, seed=seed)
    logits = masked_logits(model, batch.masked_ids, batch.attention_mask, batch.positions,
                           batch.token_type_ids)  # [B, K, V]
    corrupted, rtd_labels, metrics = corrupt_from_logits(
        logits, input_ids=batch.input_ids, positions=batch.positions, weights=batch.weights,
        sample_ids=batch.sample_ids, temperature=temperature, seed=seed)
    return corrupted, rtd_labels, {**mlm_counts(logits, batch.labels, batch.weights), **metrics}


def _corrupt_fused(model: nn.Module, batch: MaskedBatch, *, temperature: float,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """`corrupt` through the fused sampler: the same outputs from the decoder's input [B, K, E].

    Every slot is sampled, used or not, as in the eager path: static shapes, no host sync to
    pick the used ones (with packed data almost all slots are used); unused slots are dropped by
    replace_at_positions and left out of the metrics.
    """
    assert temperature > 0, temperature
    h = masked_hidden(model, batch.masked_ids, batch.attention_mask, batch.positions,
                      batch.token_type_ids)  # [B, K, E]
    b, k, e = h.shape
    weight, bias = output_projection(model)  # [V, E], [V]
    out = fused.sample(h.reshape(b * k, e), weight, bias, temperature=temperature, seed=seed,
                       rows=noise_rows(batch.sample_ids.to(h.device), k))  # each [B * K]
    sampled = out.tokens.view(b, k)
    corrupted, rtd_labels = replace_at_positions(batch.input_ids, batch.positions, batch.weights,
                                                 sampled)
    used = batch.weights > 0  # [B, K]
    metrics = {
        "num_slots": used.sum().double(),
        "mlm_correct": ((out.argmax.view(b, k) == batch.labels) & used).sum().double(),
        "gen_entropy_sum": (out.entropy.view(b, k) * used).sum().double(),
        "gen_num_replaced": rtd_labels.sum().double(),
    }
    return corrupted, rtd_labels, metrics


# --------------------------------------------------------------------------------------------
# The frozen generator of mode=fast-electra


def _has_injection_policy(model: nn.Module) -> bool:
    """Whether DeepSpeed-Inference has a kernel-injection policy for this model's layers.

    DeepSpeed's HFBertLayerPolicy matches transformers' BertLayer and RobertaLayer, and
    HFDistilBertLayerPolicy DistilBERT's TransformerBlock; nothing matches ELECTRA, DeBERTa or
    XLM-R layers (own classes in transformers >= 5).
    """
    from transformers.models.bert.modeling_bert import BertLayer
    from transformers.models.distilbert.modeling_distilbert import TransformerBlock
    from transformers.models.roberta.modeling_roberta import RobertaLayer

    return any(type(m) in (BertLayer, RobertaLayer, TransformerBlock) for m in model.modules())


class FrozenGenerator:
    """A trained masked LM used only to propose replacements (mode=fast-electra).

    Deliberately not an nn.Module: it cannot end up in a parent module's parameters, hence in an
    optimizer or in deepspeed.initialize (which would cast it and, under ZeRO-3, shard it).
    """

    def __init__(self, model: nn.Module, *, device: torch.device, source: str, runtime: str,
                 fused: bool = False):
        self.model = model  # the HF model, or a DeepSpeed InferenceEngine around it
        self.hf_model = unwrap(model)
        self.device = device
        self.source = source
        self.runtime = runtime  # what runs it, for logs: e.g. "torch cpu float32"
        self.fused = fused  # sample with the fused Triton kernel (config kernels)

    @classmethod
    def load(cls, path_or_hub_id: str, *, vocab_size: int,
             special_ids: Mapping[str, int | None],
             device: torch.device | str = "cpu", dtype: str = "auto", kernel_inject: bool = True,
             vocab: Mapping[str, int] | None = None, fused: bool = False,
             logger: Callable[[str], None] = print) -> "FrozenGenerator":
        """Load, check against the data, and freeze a HF masked LM.

        special_ids: the data's special-token ids by name (pad, cls, sep, mask, unk; None for
        one the data lacks); each must match the folder's tokenizer when it has one.
        vocab: optionally the data's full token -> id map, compared with that tokenizer's.
        dtype: auto (fp16 on CUDA, fp32 on CPU), fp16 (CUDA only), bf16 or fp32.
        fused: sample with the fused Triton kernel (fast_electra_ds.fused.resolve_kernels says
        whether it runs); an architecture without a masked-only head keeps the eager sampler.
        """
        device = torch.device(device)
        on_cuda = device.type == "cuda"
        if dtype not in ("auto", "fp16", "bf16", "fp32"):
            raise UserError(f"generator.inference_dtype={dtype!r}: expected auto, fp16, bf16 or "
                            f"fp32")
        if dtype == "fp16" and not on_cuda:
            raise UserError("generator.inference_dtype=fp16 needs a CUDA device (fp16 matmuls "
                            "are not supported on CPU): use bf16 or fp32 (or auto)")
        torch_dtype = {"auto": torch.float16 if on_cuda else torch.float32,
                       "fp16": torch.float16, "bf16": torch.bfloat16,
                       "fp32": torch.float32}[dtype]

        model, source = load_masked_lm(path_or_hub_id, vocab_size=vocab_size,
                                       special_ids=special_ids, vocab=vocab, logger=logger)

        if on_cuda:
            model, runtime = _init_inference(
                model, lambda: _load_frozen(source), device=device,
                dtype=torch_dtype, kernel_inject=kernel_inject, special_ids=special_ids,
                logger=logger)
        else:
            # CPU: a plain module. DeepSpeed-Inference on CPU brings no kernels of its own (no
            # injection without a GPU), so the wrapper would only add a dependency to this path.
            model = model.to(device=device, dtype=torch_dtype)
            runtime = f"torch cpu {str(torch_dtype).removeprefix('torch.')}"
        logger(f"generator: {type(unwrap(model)).__name__} from {source} "
               f"({sum(p.numel() for p in unwrap(model).parameters()) / 1e6:.1f}M params, frozen), "
               f"running on {runtime}")
        if fused and mlm_head(model) is None:
            # the kernel takes the decoder's input and weight, which only `mlm_head` can split
            logger(f"generator: {type(unwrap(model)).__name__} has no masked-only head path; "
                   f"sampling with the eager sampler, not the fused kernel")
            fused = False
        return cls(model, device=device, source=source, runtime=runtime, fused=fused)

    @property
    def vocab_size(self) -> int:
        return self.hf_model.config.vocab_size

    @property
    def max_positions(self) -> int:
        """Longest sequence the generator's position embeddings cover."""
        config = self.hf_model.config
        if config.model_type in ("roberta", "xlm-roberta", "camembert"):
            # RoBERTa-style position ids start after the padding index: pad_token_id + 1 rows
            # of the table are never used for real positions
            return config.max_position_embeddings - config.pad_token_id - 1
        return config.max_position_embeddings

    def check_seq_len(self, seq_len: int) -> None:
        if seq_len > self.max_positions:
            raise UserError(f"data.seq_len={seq_len} exceeds what the generator {self.source} "
                            f"supports ({self.max_positions} positions): lower data.seq_len (and "
                            f"re-prepare the data) or use a generator with longer positions")

    def corrupt(self, batch: MaskedBatch, *, temperature: float,
                seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """`corrupt` (below) with this generator, on its device."""
        return corrupt(self.model, batch.to(self.device, non_blocking=True),
                       temperature=temperature, seed=seed, fused=self.fused)


def load_masked_lm(path_or_hub_id: str, *, vocab_size: int, special_ids: Mapping[str, int | None],
                   vocab: Mapping[str, int] | None = None, logger: Callable[[str], None] = print,
                   what: str = "generator.path") -> tuple[nn.Module, str]:
    """A HF masked LM checked against the data (vocabulary, special tokens, tokenizer), frozen,
    fp32 on CPU, and where it came from. `what` names the setting in error messages."""
    source = _resolve_source(path_or_hub_id, what)
    _read_config(source, vocab_size=vocab_size, what=what)  # cheap checks before any weights
    _check_tokenizer(source, vocab_size=vocab_size, special_ids=special_ids, vocab=vocab,
                     logger=logger, what=what)
    return _load_frozen(source, what), source


def _resolve_source(path_or_hub_id: str, what: str = "generator.path") -> str:
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise UserError(f"{what}: {path_or_hub_id} is a file; it must be the folder "
                        f"written by save_pretrained (config.json + weights)")
    if path_or_hub_id.startswith((".", "/", "~")):
        raise UserError(f"{what}: {path_or_hub_id} does not exist; point it at a masked-LM "
                        f"folder (e.g. the exported generator of a mode=mlm run)")
    return path_or_hub_id  # a hub id


def _read_config(source: str, *, vocab_size: int, what: str = "generator.path"):
    """The model config at `source`; UserError unless it is a masked LM with the data's vocab."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise UserError(f"{what}: cannot read a model config from {source} ({e}); it must "
                        f"be a HF masked-LM folder (config.json + weights) or a reachable hub "
                        f"id") from None
    if config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise UserError(f"{what}: {source} holds a {config.model_type!r} model, which has "
                        f"no masked-LM head in transformers; use a masked LM (BERT, RoBERTa, an "
                        f"ELECTRA generator, ... or the output of a mode=mlm run)")
    if config.vocab_size != vocab_size:
        raise UserError(f"{what}: {source} has a vocabulary of {config.vocab_size} tokens "
                        f"but the data has {vocab_size}: the generator must use the data's "
                        f"tokenizer (prepare the data with it, or train a generator with mode=mlm)")
    return config


def _check_tokenizer(source: str, *, vocab_size: int, special_ids: Mapping[str, int | None],
                     vocab: Mapping[str, int] | None, logger: Callable[[str], None],
                     what: str = "generator.path") -> None:
    """UserError if the generator's own tokenizer (when it ships one) disagrees with the data."""
    from transformers import AutoTokenizer

    local = Path(source).is_dir()
    if local and not any((Path(source) / f).exists() for f in _TOKENIZER_FILES):
        logger(f"generator: {source} has no tokenizer files; trusting that its vocabulary is the "
               f"data's (only the vocab size is checked)")
        return
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        if local:
            raise UserError(f"{what}: {source} has tokenizer files that do not load "
                            f"({e}); fix or remove them") from None
        logger(f"generator: no tokenizer found for {source}; only the vocab size is checked")
        return
    problems = []
    if len(tokenizer) != vocab_size:
        problems.append(f"its tokenizer has {len(tokenizer)} tokens, the data's {vocab_size}")
    for name, data_id in special_ids.items():
        gen_id = getattr(tokenizer, f"{name}_token_id", None)
        # a token the data lacks (None, e.g. no [UNK] in a byte-level vocabulary) never occurs in
        # it, so the generator's id for it cannot clash
        if data_id is not None and gen_id != data_id:
            problems.append(f"[{name.upper()}] is id {gen_id} there, {data_id} in the data")
    if vocab is not None:
        gen_vocab = tokenizer.get_vocab()
        differ = sorted(t for t in set(vocab) | set(gen_vocab) if vocab.get(t) != gen_vocab.get(t))
        if differ:
            problems.append(f"{len(differ)} tokens have different ids (e.g. "
                            f"{', '.join(repr(t) for t in differ[:5])})")
    if problems:
        raise UserError(f"{what}: {source} was trained with another tokenizer than the "
                        "data: " + "; ".join(problems) + ". Prepare the data with the "
                        "model's tokenizer, or use a model trained with this tokenizer")


def _load_frozen(source: str, what: str = "generator.path") -> nn.Module:
    """The masked LM at `source` in fp32 on CPU, in eval mode, with gradients off."""
    from transformers import AutoModelForMaskedLM

    try:
        model, info = AutoModelForMaskedLM.from_pretrained(source, dtype=torch.float32,
                                                           output_loading_info=True)
    except (OSError, ValueError) as e:
        raise UserError(f"{what}: cannot load a masked LM from {source} ({e}); it must "
                        f"be a folder written by save_pretrained (config.json + weights)") from None
    # The real test of "is a masked LM": a folder saved from another head class of the same
    # architecture (e.g. ElectraForPreTraining, a discriminator) loads too, with a random head.
    if info["missing_keys"]:
        saved_as = ", ".join(model.config.architectures or ["an unknown class"])
        raise UserError(f"{what}: {source} holds {saved_as}, not a trained masked LM: "
                        f"{', '.join(sorted(info['missing_keys'])[:4])} would be random. Point "
                        f"{what} at a masked-LM folder (an ELECTRA *generator*, BERT, "
                        f"RoBERTa, ..., or the output of a mode=mlm run)")
    model.eval()
    model.requires_grad_(False)
    return model


def _init_inference(model: nn.Module, reload: Callable[[], nn.Module], *, device: torch.device,
                    dtype: torch.dtype, kernel_inject: bool,
                    special_ids: Mapping[str, int | None],
                    logger: Callable[[str], None]) -> tuple[nn.Module, str]:
    """Wrap `model` in DeepSpeed-Inference on `device`: with kernel injection when possible.

    Injection rewrites the model's layers in place, so after a failure the model is re-created
    with `reload` rather than reused. "Possible" also means the injected model agrees with the
    plain one on a probe batch: injection has broken silently with new transformers releases.
    """
    import deepspeed

    name = type(model).__name__
    dtype_name = str(dtype).removeprefix("torch.")
    if kernel_inject and not _has_injection_policy(model):
        logger(f"generator: DeepSpeed has no kernel-injection policy for {name}; using "
               f"DeepSpeed-Inference without injection")
    elif kernel_inject:
        try:
            model = model.to(device=device, dtype=dtype)
            probe = _probe_batch(model, device=device, special_ids=special_ids)
            reference = torch.softmax(masked_logits(model, *probe).float(), dim=-1)  # [2, K, V]
            engine = deepspeed.init_inference(model, dtype=dtype, replace_with_kernel_inject=True)
            injected = torch.softmax(masked_logits(engine, *probe).float(), dim=-1)
            distance = 0.5 * (injected - reference).abs().sum(-1).max().item()
            if not distance < 0.05:
                raise RuntimeError(f"injected model disagrees with the plain one (total "
                                   f"variation {distance:.3f})")
            logger(f"generator: DeepSpeed-Inference with kernel injection ({dtype_name})")
            return engine, f"deepspeed-inference kernel-inject {device} {dtype_name}"
        except Exception as e:  # noqa: BLE001 -- any failure of injection means: run without it
            logger(f"generator: kernel injection failed for {name} ({type(e).__name__}: {e}); "
                   f"falling back to DeepSpeed-Inference without injection")
            model = engine = None  # drop the half-rewritten model before loading a fresh copy
            torch.cuda.empty_cache()
            model = reload()
    model = model.to(device=device, dtype=dtype)
    engine = deepspeed.init_inference(model, dtype=dtype, replace_with_kernel_inject=False)
    logger(f"generator: DeepSpeed-Inference without kernel injection ({dtype_name})")
    return engine, f"deepspeed-inference {device} {dtype_name}"


def _probe_batch(model: nn.Module, *, device: torch.device,
                 special_ids: Mapping[str, int | None]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed 2-row batch (the second half-padded) for comparing two runs of a model."""
    vocab_size = model.config.vocab_size
    length = 16
    gen = torch.Generator().manual_seed(0)
    ordinary = torch.tensor(sorted(set(range(vocab_size)) - set(special_ids.values())))
    input_ids = ordinary[torch.randint(len(ordinary), (2, length), generator=gen)]  # [2, L]
    attention_mask = torch.ones(2, length, dtype=torch.int64)  # [2, L]
    attention_mask[1, length // 2:] = 0
    if special_ids.get("pad") is not None:
        input_ids[1, length // 2:] = special_ids["pad"]
    positions = torch.arange(length // 2).expand(2, -1).contiguous()  # [2, K]
    return input_ids.to(device), attention_mask.to(device), positions.to(device)
