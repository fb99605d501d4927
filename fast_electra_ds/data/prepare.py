"""`prepare-data`: text -> token ids -> packed [CLS] ... [SEP] sequences in indexed datasets.

Pipeline, with memory flat in the corpus size:
    main process:   Corpus.documents() -> chunks of ~1000 lines (pieces of documents)
    num_proc > 1:   a pool of worker processes tokenizes chunks; at most 2 * num_proc chunks are in
                    flight (apply_async + a deque; Pool.imap would read the whole input ahead)
                    and results are consumed in order
    num_proc == 1:  tokenized in-process (the Rust tokenizer is itself multithreaded)
    main process:   each document's ids, as one stream, are cut into pieces of at most
                    seq_len - 2 tokens, each stored as [CLS] piece [SEP] (documents never share a
                    sequence; a document's last sequence may be short; no padding is stored)

Split: a document goes to valid iff hash(seed, document index) < valid_fraction. If none did
(and there are >= 2 documents), the last document goes to valid; for that, the latest train
document is held back until the next one arrives.

Output, built in OUTPUT.tmp-<pid> and renamed into place when complete (an interrupted run leaves
nothing named OUTPUT):
    OUTPUT/train.bin, train.idx, valid.bin, valid.idx   megatron-core indexed datasets
    OUTPUT/manifest.json                               what the loader checks (see _manifest)
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fast_electra_ds import __version__
from fast_electra_ds.data.corpus import Corpus, check_output_dir, resolve_inputs, \
    staged_output_dir
from fast_electra_ds.data.indexed import IndexedWriter, check_indexed_files
from fast_electra_ds.data.tokenizer import encode_lines, load_tokenizer, special_token_ids, \
    tokenizer_fingerprint
from fast_electra_ds.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "valid")
LINES_PER_CHUNK = 1000
MIN_SEQ_LEN = 8

# (document index, lines, whether this piece ends the document)
Piece = tuple[int, list[str], bool]


def prepare_data(inputs: Sequence[str], *, tokenizer: str, seq_len: int, output: str,
                 valid_fraction: float = 0.01, num_proc: int = 1, text_key: str = "text",
                 errors: str = "strict", overwrite: bool = False, seed: int = 1234,
                 max_seq_len: int | None = None) -> dict:
    """Tokenize and pack `inputs` into OUTPUT (see the module docstring); returns the manifest.

    Everything is validated before any output is created: the arguments, the inputs (exist,
    non-empty, UTF-8 unless errors="skip", JSON/parquet records have `text_key`), the output
    (absent or empty unless `overwrite`) and the tokenizer (has [MASK], [CLS], [SEP], [PAD]).
    """
    if seq_len < MIN_SEQ_LEN:
        raise UserError(f"--seq-len must be >= {MIN_SEQ_LEN}, got {seq_len}")
    if max_seq_len is not None and seq_len > max_seq_len:
        raise UserError(f"seq-len {seq_len} exceeds the recipe's max_position_embeddings "
                        f"{max_seq_len}: lower --seq-len, or use a recipe whose model has a "
                        f"larger model.max_position_embeddings")
    if not 0.0 <= valid_fraction < 1.0:
        raise UserError(f"--valid-fraction must be in [0, 1), got {valid_fraction}")
    if num_proc < 1:
        raise UserError(f"--num-proc must be >= 1, got {num_proc}")
    out = Path(output)
    check_output_dir(out, overwrite=overwrite, marker=MANIFEST,
                     inputs=[s.path for s in resolve_inputs(inputs)])
    corpus = Corpus(inputs, text_key=text_key, errors=errors)
    tok = load_tokenizer(tokenizer)
    # workers and later readers load the very same folder, wherever they run from
    tokenizer_ref = str(Path(tokenizer).expanduser().resolve()) \
        if Path(tokenizer).expanduser().is_dir() else tokenizer
    specials = special_token_ids(tok)
    vocab_size = len(tok)

    with staged_output_dir(out) as tmp:
        writers = {split: IndexedWriter(tmp / split, vocab_size) for split in SPLITS}
        pieces = _tokenized_pieces(corpus, tok, tokenizer_ref, num_proc, scratch_dir=tmp)
        with contextlib.closing(pieces):  # on error, stops the worker pool at once
            _pack_and_write(pieces, writers, seq_len=seq_len, cls_id=specials["cls"],
                            sep_id=specials["sep"], valid_fraction=valid_fraction, seed=seed)
        for split, writer in writers.items():
            writer.finalize()
            check_indexed_files(tmp / split)
        manifest = {
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tokenizer": tokenizer_ref,
            "tokenizer_fingerprint": tokenizer_fingerprint(tok),
            "vocab_size": vocab_size,
            "special_token_ids": specials,
            "seq_len": seq_len,
            "dtype": writers["train"].dtype.name,
            "seed": seed,
            "valid_fraction": valid_fraction,
            "text_key": text_key,
            "splits": {split: _split_stats(w, seq_len) for split, w in writers.items()},
            "sources": [{"path": str(s.path.resolve()), "size_bytes": s.size_bytes}
                        for s in corpus.sources],
            "skipped_lines": corpus.num_skipped_lines,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a prepared dataset folder, with a UserError saying what to do if it is not
    one (missing, interrupted preparation, or written by an incompatible version)."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"dataset {folder} does not exist; create it with `fast-electra "
                        f"prepare-data --output {folder} ...`")
    file = folder / MANIFEST
    if not file.is_file():
        raise UserError(f"{folder} is not a prepared dataset, or its preparation was interrupted "
                        f"(no {MANIFEST}); re-run `fast-electra prepare-data --output {folder} "
                        f"--overwrite ...`")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{file} is corrupted ({e}); re-run `fast-electra prepare-data`") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise UserError(f"{file} has format version {version!r}; this fast_electra_ds "
                        f"({__version__}) reads version {FORMAT_VERSION}: re-run "
                        f"`fast-electra prepare-data` with this version")
    return manifest


# --------------------------------------------------------------------------------------------
# Tokenizing


def _chunks(documents: Iterator[list[str]], lines_per_chunk: int = LINES_PER_CHUNK
            ) -> Iterator[list[Piece]]:
    """Documents -> chunks of about `lines_per_chunk` lines; a long document spans chunks."""
    chunk: list[Piece] = []
    num_lines = 0
    for doc_index, lines in enumerate(documents):
        for start in range(0, len(lines), lines_per_chunk):
            piece = lines[start:start + lines_per_chunk]
            chunk.append((doc_index, piece, start + lines_per_chunk >= len(lines)))
            num_lines += len(piece)
            if num_lines >= lines_per_chunk:
                yield chunk
                chunk, num_lines = [], 0
    if chunk:
        yield chunk


def _tokenize_chunk(chunk: list[Piece], tok=None) -> list[tuple[int, bool, np.ndarray]]:
    """[(document index, ends the document, token ids [n] int32)], one per piece of the chunk."""
    tok = tok if tok is not None else _worker_tokenizer
    ids = encode_lines(tok, [line for _, lines, _ in chunk for line in lines])
    out, i = [], 0
    for doc_index, lines, last in chunk:
        piece_ids = ids[i:i + len(lines)]
        i += len(lines)
        total = sum(map(len, piece_ids))
        flat = np.fromiter(itertools.chain.from_iterable(piece_ids), dtype=np.int32, count=total)
        out.append((doc_index, last, flat))
    return out


_worker_tokenizer = None


def _init_worker(tokenizer_ref: str) -> None:
    global _worker_tokenizer
    # one worker per core already: Rust threads inside each would only oversubscribe the CPU
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_tokenizer = load_tokenizer(tokenizer_ref)


def _tokenized_pieces(corpus: Corpus, tok, tokenizer_ref: str, num_proc: int, scratch_dir: Path
                      ) -> Iterator[tuple[int, bool, np.ndarray]]:
    """Tokenized pieces of documents, in corpus order."""
    chunks = _chunks(corpus.documents(scratch_dir))
    if num_proc == 1:
        for chunk in chunks:
            yield from _tokenize_chunk(chunk, tok)
        return
    # fork: workers start at once, sharing the loaded modules (the package's __main__ has no
    # `if __name__ == "__main__"` guard, which spawn would need)
    ctx = mp.get_context("fork")
    # Forked workers share the parent's pages until they write to them, and the garbage
    # collector writes to every object it scans: frozen objects are never scanned, so the
    # inherited heap (torch, megatron, transformers) stays shared instead of being copied into
    # each worker as collections happen.
    gc.freeze()
    try:
        pool = ctx.Pool(num_proc, initializer=_init_worker, initargs=(tokenizer_ref,))
    finally:
        gc.unfreeze()
    with pool:
        in_flight: deque = deque()
        for chunk in chunks:
            in_flight.append(pool.apply_async(_tokenize_chunk, (chunk,)))
            if len(in_flight) >= 2 * num_proc:
                yield from in_flight.popleft().get()
        while in_flight:
            yield from in_flight.popleft().get()


# --------------------------------------------------------------------------------------------
# Packing and splitting


def pack_document(ids: np.ndarray, seq_len: int, cls_id: int, sep_id: int
                  ) -> tuple[np.ndarray, list[int]]:
    """ids [n] -> ([n + 2k] the k sequences [CLS] piece [SEP] back to back, their k lengths);
    every piece has seq_len - 2 tokens except the last, which has the rest."""
    body = seq_len - 2
    n = len(ids)
    assert n > 0
    k = -(-n // body)
    body_lengths = np.full(k, body, dtype=np.int64)
    body_lengths[-1] = n - body * (k - 1)
    starts = np.concatenate(([0], np.cumsum(body_lengths + 2)[:-1]))  # [k] where each [CLS] is
    out = np.empty(n + 2 * k, dtype=ids.dtype)
    is_body = np.ones(n + 2 * k, dtype=bool)
    is_body[starts] = is_body[starts + body_lengths + 1] = False
    out[starts] = cls_id
    out[starts + body_lengths + 1] = sep_id
    out[is_body] = ids
    return out, (body_lengths + 2).tolist()


def in_valid(seed: int, doc_index: int, valid_fraction: float) -> bool:
    """Whether document `doc_index` belongs to valid: a stable hash of (seed, index) in [0, 1)."""
    digest = hashlib.blake2b(f"{seed}:{doc_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0 ** 64 < valid_fraction


def _pack_and_write(pieces: Iterator[tuple[int, bool, np.ndarray]],
                    writers: dict[str, IndexedWriter], *, seq_len: int, cls_id: int,
                    sep_id: int, valid_fraction: float, seed: int) -> None:
    train, valid = writers["train"], writers["valid"]
    held_back = None  # (tokens, lengths) of the latest train document, written one document late
    current: list[np.ndarray] = []  # pieces of the document being assembled
    expected_index = 0
    for doc_index, last, ids in pieces:
        assert doc_index == expected_index, (doc_index, expected_index)
        current.append(ids)
        if not last:
            continue
        expected_index += 1
        doc = np.concatenate(current)
        current = []
        if len(doc) == 0:  # e.g. only characters the normalizer removes
            continue
        packed = pack_document(doc, seq_len, cls_id, sep_id)
        if in_valid(seed, doc_index, valid_fraction):
            valid.add_document(*packed)
            continue
        if held_back is not None:
            train.add_document(*held_back)
        held_back = packed
    assert not current, "the last piece did not close its document"
    if held_back is not None:
        if valid_fraction > 0 and valid.num_documents == 0 and train.num_documents > 0:
            valid.add_document(*held_back)  # no document hashed into valid: give it the last
        else:
            train.add_document(*held_back)
    if train.num_documents == 0:
        raise UserError(f"no document with tokens landed in the train split "
                        f"({valid.num_documents} in valid); add text, or lower --valid-fraction")


def _split_stats(writer: IndexedWriter, seq_len: int) -> dict:
    slots = writer.num_sequences * seq_len
    return {"num_documents": writer.num_documents, "num_sequences": writer.num_sequences,
            "num_tokens": writer.num_tokens,
            "padding_fraction": round(1.0 - writer.num_tokens / slots, 6) if slots else 0.0}
