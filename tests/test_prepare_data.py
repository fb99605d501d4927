"""prepare-data: exact round trip of the text, packing, split, formats, and every bad input.

Bad inputs go through the real CLI (`python -m fast_electra_ds prepare-data`), checking exit
status 2, the message, and that nothing was created or overwritten.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import (KJV, TINY_SEQ_LEN, TINY_VALID_FRACTION, direct_ids, expected_split,
                      text_documents)

from fast_electra_ds.data import prepare
from fast_electra_ds.data.indexed import IndexedReader
from fast_electra_ds.data.prepare import in_valid, pack_document, prepare_data, read_manifest
from fast_electra_ds.data.tokenizer import load_tokenizer, tokenizer_fingerprint
from fast_electra_ds.errors import UserError


def stored_documents(prefix: Path) -> list[list[np.ndarray]]:
    """The sequences of each stored document, in stored order."""
    reader = IndexedReader(prefix)
    bounds = reader.document_indices
    return [[reader[i] for i in range(bounds[d], bounds[d + 1])]
            for d in range(len(bounds) - 1)]


@pytest.fixture
def cli(capfd):
    """`fast-electra prepare-data ARGS` through the CLI's main(), in this process (one
    interpreter start and stack import per call saved; --num-proc 1, the default, forks
    nothing), its output captured at the file descriptors as a child's would be."""
    from fast_electra_ds.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capfd.readouterr()
        try:
            code = main(["prepare-data", *args])
        except SystemExit as stop:  # argparse's refusals
            code = stop.code
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)
    return run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --------------------------------------------------------------------------------------------
# Round trip


def test_round_trip_is_exact(tiny_corpus, tiny_tokenizer, tiny_dataset):
    """Stored token ids, document by document, equal the direct tokenization of the source's
    lines, and decode to the normalized words of the source text."""
    tok = load_tokenizer(str(tiny_tokenizer))
    specials = {tok.cls_token_id, tok.sep_token_id, tok.pad_token_id}
    train_docs, valid_docs = expected_split(text_documents(tiny_corpus), seed=1234,
                                            valid_fraction=TINY_VALID_FRACTION)
    assert len(valid_docs) >= 1 and len(train_docs) > 10 * len(valid_docs)
    normalizer = tok.backend_tokenizer.normalizer
    pre_tokenizer = tok.backend_tokenizer.pre_tokenizer

    for split, docs in (("train", train_docs), ("valid", valid_docs)):
        stored = stored_documents(tiny_dataset / split)
        assert len(stored) == len(docs)
        for lines, sequences in zip(docs, stored):
            ids = [int(t) for s in sequences for t in s if int(t) not in specials]
            assert ids == direct_ids(tok, lines)
            # independent of the tokenizer call: WordPiece tokens glued back into words
            words: list[str] = []
            for token in tok.convert_ids_to_tokens(ids):
                if token.startswith("##"):
                    words[-1] += token[2:]
                else:
                    words.append(token)
            source_words = [w for line in lines
                            for w, _ in pre_tokenizer.pre_tokenize_str(
                                normalizer.normalize_str(line))]
            assert words == source_words
            # packing: [CLS] A [SEP] or [CLS] A [SEP] B [SEP], at most seq_len tokens
            for s in sequences:
                assert s[0] == tok.cls_token_id and s[-1] == tok.sep_token_id
                assert 1 <= int((s == tok.sep_token_id).sum()) <= 2 and len(s) <= TINY_SEQ_LEN
    first = stored_documents(tiny_dataset / "train")[0]
    assert tok.decode(first[0], skip_special_tokens=True).startswith(
        "in the beginning god created the heaven and the earth. and the earth was without form")


