"""Starting from models users already have: released checkpoints and masked LMs, each with its
own tokenizer, checked against the data before anything runs.

  resolve_source    a folder, or a hub id (anything else that is not a folder is an error)
  check_tokenizer   the model's own tokenizer against the data's: size, special tokens, ids
  init_from_shapes  model.init_from / generator.init_from: the shapes of the models a run
                    starts from, written into the run's config (the recipe's are ignored)
  load_pretrained   the weights, with what is missing or unexpected named

The frozen generator of fast-electra (frozen_generator.py) uses the first two; the trained models
of models.py use the last.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from torch import nn

from fast_electra_ds.config import RunConfig
from fast_electra_ds.errors import UserError

# Files whose presence in a model folder means it carries a tokenizer to check against the data.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "spiece.model", "sentencepiece.bpe.model")
# What each init_from takes: the architecture classes a folder may have been saved from. An
# ElectraModel is a bare encoder: the discriminator's head then starts fresh.
DISCRIMINATOR_CLASSES = ("ElectraForPreTraining", "ElectraModel")
GENERATOR_CLASSES = ("ElectraForMaskedLM",)


def resolve_source(path_or_hub_id: str, what: str = "generator.path") -> str:
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise UserError(f"{what}: {path_or_hub_id} is a file; it must be the folder "
                        f"written by save_pretrained (config.json + weights)")
    if path_or_hub_id.startswith((".", "/", "~")):
        raise UserError(f"{what}: {path_or_hub_id} does not exist; point it at a model folder "
                        f"written by save_pretrained, or a hub id like org/name")
    return path_or_hub_id  # a hub id


def check_tokenizer(source: str, *, vocab_size: int, special_ids: Mapping[str, int | None],
                     vocab: Mapping[str, int] | None, logger: Callable[[str], None],
                     what: str = "generator.path") -> None:
    """UserError if the model's own tokenizer (when it ships one) disagrees with the data's: its
    size, its special tokens, and (given the data's `vocab`) every token's id."""
    from transformers import AutoTokenizer

    local = Path(source).is_dir()
    if local and not any((Path(source) / f).exists() for f in TOKENIZER_FILES):
        logger(f"{what}: {source} has no tokenizer files; trusting that its vocabulary is the "
               f"data's (only the vocab size is checked)")
        return
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        if local:
            raise UserError(f"{what}: {source} has tokenizer files that do not load "
                            f"({e}); fix or remove them") from None
        logger(f"{what}: no tokenizer found for {source}; only the vocab size is checked")
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
                        f"model's tokenizer (prepare-data --tokenizer {source}), or use a model "
                        "trained with this tokenizer")


def read_model_config(source: str, what: str):
    """The HF config at `source`, or a UserError for a folder without one or an unreachable hub
    id (no network and not in the cache)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise UserError(f"{what}: cannot read a model config from {source} ({e}); it must be a "
                        f"folder written by save_pretrained (config.json + weights), or a hub id "
                        f"that is reachable (or already in the HF cache)") from None


def _read_electra_config(source: str, what: str, accepted: tuple[str, ...], vocab_size: int):
    config = read_model_config(source, what)
    saved_as = list(config.architectures or [])
    if config.model_type != "electra" or (saved_as and not set(saved_as) & set(accepted)):
        kind = ", ".join(saved_as) or config.model_type
        hint = ("a masked LM is a generator: use it as generator.path (fast-electra) or "
                "generator.init_from (electra)" if "MaskedLM" in kind else
                "an ELECTRA discriminator folder is what init_from takes")
        raise UserError(f"{what}: {source} holds {kind}, but {what} takes "
                        f"{' or '.join(accepted)}; {hint}")
    if config.vocab_size != vocab_size:
        raise UserError(f"{what}: {source} has a vocabulary of {config.vocab_size} tokens but the "
                        f"data has {vocab_size}: prepare the data with that model's tokenizer "
                        f"(prepare-data --tokenizer {source})")
    return config


def init_from_shapes(cfg: RunConfig, *, vocab_size: int, special_ids: Mapping[str, int | None],
                     vocab: Mapping[str, int] | None, log: Callable[[str], None]) -> None:
    """Check model.init_from / generator.init_from against the data (vocabulary, special tokens,
    tokenizer) and take their shapes into `cfg`, before anything is built or written; what the
    recipe said instead is logged. So the run's config.yaml, its FLOP count and its resume
    checks describe the models it really trains."""
    starts = [("model.init_from", cfg.model.init_from, DISCRIMINATOR_CLASSES, cfg.model,
               {"num_layers": "num_hidden_layers", "hidden_size": "hidden_size",
                "embedding_size": "embedding_size", "num_heads": "num_attention_heads",
                "intermediate_size": "intermediate_size",
                "max_position_embeddings": "max_position_embeddings"}),
              ("generator.init_from", cfg.generator.init_from, GENERATOR_CLASSES, cfg.generator,
               {"num_layers": "num_hidden_layers", "hidden_size": "hidden_size",
                "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size"})]
    for what, name, accepted, section, fields in starts:
        if not name:
            continue
        source = resolve_source(name, what)
        config = _read_electra_config(source, what, accepted, vocab_size)
        check_tokenizer(source, vocab_size=vocab_size, special_ids=special_ids, vocab=vocab,
                        logger=log, what=what)
        if what == "generator.init_from" and config.embedding_size != cfg.model.embedding_size:
            raise UserError(f"generator.init_from: {source} has embeddings "
                            f"{config.embedding_size} wide, the discriminator "
                            f"{cfg.model.embedding_size}; mode=electra shares one embedding "
                            f"table, so both must match (start both from one ELECTRA release)")
        changed = []
        for ours, theirs in fields.items():
            value = getattr(config, theirs)
            if getattr(section, ours) != value:
                changed.append(f"{ours} {getattr(section, ours)} -> {value}")
                setattr(section, ours, value)
        log(f"{what}={name}: shape from the checkpoint"
            + (f" ({'; '.join(changed)})" if changed else " (the same as the config's)"))


def load_pretrained(cls: type[nn.Module], source: str, what: str, *, fresh_ok: tuple[str, ...],
                    log: Callable[[str], None], **config_overrides) -> nn.Module:
    """`cls.from_pretrained(source)` in fp32. Weights missing from the checkpoint are an error,
    except under the prefixes `fresh_ok` (a head that starts fresh, logged); so are weights the
    checkpoint has and `cls` does not (another head: not the model init_from takes)."""
    import torch

    model, info = cls.from_pretrained(source, dtype=torch.float32, output_loading_info=True,
                                      **config_overrides)
    missing = [k for k in info["missing_keys"] if not k.startswith(fresh_ok)]
    unexpected = list(info["unexpected_keys"])
    if missing or unexpected:
        raise UserError(f"{what}: {source} does not hold a {cls.__name__}: "
                        + "; ".join(filter(None, [
                            f"missing {', '.join(sorted(missing)[:4])}" if missing else "",
                            f"unexpected {', '.join(sorted(unexpected)[:4])}" if unexpected
                            else ""])))
    fresh = sorted(info["missing_keys"])
    if fresh:
        log(f"{what}: {source} has no {', '.join(sorted({k.split('.')[0] for k in fresh}))}: "
            f"that head starts fresh")
    return model
