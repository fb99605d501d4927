"""Model construction: the one place Hugging Face model classes are built from our config.

The discriminator is an `ElectraForPreTraining` (encoder + per-token "replaced?" head), the
generator trained here (mode=electra/mlm) an `ElectraForMaskedLM`. Both save with
`save_pretrained` into folders that the HF ecosystem (and `FrozenGenerator.load`) reads directly.
A frozen generator loaded from disk is not built here: see frozen_generator.py.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable

import torch
from torch import nn
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

from fast_electra_ds.config import GeneratorConfig, ModelConfig
from fast_electra_ds.errors import UserError
from fast_electra_ds.method.pretrained import load_pretrained, resolve_source


def build_discriminator(model_cfg: ModelConfig, *, vocab_size: int, pad_id: int,
                        replaced_share: float | None = None, attn_implementation: str = "sdpa",
                        log: Callable[[str], None] = print) -> ElectraForPreTraining:
    """A freshly initialized discriminator whose shape is given by `model_cfg`, or, with
    model.init_from, the checkpoint there (already checked by pretrained.init_from_shapes) with
    the config's dropout; attn_implementation: a resolved one (`resolve_attention`), not auto.

    replaced_share: the expected share of replaced tokens; with model.head_bias_init=prior the
    head's output bias starts at its log-odds (see `init_head_bias`)."""
    if model_cfg.init_from:
        return load_pretrained(
            ElectraForPreTraining, resolve_source(model_cfg.init_from, "model.init_from"),
            "model.init_from", fresh_ok=("discriminator_predictions",), log=log,
            attn_implementation=attn_implementation, hidden_dropout_prob=model_cfg.hidden_dropout,
            attention_probs_dropout_prob=model_cfg.attention_dropout)
    config = ElectraConfig(
        vocab_size=vocab_size,
        embedding_size=model_cfg.embedding_size,
        hidden_size=model_cfg.hidden_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        intermediate_size=model_cfg.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=model_cfg.hidden_dropout,
        attention_probs_dropout_prob=model_cfg.attention_dropout,
        max_position_embeddings=model_cfg.max_position_embeddings,
        pad_token_id=pad_id,
        attn_implementation=attn_implementation,
    )
    model = ElectraForPreTraining(config)
    if model_cfg.head_bias_init == "prior" and replaced_share is not None:
        init_head_bias(model, replaced_share)
    return model


def init_head_bias(discriminator: ElectraForPreTraining, replaced_share: float) -> None:
    """Start the replaced-token head at the base rate: bias = log(p / (1 - p)).

    With HF's zero bias every token starts at P(replaced) = 0.5 while only about 13% are
    replaced, so the first steps' gradient is one large push of every logit downwards, and Adam
    moves every parameter that can lower the mean logit at the full learning rate, not only this
    bias: the encoder learns a constant direction that outweighs the tokens, and LayerNorm then
    maps every position to nearly the same vector (the representation collapse of a run stuck on
    the plateau; benchmarks/results/plateau_map.md). Starting at the prior removes that push; the
    same remedy as the prior initialization of class-imbalanced detectors (Lin et al. 2017,
    focal loss, section 4.1)."""
    p = min(max(replaced_share, 1e-4), 1 - 1e-4)
    with torch.no_grad():
        discriminator.discriminator_predictions.dense_prediction.bias.fill_(
            math.log(p / (1 - p)))