def test_manifest(tiny_dataset, tiny_tokenizer, tiny_corpus):
    m = read_manifest(tiny_dataset)
    tok = load_tokenizer(str(tiny_tokenizer))
    assert m["format_version"] == prepare.FORMAT_VERSION
    assert m["tokenizer"] == str(tiny_tokenizer.resolve())
    assert m["tokenizer_fingerprint"] == tokenizer_fingerprint(tok)
    assert m["vocab_size"] == len(tok) and m["dtype"] == "uint16" and m["seq_len"] == TINY_SEQ_LEN
    assert m["special_token_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert m["sources"] == [{"path": str(tiny_corpus.resolve()), "kind": "text",
                             "size_bytes": tiny_corpus.stat().st_size}]
    assert m["skipped_lines"] == 0 and m["created_at"] and m["package_version"]
    for split in ("train", "valid"):
        stats, reader = m["splits"][split], IndexedReader(tiny_dataset / split)
        assert stats["num_sequences"] == len(reader)
        assert stats["num_tokens"] == int(reader.sequence_lengths.sum())
        assert stats["num_documents"] == len(reader.document_indices) - 1
        assert stats["padding_fraction"] == pytest.approx(
            1 - stats["num_tokens"] / (stats["num_sequences"] * TINY_SEQ_LEN), abs=1e-6)


def test_megatron_reads_the_files_and_agrees(tiny_dataset):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    for split in ("train", "valid"):
        theirs = IndexedDataset(str(tiny_dataset / split), mmap=True)
        ours = IndexedReader(tiny_dataset / split)
        assert len(theirs) == len(ours) > 0
        assert np.array_equal(theirs.document_indices, ours.document_indices)
        for i in range(len(theirs)):
            assert np.array_equal(theirs[i], ours[i])


