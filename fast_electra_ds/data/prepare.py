"""`prepare-data`: text -> token ids -> packed [CLS] ... [SEP] sequences in indexed datasets.

Pipeline, with memory flat in the corpus size:
    main process:   Corpus.documents() -> chunks of ~1000 lines (pieces of documents)
    num_proc > 1:   a pool of worker processes tokenizes chunks; at most 2 * num_proc chunks are in
                    flight (apply_async + a deque; Pool.imap would read the whole input ahead)
                    and results are consumed in order
    num_proc == 1:  tokenized in-process (the Rust tokenizer is itself multithreaded)
    main process:   each document's lines are built into examples as ELECTRA's
                    build_pretraining_dataset.py does (`pack_document`): [CLS] A [SEP] B [SEP],
                    A and B whole lines, 10% with one segment only, 5% aiming at a random length
                    (documents never share a sequence; no padding is stored)

Token types are not stored: 0 up to and including a sequence's first [SEP], 1 after it
(loader.PackedSequences derives them), as in ELECTRA's segment ids.

Split: a document goes to valid iff hash(seed, document index) < valid_fraction. If none did
(few documents; a text file without blank lines is a single one), valid_fraction of the sequences
(at least one) are held out from the end of the last document, or that whole document when it is
no longer (`_hold_out_tail`); for that, the latest train document is held back until the next one
arrives. The manifest's `valid_held_out` says which happened.

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
from fast_electra_ds.data.corpus import Corpus, check_output_dir, resolve_inputs, staged_output_dir
from fast_electra_ds.data.indexed import IndexedWriter, check_indexed_files
from fast_electra_ds.data.tokenizer import (encode_lines, load_tokenizer, special_token_ids,
                                            tokenizer_fingerprint)
from fast_electra_ds.errors import UserError

# 2: two-segment examples ([CLS] A [SEP] B [SEP]); version 1 stored single [CLS] piece [SEP]
# sequences, whose token-type-1 embedding a model would never train, so it is refused
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
SPLITS = ("train", "valid")
LINES_PER_CHUNK = 1000
MIN_SEQ_LEN = 8
SINGLE_SEGMENT_SHARE = 0.1  # ELECTRA: "small chance to only have one segment"
RANDOM_LENGTH_SHARE = 0.05  # ELECTRA: "small chance for random-length instead of max_length"
MIN_RANDOM_LENGTH = 5  # ELECTRA's random.randint(5, max_length)

# (document index, lines, whether this piece ends the document)
Piece = tuple[int, list[str], bool]


def prepare_data(inputs: Sequence[str], *, tokenizer: str, seq_len: int, output: str,
                 valid_fraction: float = 0.01, num_proc: int = 1, text_key: str = "text",
                 split: str = "train",
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
                     inputs=[s.path for s in resolve_inputs(inputs) if s.builder != "hub"])
    corpus = Corpus(inputs, text_key=text_key, errors=errors, split=split)
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
            held_out = _pack_and_write(pieces, writers, seq_len=seq_len, cls_id=specials["cls"],
                                       sep_id=specials["sep"], valid_fraction=valid_fraction,
                                       seed=seed)
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
            "valid_held_out": held_out if valid_fraction > 0 else "nothing (--valid-fraction 0)",
            "sources": [{"path": s.location, "kind": s.builder, "size_bytes": s.size_bytes}
                        for s in corpus.sources],
            "split_read": split,
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
        why = (" (version 1 packed single-segment [CLS] ... [SEP] sequences, so the token-type-1 "
               "embedding that pair tasks use would never train; version 2 builds ELECTRA's "
               "[CLS] A [SEP] B [SEP] examples)" if version == 1 else "")
        raise UserError(f"{file} has format version {version!r}; this fast_electra_ds "
                        f"({__version__}) reads version {FORMAT_VERSION}{why}: re-run "
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


def _tokenize_chunk(chunk: list[Piece], tok=None
                    ) -> list[tuple[int, bool, np.ndarray, np.ndarray]]:
    """[(document index, ends the document, token ids [n] int32, line lengths [lines] int64)],
    one per piece of the chunk."""
    tok = tok if tok is not None else _worker_tokenizer
    ids = encode_lines(tok, [line for _, lines, _ in chunk for line in lines])
    out, i = [], 0
    for doc_index, lines, last in chunk:
        piece_ids = ids[i:i + len(lines)]
        i += len(lines)
        lengths = np.fromiter(map(len, piece_ids), dtype=np.int64, count=len(piece_ids))
        flat = np.fromiter(itertools.chain.from_iterable(piece_ids), dtype=np.int32,
                           count=int(lengths.sum()))
        out.append((doc_index, last, flat, lengths))
    return out


_worker_tokenizer = None


def _init_worker(tokenizer_ref: str) -> None:
    global _worker_tokenizer
    # one worker per core already: Rust threads inside each would only oversubscribe the CPU
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_tokenizer = load_tokenizer(tokenizer_ref)


def _tokenized_pieces(corpus: Corpus, tok, tokenizer_ref: str, num_proc: int, scratch_dir: Path
                      ) -> Iterator[tuple[int, bool, np.ndarray, np.ndarray]]:
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


def pack_document(lines: Sequence[np.ndarray], seq_len: int, cls_id: int, sep_id: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """A document's lines (token ids of each) -> (its sequences back to back, their lengths).

    ELECTRA's ExampleBuilder (build_pretraining_dataset.py), one example at a time: take lines
    until they hold at least the target length (seq_len, or 5% of the time a random length in
    [5, seq_len]); put them into segment A while A stays under (target - 3) // 2 tokens (also the
    first line that crosses it, half of the time, if B is still empty), the rest into B, or 10% of
    the time all into A; trim A to seq_len - 2 and B to what is left after [CLS] A [SEP] ... [SEP].
    Two deviations, both to keep the text as it is: ELECTRA drops what the trim cuts off, here
    it starts the next example, so no token is lost; and once a line has gone to B, the lines
    after it do too (ELECTRA can put a later, shorter line into A, ahead of it). A and B are
    whole lines, except a line longer than a segment (cut) and the carried-over tail that
    starts the example after a cut. One segment: [CLS] A [SEP].
    """
    queue = deque(line for line in lines if len(line))
    sequences: list[np.ndarray] = []
    target = seq_len
    cls, sep = np.array([cls_id], dtype=np.int32), np.array([sep_id], dtype=np.int32)
    while queue:
        taken, length = [], 0
        while queue and length < target:
            taken.append(queue.popleft())
            length += len(taken[-1])
        first_target = (np.inf if rng.random() < SINGLE_SEGMENT_SHARE else (target - 3) // 2)
        a_lines: list[np.ndarray] = []
        b_lines: list[np.ndarray] = []
        a_length = 0
        for line in taken:
            if not a_lines or (not b_lines and (
                    a_length + len(line) < first_target
                    or (a_length < first_target and rng.random() < 0.5))):
                a_lines.append(line)
                a_length += len(line)
            else:
                b_lines.append(line)
        a = np.concatenate(a_lines)
        b = np.concatenate(b_lines) if b_lines else a[:0]
        a_kept = a[:seq_len - 2]
        b_kept = b[:max(0, seq_len - len(a_kept) - 3)]
        rest = np.concatenate([a[len(a_kept):], b[len(b_kept):]])
        if len(rest):
            queue.appendleft(rest)
        parts = [cls, a_kept, sep] + ([b_kept, sep] if len(b_kept) else [])
        sequences.append(np.concatenate(parts).astype(np.int32, copy=False))
        target = (int(rng.integers(MIN_RANDOM_LENGTH, seq_len + 1))
                  if rng.random() < RANDOM_LENGTH_SHARE else seq_len)
    return np.concatenate(sequences), [len(s) for s in sequences]


def document_rng(seed: int, doc_index: int) -> np.random.Generator:
    """The random choices of one document's examples: a function of (seed, document index)
    only, so the same corpus packs the same way with any number of tokenizer processes."""
    digest = hashlib.blake2b(f"{seed}:{doc_index}:examples".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def in_valid(seed: int, doc_index: int, valid_fraction: float) -> bool:
    """Whether document `doc_index` belongs to valid: a stable hash of (seed, index) in [0, 1)."""
    digest = hashlib.blake2b(f"{seed}:{doc_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0 ** 64 < valid_fraction


def _pack_and_write(pieces: Iterator[tuple[int, bool, np.ndarray, np.ndarray]],
                    writers: dict[str, IndexedWriter], *, seq_len: int, cls_id: int,
                    sep_id: int, valid_fraction: float, seed: int) -> str:
    """Pack every document and write it to its split; returns what valid holds, in words."""
    train, valid = writers["train"], writers["valid"]
    held_back = None  # (tokens, lengths) of the latest train document, written one document late
    current: list[tuple[np.ndarray, np.ndarray]] = []  # pieces of the document being assembled
    expected_index = 0
    for doc_index, last, ids, line_lengths in pieces:
        assert doc_index == expected_index, (doc_index, expected_index)
        current.append((ids, line_lengths))
        if not last:
            continue
        expected_index += 1
        doc = np.concatenate([ids for ids, _ in current])
        lines = np.split(doc, np.cumsum(np.concatenate([n for _, n in current]))[:-1])
        current = []
        if len(doc) == 0:  # e.g. only characters the normalizer removes
            continue
        packed = pack_document(lines, seq_len, cls_id, sep_id, document_rng(seed, doc_index))
        if in_valid(seed, doc_index, valid_fraction):
            valid.add_document(*packed)
            continue
        if held_back is not None:
            train.add_document(*held_back)
        held_back = packed
    assert not current, "the last piece did not close its document"
    held_out = ""
    if held_back is not None:
        if valid_fraction > 0 and valid.num_documents == 0:
            held_out = _hold_out_tail(held_back, train, valid, valid_fraction)
        else:
            train.add_document(*held_back)
    if train.num_documents == 0:
        raise UserError(f"no document with tokens landed in the train split "
                        f"({valid.num_documents} in valid); add text, or lower --valid-fraction")
    return held_out or (f"{valid.num_documents} whole documents, each picked with probability "
                        f"--valid-fraction {valid_fraction}")


def _hold_out_tail(last: tuple[np.ndarray, list[int]], train: IndexedWriter,
                   valid: IndexedWriter, valid_fraction: float) -> str:
    """No document hashed into valid (a corpus of few documents; a text file without blank lines
    is one document): hold out valid_fraction of all sequences (at least one) from the end of
    the last document, or the whole last document when it is not longer than that and another
    document stays in train. Says what it held out."""
    tokens, lengths = last
    k = max(1, round(valid_fraction * (train.num_sequences + len(lengths))))
    if train.num_documents > 0 and k >= len(lengths):
        valid.add_document(tokens, lengths)
        return (f"the last document ({len(lengths)} sequences): no document hashed into valid "
                f"at --valid-fraction {valid_fraction}")
    k = min(k, len(lengths) - 1)  # train keeps at least one sequence
    if k == 0:
        train.add_document(tokens, lengths)
        return "nothing: the corpus packs into a single sequence"
    cut = sum(lengths[:-k])
    train.add_document(tokens[:cut], lengths[:-k])
    valid.add_document(tokens[cut:], lengths[-k:])
    return (f"the last {k} sequences of the last document: no document hashed into valid at "
            f"--valid-fraction {valid_fraction} (the corpus has {train.num_documents} "
            f"document{'s' if train.num_documents > 1 else ''}; separate documents by blank "
            f"lines, or give one per JSON/parquet record, to hold out whole documents)")


def _split_stats(writer: IndexedWriter, seq_len: int) -> dict:
    slots = writer.num_sequences * seq_len
    return {"num_documents": writer.num_documents, "num_sequences": writer.num_sequences,
            "num_tokens": writer.num_tokens,
            "padding_fraction": round(1.0 - writer.num_tokens / slots, 6) if slots else 0.0}
