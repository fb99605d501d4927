"""The frozen generator of mode=fast-electra: a trained masked LM, loaded, checked against the
data, frozen, and run outside the training engine (fp16 through DeepSpeed-Inference on GPU).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from fast_electra_ds.data.masking import MaskedBatch
from fast_electra_ds.errors import UserError
from fast_electra_ds.method.mlm_head import masked_logits, mlm_head, unwrap
from fast_electra_ds.method.pretrained import check_tokenizer, read_model_config, resolve_source
from fast_electra_ds.method.sampling import corrupt



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
        self.compiled = False  # encoder and eager sampler through torch.compile (`compile`)

    @classmethod
    def load(cls, path_or_hub_id: str, *, vocab_size: int,
             special_ids: Mapping[str, int | None],
             device: torch.device | str = "cpu", dtype: str = "auto", kernel_inject: bool = True,
             vocab: Mapping[str, int] | None = None, fused: bool = False,
             attn_implementation: str = "sdpa",
             logger: Callable[[str], None] = print) -> "FrozenGenerator":
        """Load, check against the data, and freeze a HF masked LM.

        special_ids: the data's special-token ids by name (pad, cls, sep, mask, unk; None for
        one the data lacks); each must match the folder's tokenizer when it has one.
        vocab: optionally the data's full token -> id map, compared with that tokenizer's.
        dtype: auto (fp16 on CUDA, fp32 on CPU), fp16, bf16 or fp32. A weight beyond the dtype's
        range (fp16: 65504) is refused (`check_range`).
        fused: sample with the fused Triton kernel (kernel_switch.resolve_kernels says whether it
        runs); an architecture without a masked-only head keeps the eager sampler.
        attn_implementation: a resolved one (models.resolve_attention).
        """
        device = torch.device(device)
        on_cuda = device.type == "cuda"
        if dtype not in ("auto", "fp16", "bf16", "fp32"):
            raise UserError(f"generator.inference_dtype={dtype!r}: expected auto, fp16, bf16 or "
                            f"fp32")
        torch_dtype = {"auto": torch.float16 if on_cuda else torch.float32,
                       "fp16": torch.float16, "bf16": torch.bfloat16,
                       "fp32": torch.float32}[dtype]

        model, source = load_masked_lm(path_or_hub_id, vocab_size=vocab_size,
                                       special_ids=special_ids, vocab=vocab, logger=logger,
                                       attn_implementation=attn_implementation)
        check_range(model, torch_dtype, source)

        if on_cuda:
            model, runtime = _init_inference(
                model, lambda: _load_frozen(source, attn_implementation=attn_implementation),
                device=device,
                dtype=torch_dtype, kernel_inject=kernel_inject, special_ids=special_ids,
                logger=logger)
        else:
            # CPU: a plain module. DeepSpeed-Inference on CPU brings no kernels of its own (no
            # injection without a GPU), so the wrapper would only add a dependency to this path;
            # it also refuses fp16 there (DeepSpeed 0.19.8), which torch runs on CPU (slowly):
            # what the GPU's fp16 generator computes, for checking its numerics
            # (tests/test_fp16_generator.py).
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

    def compile(self) -> None:
        """torch.compile the encoder in place, and the eager sampler (config train.compile). The
        head stays eager: it runs at the K selected positions only, or inside the fused
        sampler."""
        head = mlm_head(self.hf_model)
        (head.encoder if head is not None else self.hf_model).compile()
        self.compiled = True

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
                       temperature=temperature, seed=seed, fused=self.fused,
                       compiled=self.compiled)


def check_range(model: nn.Module, dtype: torch.dtype, source: str) -> None:
    """UserError if a finite parameter of `model` would overflow to inf in `dtype` (fp16's largest
    value is 65504: a large decoder bias, e.g. one that rules a token out, can exceed it). An inf
    weight would make those logits inf and the draws and entropies of their rows meaningless.
    """
    limit = torch.finfo(dtype).max
    over = []
    for name, p in model.named_parameters():
        finite = p.detach()[p.detach().isfinite()].abs()  # an inf weight is no overflow
        if finite.numel() and finite.max() > limit:
            over.append(f"{name} (|x| up to {finite.max().item():.4g})")
    if over:
        name = str(dtype).removeprefix("torch.")
        raise UserError(f"generator {source}: {', '.join(over)} exceed {name}'s range "
                        f"(+-{limit:.6g}) and would become inf in {name}: run it in bf16 or fp32 "
                        f"(generator.inference_dtype=bf16 or fp32)")


def load_masked_lm(path_or_hub_id: str, *, vocab_size: int, special_ids: Mapping[str, int | None],
                   vocab: Mapping[str, int] | None = None, logger: Callable[[str], None] = print,
                   what: str = "generator.path",
                   attn_implementation: str = "sdpa") -> tuple[nn.Module, str]:
    """A HF masked LM checked against the data (vocabulary, special tokens, tokenizer), frozen,
    fp32 on CPU, and where it came from. `what` names the setting in error messages."""
    source = resolve_source(path_or_hub_id, what)
    _read_config(source, vocab_size=vocab_size, what=what)  # cheap checks before any weights
    check_tokenizer(source, vocab_size=vocab_size, special_ids=special_ids, vocab=vocab,
                     logger=logger, what=what)
    return _load_frozen(source, what, attn_implementation=attn_implementation), source


def _read_config(source: str, *, vocab_size: int, what: str = "generator.path"):
    """The model config at `source`; UserError unless it is a masked LM with the data's vocab."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    config = read_model_config(source, what)
    if config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise UserError(f"{what}: {source} holds a {config.model_type!r} model, which has "
                        f"no masked-LM head in transformers; use a masked LM (BERT, RoBERTa, an "
                        f"ELECTRA generator, ... or the output of a mode=mlm run)")
    if config.vocab_size != vocab_size:
        raise UserError(f"{what}: {source} has a vocabulary of {config.vocab_size} tokens "
                        f"but the data has {vocab_size}: the generator must use the data's "
                        f"tokenizer (prepare the data with it, or train a generator with mode=mlm)")
    return config


def _load_frozen(source: str, what: str = "generator.path", *,
                 attn_implementation: str = "sdpa") -> nn.Module:
    """The masked LM at `source` in fp32 on CPU, in eval mode, with gradients off."""
    from transformers import AutoModelForMaskedLM

    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            source, dtype=torch.float32, output_loading_info=True,
            attn_implementation=attn_implementation)
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
    rng = torch.Generator().manual_seed(0)
    ordinary = torch.tensor(sorted(set(range(vocab_size)) - set(special_ids.values())))
    input_ids = ordinary[torch.randint(len(ordinary), (2, length), generator=rng)]  # [2, L]
    attention_mask = torch.ones(2, length, dtype=torch.int64)  # [2, L]
    attention_mask[1, length // 2:] = 0
    if special_ids.get("pad") is not None:
        input_ids[1, length // 2:] = special_ids["pad"]
    positions = torch.arange(length // 2).expand(2, -1).contiguous()  # [2, K]
    return input_ids.to(device), attention_mask.to(device), positions.to(device)