def build_generator(gen_cfg: GeneratorConfig, model_cfg: ModelConfig, *, vocab_size: int,
                    pad_id: int, attn_implementation: str = "sdpa",
                    log: Callable[[str], None] = print) -> ElectraForMaskedLM:
    """A freshly initialized masked-LM generator (mode=electra/mlm) of shape `gen_cfg`, or the
    one generator.init_from names (checked by pretrained.init_from_shapes).

    Embedding size, position limit and dropout come from the discriminator's `model_cfg`, so that
    mode=electra can share the embedding tables (see `tie_embeddings`) and both models train with
    the same regularization; the output layer is tied to the word embeddings, as in ELECTRA.
    """
    if gen_cfg.init_from:
        return load_pretrained(
            ElectraForMaskedLM, resolve_source(gen_cfg.init_from, "generator.init_from"),
            "generator.init_from", fresh_ok=(), log=log, attn_implementation=attn_implementation,
            hidden_dropout_prob=model_cfg.hidden_dropout,
            attention_probs_dropout_prob=model_cfg.attention_dropout)
    embedding_size = model_cfg.embedding_size
    max_position_embeddings = model_cfg.max_position_embeddings
    hidden_dropout, attention_dropout = model_cfg.hidden_dropout, model_cfg.attention_dropout
    config = ElectraConfig(
        vocab_size=vocab_size,
        embedding_size=embedding_size,
        hidden_size=gen_cfg.hidden_size,
        num_hidden_layers=gen_cfg.num_layers,
        num_attention_heads=gen_cfg.num_heads,
        intermediate_size=gen_cfg.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=hidden_dropout,
        attention_probs_dropout_prob=attention_dropout,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
        attn_implementation=attn_implementation,
    )
    return ElectraForMaskedLM(config)


def tie_embeddings(generator: ElectraForMaskedLM, discriminator: ElectraForPreTraining) -> None:
    """Make the generator use the discriminator's embedding module (mode=electra).

    As in the original ELECTRA (both models read the same `electra/embeddings` variable scope),
    the word, position and token-type tables and the embedding LayerNorm become the very same
    Parameters, so a gradient from either model updates both. Sharing the whole module (rather
    than swapping single Parameters) keeps HF's own re-tying (`tie_weights`, run again by
    `save_pretrained`/`from_pretrained`) pointing at the shared table. The generator's output
    layer is re-pointed to the shared word embeddings. Each model keeps its own
    `embeddings_project` (embedding_size -> its hidden_size).
    """
    g, d = generator.config, discriminator.config
    for name in ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size"):
        assert getattr(g, name) == getattr(d, name), (name, getattr(g, name), getattr(d, name))
    shared = discriminator.electra.embeddings
    generator.electra.embeddings = shared
    if g.tie_word_embeddings:
        generator.generator_lm_head.weight = shared.word_embeddings.weight
    assert generator.get_input_embeddings().weight is discriminator.get_input_embeddings().weight


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups: matrices and embeddings decay, biases and norms do not.

    Norms are recognized by class name (LayerNorm, RMSNorm, ... in HF and torch alike). A tied
    parameter appears once (an optimizer must not step a shared tensor twice); frozen parameters
    are left out.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    # named_modules() yields a shared module once, so tied embeddings are visited once as well;
    # `seen` also catches a Parameter tied across different modules (lm_head.weight = word emb.)
    for module in model.modules():
        is_norm = "norm" in type(module).__name__.lower()
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if is_norm or name == "bias" else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def resolve_attention(setting: str, *, device: torch.device | str, half_precision: bool,
                      log: Callable[[str], None] = print) -> str:
    """config model.attn_implementation -> the implementation every model of the run uses.

    flash_attention_2 needs CUDA, 16-bit weights (bf16/fp16 training; the frozen generator is
    fp16 there) and the flash-attn package; asked for where it cannot run, it is an error, not a
    silent fallback. auto takes it where it can run and sdpa elsewhere, and says why.
    """
    device = torch.device(device)
    missing = [why for ok, why in (
        (device.type == "cuda", f"the run is on {device.type}"),
        (half_precision, "training is fp32 (flash attention needs bf16 or fp16)"),
        (importlib.util.find_spec("flash_attn") is not None, "flash-attn is not installed"),
    ) if not ok]
    if setting == "flash_attention_2" and missing:
        raise UserError(f"model.attn_implementation=flash_attention_2 cannot run: "
                        f"{'; '.join(missing)}. Use sdpa (or auto)")
    resolved = setting if setting != "auto" else ("sdpa" if missing else "flash_attention_2")
    why = f" (auto: {missing[0]})" if setting == "auto" and missing else ""
    log(f"attention: {resolved}{why}")
    return resolved
