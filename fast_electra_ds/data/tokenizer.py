"""The WordPiece tokenizer: training, loading with checks, and the identity of a vocabulary.

A trained tokenizer is a HF tokenizer folder (tokenizer.json, tokenizer_config.json) plus a
vocab.txt in id order, which transformers 5 no longer writes but BERT-era tools still read.
`tokenizer_fingerprint` names a vocabulary and its normalization: prepared data records it, and
datasets blended together (or a generator checked against the data) must agree on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from fast_electra_ds.data.corpus import Corpus, check_output_dir, staged_output_dir
from fast_electra_ds.errors import UserError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# what ELECTRA cannot do without: padding, the sequence frame, and the corruption token
REQUIRED = (("mask_token", "[MASK]"), ("cls_token", "[CLS]"), ("sep_token", "[SEP]"),
            ("pad_token", "[PAD]"))


def train_tokenizer(inputs: list[str], vocab_size: int, output: str, *, lowercase: bool = True,
                    min_frequency: int = 2, overwrite: bool = False) -> Path:
    """Train a BERT-style WordPiece tokenizer on `inputs` (files or globs) and save it in `output`.

    Refuses a non-empty `output` unless `overwrite`; the folder is written beside it and renamed
    into place, so a failed run loses nothing.

    HF's WordPiece trainer is not deterministic: ties between equally frequent merges are
    broken in hash-map order, so two trainings on the same text can differ in a few tokens
    (huggingface/tokenizers#1794). Train once and reuse the folder; prepared data records the
    tokenizer's fingerprint, so data from different trainings is never mixed unnoticed.
    """
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import BertTokenizerFast

    if vocab_size <= len(SPECIAL_TOKENS):
        raise UserError(f"--vocab-size must exceed the {len(SPECIAL_TOKENS)} special tokens, "
                        f"got {vocab_size}")
    if min_frequency < 1:
        raise UserError(f"--min-frequency must be >= 1, got {min_frequency}")
    out = Path(output)
    corpus = Corpus(inputs)
    check_output_dir(out, overwrite=overwrite, marker="tokenizer.json",
                     inputs=[s.path for s in corpus.sources])

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator(_lines(corpus), trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])

    fast = BertTokenizerFast(tokenizer_object=tok, do_lower_case=lowercase, unk_token="[UNK]",
                             pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                             mask_token="[MASK]")
    with staged_output_dir(out) as tmp:
        fast.save_pretrained(str(tmp))
        _write_vocab_txt(fast, tmp / "vocab.txt")
    return out


def _lines(corpus: Corpus) -> Iterator[str]:
    for doc in corpus.documents():
        yield from doc


def _vocab_in_id_order(tok) -> list[str]:
    vocab = tok.backend_tokenizer.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert [vocab[t] for t in tokens] == list(range(len(tokens))), "token ids are not 0..V-1"
    return tokens


def _write_vocab_txt(tok, path: Path) -> None:
    path.write_text("".join(t + "\n" for t in _vocab_in_id_order(tok)), encoding="utf-8")


def load_tokenizer(name_or_path: str):
    """A fast (Rust-backed) HF tokenizer that has [MASK], [CLS], [SEP] and [PAD].

    `name_or_path` is a local folder, or a hub id of the form "org/name" (looked up in the HF
    cache, then on the hub). Anything else that is not a folder is an error at once: a mistyped
    path would otherwise spend about a minute in hub retries before failing.
    """
    from transformers import AutoTokenizer

    path = Path(name_or_path).expanduser()
    # "runs/tok" with a local runs/ folder is a mistyped path, not a hub organisation
    is_hub_id = (not path.exists() and name_or_path.count("/") == 1
                 and not name_or_path.startswith((".", "/", "~")) and not path.parent.exists())
    if not is_hub_id and not path.is_dir():
        raise UserError(f"tokenizer {name_or_path} is not a directory (nor a hub id like "
                        f"org/name); train one with `fast-electra train-tokenizer --output "
                        f"{name_or_path} ...`")
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path if is_hub_id else str(path))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load tokenizer {name_or_path!r}: {e}") from None
    if not tok.is_fast:
        raise UserError(f"tokenizer {name_or_path!r} has no fast (Rust) implementation; convert "
                        f"it or train one with `fast-electra train-tokenizer`")
    missing = [token for attr, token in REQUIRED if _special_id(tok, attr) is None]
    if missing:
        raise UserError(
            f"tokenizer {name_or_path!r} lacks the special token(s) {', '.join(missing)} that "
            f"ELECTRA pretraining needs; train one with `fast-electra train-tokenizer`, or add "
            f"them (tokenizer.add_special_tokens({{...}}) then save_pretrained)")
    return tok


def _special_id(tok, attr: str) -> int | None:
    """The id of special token `attr` ("mask_token", ...) if it is set and in the vocabulary."""
    token = getattr(tok, attr, None)
    if token is None:
        return None
    return tok.backend_tokenizer.get_vocab(with_added_tokens=True).get(str(token))


def special_token_ids(tok) -> dict[str, int | None]:
    """{"pad": id, "cls": id, "sep": id, "mask": id, "unk": id or None}."""
    return {name: _special_id(tok, f"{name}_token")
            for name in ("pad", "cls", "sep", "mask", "unk")}


def tokenizer_fingerprint(tok) -> str:
    """sha256 over the vocabulary in id order and the normalizer's settings (hex)."""
    normalizer = json.loads(tok.backend_tokenizer.to_str()).get("normalizer")
    h = hashlib.sha256()
    h.update("\n".join(_vocab_in_id_order(tok)).encode("utf-8"))
    h.update(b"\0normalizer\0")
    h.update(json.dumps(normalizer, sort_keys=True).encode("utf-8"))
    return h.hexdigest()


def encode_lines(tok, lines: Sequence[str]) -> list[list[int]]:
    """Token ids of each line, without [CLS]/[SEP] (the packer adds them per sequence)."""
    return [e.ids for e in tok.backend_tokenizer.encode_batch_fast(list(lines),
                                                                   add_special_tokens=False)]