def test_parallel_tokenization_writes_identical_files(tmp_path, tiny_corpus, tiny_tokenizer,
                                                      tiny_dataset):
    # In a fresh process, as prepare-data runs: its workers are forked, and this long-lived test
    # process holds threads (wandb's, torch.compile's worker pool) whose locks a fork can copy
    # held - a worker of this process once hung that way in the full suite.
    out = tmp_path / "parallel"
    code = ("from fast_electra_ds.data.prepare import prepare_data; "
            f"prepare_data([{str(tiny_corpus)!r}], tokenizer={str(tiny_tokenizer)!r}, "
            f"seq_len={TINY_SEQ_LEN}, output={str(out)!r}, "
            f"valid_fraction={TINY_VALID_FRACTION}, num_proc=2)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)
    for name in ("train.bin", "train.idx", "valid.bin", "valid.idx"):
        assert (out / name).read_bytes() == (tiny_dataset / name).read_bytes(), name


def test_documents_survive_read_chunk_boundaries(monkeypatch, tiny_corpus):
    """`datasets` reads text in chunks; documents and lines must not depend on where they fall."""
    from fast_electra_ds.data import corpus

    monkeypatch.setattr(corpus, "_READ_CHUNK_BYTES", 997)
    monkeypatch.setattr(corpus, "_BATCH_ROWS", 7)
    assert list(corpus.Corpus([str(tiny_corpus)]).documents()) == text_documents(tiny_corpus)


def _segments(sequence: np.ndarray, sep_id: int) -> tuple[list[int], list[int]]:
    """(A, B) of [CLS] A [SEP] (B [SEP])."""
    seps = np.flatnonzero(sequence == sep_id)
    return sequence[1:seps[0]].tolist(), sequence[seps[0] + 1:seps[-1]].tolist()


def test_pack_document_builds_electras_two_segment_examples():
    rng = np.random.default_rng(0)
    # lines of 3-40 tokens (the bundled corpus's verses), sequences of 64
    lines = [np.arange(1000 + 100 * i, 1000 + 100 * i + int(n), dtype=np.int32)
             for i, n in enumerate(rng.integers(3, 41, 3000))]
    lines.insert(7, np.arange(900_000, 900_090, dtype=np.int32))  # longer than a sequence
    tokens, lengths = pack_document(lines, 64, cls_id=2, sep_id=3,
                                    rng=prepare.document_rng(1, 0))
    sequences = np.split(tokens, np.cumsum(lengths)[:-1])
    assert all(len(s) <= 64 and s[0] == 2 and s[-1] == 3 for s in sequences)
    assert np.mean([len(s) == 64 for s in sequences]) > 0.9  # packed full but for ELECTRA's
    # 5% random-length targets (a target below 64 still often ends in a full sequence)
    # nothing is lost or reordered: the bodies, back to back, are the lines
    bodies = [t for s in sequences for part in _segments(s, 3) for t in part]
    assert bodies == np.concatenate(lines).tolist()
    # the middle [SEP] always falls between two lines
    line_ends = set(np.cumsum([len(x) for x in lines]).tolist())
    offset, pairs, singles = 0, 0, 0
    for s in sequences[:-1]:
        a, b = _segments(s, 3)
        if b:
            pairs += 1
            assert offset + len(a) in line_ends
        else:
            singles += 1
        offset += len(a) + len(b)
    # ELECTRA's 10% single-segment examples (more where a line fills a segment alone)
    assert 0.07 < singles / (pairs + singles) < 0.16, singles / (pairs + singles)
    # and the document's examples are a function of (seed, document index) alone
    again, _ = pack_document(lines, 64, 2, 3, rng=prepare.document_rng(1, 0))
    other, _ = pack_document(lines, 64, 2, 3, rng=prepare.document_rng(1, 1))
    assert np.array_equal(again, tokens) and not np.array_equal(other, tokens)


def test_split_hash_is_deterministic_and_proportional():
    picks = [in_valid(7, i, 0.1) for i in range(20000)]
    assert picks == [in_valid(7, i, 0.1) for i in range(20000)]
    assert abs(sum(picks) / 20000 - 0.1) < 0.01
    assert picks != [in_valid(8, i, 0.1) for i in range(20000)]


def test_valid_gets_the_tail_of_the_last_document_when_none_hashed_there(tmp_path, tiny_corpus,
                                                                        tiny_tokenizer):
    out = tmp_path / "ds"
    m = prepare_data([str(tiny_corpus)], tokenizer=str(tiny_tokenizer), seq_len=32,
                     output=str(out), valid_fraction=1e-9)
    docs = text_documents(tiny_corpus)
    # valid_fraction of the sequences, at least one, from the end of the last document
    assert m["splits"]["valid"]["num_sequences"] == 1
    assert m["splits"]["train"]["num_documents"] == len(docs)
    assert m["valid_held_out"].startswith("the last 1 sequences of the last document")
    tok = load_tokenizer(str(tiny_tokenizer))
    specials = {tok.cls_token_id, tok.sep_token_id}
    body = [int(t) for t in stored_documents(out / "valid")[0][0] if int(t) not in specials]
    last_doc = direct_ids(tok, docs[-1])
    assert body == last_doc[len(last_doc) - len(body):]

    m = prepare_data([str(tiny_corpus)], tokenizer=str(tiny_tokenizer), seq_len=32,
                     output=str(out), valid_fraction=0.0, overwrite=True)
    assert m["splits"]["valid"] == {"num_documents": 0, "num_sequences": 0, "num_tokens": 0,
                                    "padding_fraction": 0.0}
    assert m["valid_held_out"] == "nothing (--valid-fraction 0)"


def test_one_paragraph_per_line_corpus_gets_a_valid_split_megatron_reads(tmp_path,
                                                                         tiny_tokenizer, cli):
    """A common layout: one paragraph per line, no blank lines, i.e. a single document."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    corpus = tmp_path / "paragraphs.txt"
    with open(KJV, encoding="utf-8") as f:
        corpus.write_text("".join(line for _, line in zip(range(3000), f) if line.strip()))
    out = tmp_path / "ds"
    result = cli("--input", str(corpus), "--tokenizer", str(tiny_tokenizer), "--seq-len", "64",
                 "--output", str(out))
    assert result.returncode == 0, result.stderr
    m = read_manifest(out)
    n = m["splits"]["train"]["num_sequences"] + m["splits"]["valid"]["num_sequences"]
    assert m["splits"]["valid"]["num_sequences"] == round(0.01 * n) > 0
    assert "held out for valid: the last" in result.stdout and "blank lines" in result.stdout
    valid = IndexedDataset(str(out / "valid"), mmap=True)
    assert len(valid) == m["splits"]["valid"]["num_sequences"]


def test_json_parquet_and_globs_in_order(tmp_path, tiny_tokenizer):
    (tmp_path / "in").mkdir()
    with open(tmp_path / "in" / "a.jsonl", "w") as f:
        f.write(json.dumps({"body": "first record\nits second line", "id": 1}) + "\n")
        f.write(json.dumps({"body": "second record", "id": 2}) + "\n")
        f.write(json.dumps({"body": None, "id": 3}) + "\n")
    pq.write_table(pa.table({"body": ["third record", "fourth\n\nrecord"]}),
                   tmp_path / "in" / "b.parquet")
    (tmp_path / "in" / "c.txt").write_text("fifth document\n\n\nsixth\ndocument\n")
    out = tmp_path / "ds"
    m = prepare_data([str(tmp_path / "in" / "*.jsonl"), str(tmp_path / "in" / "c.txt"),
                      str(tmp_path / "in" / "b.parquet")], tokenizer=str(tiny_tokenizer),
                     seq_len=16, output=str(out), valid_fraction=0.0, text_key="body")
    tok = load_tokenizer(str(tiny_tokenizer))
    expected = [["first record", "its second line"], ["second record"],
                ["fifth document"], ["sixth", "document"], ["third record"],
                ["fourth", "", "record"]]
    stored = stored_documents(out / "train")
    specials = {tok.cls_token_id, tok.sep_token_id}
    assert [[int(t) for s in doc for t in s if int(t) not in specials] for doc in stored] == [
        direct_ids(tok, doc) for doc in expected]
    assert [Path(s["path"]).name for s in m["sources"]] == ["a.jsonl", "c.txt", "b.parquet"]

    with pytest.raises(UserError, match=r"no field 'text' \(fields: body, id\); pass --text-key"):
        prepare_data([str(tmp_path / "in" / "a.jsonl")], tokenizer=str(tiny_tokenizer),
                     seq_len=16, output=str(tmp_path / "ds2"))
    assert not (tmp_path / "ds2").exists()


def test_malformed_json_and_parquet(tmp_path, tiny_tokenizer):
    (tmp_path / "broken.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    (tmp_path / "fake.parquet").write_text("not parquet")
    for name in ("broken.jsonl", "fake.parquet"):
        with pytest.raises(UserError, match=f"{name} cannot be read as .*; fix the file or "
                                            f"remove it from --input"):
            prepare_data([str(tmp_path / name)], tokenizer=str(tiny_tokenizer), seq_len=16,
                         output=str(tmp_path / "ds"))
        assert not (tmp_path / "ds").exists()


def test_skip_invalid_utf8_in_json_lines(tmp_path, tiny_tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "good one"}\n{"text": "bad \xff one"}\n{"text": "good two"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl is not valid UTF-8: invalid byte at offset 35 "
                                        r"\(line 2\)"):
        prepare_data([str(path)], tokenizer=str(tiny_tokenizer), seq_len=16,
                     output=str(tmp_path / "ds"), valid_fraction=0.0)
    m = prepare_data([str(path)], tokenizer=str(tiny_tokenizer), seq_len=16,
                     output=str(tmp_path / "ds"), valid_fraction=0.0, errors="skip")
    assert m["skipped_lines"] == 1 and m["splits"]["train"]["num_documents"] == 2


# --------------------------------------------------------------------------------------------
# Interruptions leave nothing named OUTPUT


def _interrupt_on_chunk(monkeypatch, n: int, exc: type[BaseException]) -> None:
    original, calls = prepare._tokenize_chunk, []

    def flaky(chunk, tok=None):
        calls.append(1)
        if len(calls) == n:
            raise exc("interrupted by the test")
        return original(chunk, tok)
    monkeypatch.setattr(prepare, "_tokenize_chunk", flaky)


def test_interrupted_prepare_leaves_nothing(tmp_path, monkeypatch, tiny_corpus, tiny_tokenizer):
    _interrupt_on_chunk(monkeypatch, 2, KeyboardInterrupt)
    out = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        prepare_data([str(tiny_corpus)], tokenizer=str(tiny_tokenizer), seq_len=64,
                     output=str(out))
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_the_old_dataset(tmp_path, monkeypatch, copy_dataset,
                                                     tiny_corpus, tiny_tokenizer):
    out = copy_dataset("ds")
    before = snapshot(out)
    _interrupt_on_chunk(monkeypatch, 3, RuntimeError)
    with pytest.raises(RuntimeError):
        prepare_data([str(tiny_corpus)], tokenizer=str(tiny_tokenizer), seq_len=32,
                     output=str(out), overwrite=True)
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_sigint_during_parallel_prepare_leaves_nothing(tmp_path, tiny_tokenizer):
    out = tmp_path / "ds"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fast_electra_ds", "prepare-data", "--input", str(KJV), str(KJV),
         str(KJV), "--tokenizer", str(tiny_tokenizer), "--seq-len", "64", "--output", str(out),
         "--num-proc", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    # wait until tokenized data is being written in OUTPUT.tmp-<pid>, then interrupt
    while not list(tmp_path.glob("ds.tmp-*/train.bin")) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None, "prepare-data finished before the test could interrupt it"
    os.kill(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_a_ctrl_c_that_python_swallowed_still_cancels_the_output(tmp_path):
    """Python drops a KeyboardInterrupt raised where it cannot propagate: a SIGINT landing in
    logging's at-fork handler as the tokenizer pool forks made prepare-data finish and exit 0
    (seen in test_sigint_during_parallel_prepare_leaves_nothing under load). Here the swallowing
    is done on purpose; the staged output must still not be committed."""
    from fast_electra_ds.data.corpus import staged_output_dir

    out = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        with staged_output_dir(out) as tmp:
            (tmp / "train.bin").write_bytes(b"partial")
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)  # the handler runs here at the latest
            except KeyboardInterrupt:
                pass  # swallowed, as in an at-fork handler
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --------------------------------------------------------------------------------------------
# Bad inputs through the CLI: exit 2, a message saying the fix, nothing created


@pytest.mark.parametrize("case", ["missing", "empty", "glob", "directory"])
def test_cli_bad_input_files(tmp_path, tiny_tokenizer, case, cli):
    (tmp_path / "empty.txt").touch()
    (tmp_path / "folder").mkdir()
    arg, message = {
        "missing": (str(tmp_path / "absent.txt"), "absent.txt does not exist"),
        "empty": (str(tmp_path / "empty.txt"), "empty.txt is empty"),
        "glob": (str(tmp_path / "*.jsonl"), "matches no file"),
        "directory": (str(tmp_path / "folder"), "is a directory that is neither a dataset "
                      "saved with save_to_disk nor a folder of .parquet / .jsonl / .json shards; "
                      "pass its files or a glob"),
    }[case]
    done = cli("--input", arg, "--tokenizer", str(tiny_tokenizer), "--seq-len", "64",
               "--output", str(tmp_path / "ds"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr
    assert not (tmp_path / "ds").exists()


def test_cli_non_utf8_input(tmp_path, tiny_tokenizer, cli):
    path = tmp_path / "latin1.txt"
    good1, bad, good2 = "In the beginning God created\n", "the heaven and the earth \xe9t\xe9\n", \
        "And God said\n"
    path.write_bytes(good1.encode() + bad.encode("latin-1") + b"\n" + good2.encode())
    offset = len(good1) + bad.index("\xe9")
    out = tmp_path / "ds"
    done = cli("--input", str(path), "--tokenizer", str(tiny_tokenizer), "--seq-len", "64",
               "--output", str(out))
    assert done.returncode == 2
    assert f"{path} is not valid UTF-8: invalid byte at offset {offset} (line 2)" in done.stderr
    assert "--errors skip" in done.stderr and "iconv" in done.stderr
    assert not out.exists()

    done = cli("--input", str(path), "--tokenizer", str(tiny_tokenizer), "--seq-len", "64",
               "--output", str(out), "--errors", "skip", "--valid-fraction", "0")
    assert done.returncode == 0, done.stderr
    assert f"skipped 1 line(s) of {path}" in done.stderr
    assert read_manifest(out)["skipped_lines"] == 1
    tok = load_tokenizer(str(tiny_tokenizer))
    stored = [[int(t) for s in doc for t in s[1:-1]] for doc in stored_documents(out / "train")]
    assert stored == [tok(good1.strip(), add_special_tokens=False)["input_ids"],
                      tok(good2.strip(), add_special_tokens=False)["input_ids"]]


def test_cli_existing_output(tiny_corpus, tiny_tokenizer, copy_dataset, cli):
    out = copy_dataset("ds")
    before = snapshot(out)
    args = ["--input", str(tiny_corpus), "--tokenizer", str(tiny_tokenizer), "--output", str(out)]
    done = cli(*args, "--seq-len", "32")
    assert done.returncode == 2
    assert "already exists; pass --overwrite" in done.stderr
    assert snapshot(out) == before

    done = cli(*args, "--seq-len", "32", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert "train:" in done.stdout and "valid:" in done.stdout and "dataset written" in done.stdout
    assert read_manifest(out)["seq_len"] == 32
    assert [p.name for p in out.parent.iterdir()] == ["ds"]  # no .tmp or .old folder left


@pytest.mark.parametrize("missing", [{"[MASK]"}, {"[MASK]", "[CLS]", "[SEP]", "[PAD]"}])
def test_cli_tokenizer_without_special_tokens(tmp_path, tiny_corpus, tokenizer_without, missing,
                                              cli):
    tok = tokenizer_without(missing)
    done = cli("--input", str(tiny_corpus), "--tokenizer", str(tok), "--seq-len", "64",
               "--output", str(tmp_path / "ds"))
    assert done.returncode == 2
    named = [t for t in ("[MASK]", "[CLS]", "[SEP]", "[PAD]") if t in missing]
    assert f"lacks the special token(s) {', '.join(named)} " in done.stderr
    assert "train-tokenizer" in done.stderr
    assert not (tmp_path / "ds").exists()


def test_cli_seq_len_beyond_the_recipe(tmp_path, tiny_corpus, tiny_tokenizer, cli):
    done = cli("--input", str(tiny_corpus), "--tokenizer", str(tiny_tokenizer), "--seq-len", "256",
               "--config", "tiny", "--output", str(tmp_path / "ds"))
    assert done.returncode == 2
    assert "seq-len 256 exceeds the recipe's max_position_embeddings 128" in done.stderr
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("args, message", [
    (["--seq-len", "4"], "--seq-len must be >= 8"),
    (["--seq-len", "64", "--valid-fraction", "1"], "--valid-fraction must be in [0, 1)"),
    (["--seq-len", "64", "--num-proc", "0"], "--num-proc must be >= 1"),
    (["--seq-len", "64", "--tokenizer", "no-such-tokenizer"], "is not a directory"),
])
def test_cli_bad_arguments(tmp_path, tiny_corpus, tiny_tokenizer, args, message, cli):
    base = ["--input", str(tiny_corpus), "--tokenizer", str(tiny_tokenizer)]
    done = cli(*base, *args, "--output", str(tmp_path / "ds"))
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "ds").exists()


def test_read_manifest_errors(tmp_path, copy_dataset):
    with pytest.raises(UserError, match="does not exist; create it with"):
        read_manifest(tmp_path / "absent")
    (tmp_path / "half").mkdir()
    with pytest.raises(UserError, match="not a prepared dataset, or its preparation was "
                                        "interrupted"):
        read_manifest(tmp_path / "half")
    ds = copy_dataset("future")
    m = json.loads((ds / "manifest.json").read_text())
    m["format_version"] = 99
    (ds / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="format version 99"):
        read_manifest(ds)


# --------------------------------------------------------------------------------------------
# corpora in the `datasets` ecosystem: save_to_disk folders, shard folders, hub ids

RECORDS = {"body": ["first record\nits second line", "second record", None, "third record",
                    "fourth\n\nrecord"], "id": [1, 2, 3, 4, 5]}
RECORD_DOCS = [["first record", "its second line"], ["second record"], ["third record"],
               ["fourth", "", "record"]]


def _stored_ids(out: Path, tok) -> list[list[int]]:
    specials = {tok.cls_token_id, tok.sep_token_id}
    return [[int(t) for s in doc for t in s if int(t) not in specials]
            for doc in stored_documents(out / "train")]


def test_a_dataset_saved_to_disk_is_read_like_its_records(tmp_path, tiny_tokenizer):
    from datasets import Dataset, DatasetDict

    tok = load_tokenizer(str(tiny_tokenizer))
    saved = tmp_path / "saved"
    Dataset.from_dict(RECORDS).save_to_disk(str(saved))
    m = prepare_data([str(saved)], tokenizer=str(tiny_tokenizer), seq_len=16,
                     output=str(tmp_path / "ds"), valid_fraction=0.0, text_key="body")
    assert _stored_ids(tmp_path / "ds", tok) == [direct_ids(tok, d) for d in RECORD_DOCS]
    assert m["sources"][0]["kind"] == "disk" and m["sources"][0]["path"] == str(saved.resolve())

    # a DatasetDict: the split named by --split
    split = tmp_path / "split"
    DatasetDict({"train": Dataset.from_dict({"body": ["not this one"]}),
                 "test": Dataset.from_dict(RECORDS)}).save_to_disk(str(split))
    prepare_data([str(split)], tokenizer=str(tiny_tokenizer), seq_len=16,
                 output=str(tmp_path / "ds2"), valid_fraction=0.0, text_key="body",
                 split="test")
    assert _stored_ids(tmp_path / "ds2", tok) == [direct_ids(tok, d) for d in RECORD_DOCS]
    with pytest.raises(UserError, match=r"holds the splits train, test, not 'valid'; pass "
                                        r"--split"):
        prepare_data([str(split)], tokenizer=str(tiny_tokenizer), seq_len=16,
                     output=str(tmp_path / "ds3"), text_key="body", split="valid")
    # the same error for a missing field as for files
    with pytest.raises(UserError, match=r"no field 'text' \(fields: body, id\); pass --text-key"):
        prepare_data([str(saved)], tokenizer=str(tiny_tokenizer), seq_len=16,
                     output=str(tmp_path / "ds4"))
    assert not (tmp_path / "ds3").exists() and not (tmp_path / "ds4").exists()


def test_a_folder_of_shards_is_read_in_name_order(tmp_path, tiny_tokenizer):
    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(pa.table({"body": RECORDS["body"][:3]}), shards / "part-0.parquet")
    with open(shards / "part-1.jsonl", "w") as f:
        for text in RECORDS["body"][3:]:
            f.write(json.dumps({"body": text}) + "\n")
    (shards / "README.md").write_text("not a shard\n")
    m = prepare_data([str(shards)], tokenizer=str(tiny_tokenizer), seq_len=16,
                     output=str(tmp_path / "ds"), valid_fraction=0.0, text_key="body")
    tok = load_tokenizer(str(tiny_tokenizer))
    assert _stored_ids(tmp_path / "ds", tok) == [direct_ids(tok, d) for d in RECORD_DOCS]
    assert [Path(s["path"]).name for s in m["sources"]] == ["part-0.parquet", "part-1.jsonl"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a dataset saved with save_to_disk nor a folder"):
        prepare_data([str(tmp_path / "empty")], tokenizer=str(tiny_tokenizer), seq_len=16,
                     output=str(tmp_path / "ds2"))


def test_a_hub_dataset_without_network_is_a_clear_error(tmp_path, tiny_tokenizer):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "fast_electra_ds", "prepare-data", "--input",
         "no-such-org/no-such-corpus", "--split", "train", "--tokenizer", str(tiny_tokenizer),
         "--seq-len", "16", "--output", str(tmp_path / "ds")], capture_output=True, text=True,
        timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--input no-such-org/no-such-corpus: not a file or folder here, and the hub dataset " \
           "'no-such-org/no-such-corpus' (split 'train') cannot be read" in proc.stderr
    assert "save_to_disk" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "ds").exists()
