"""The input pipeline: order as a pure function of the sample id, rank layout, resume, blending,
the exact round trip corpus -> prepare-data -> loader, and damaged files."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import (KJV, TINY_SEQ_LEN, TINY_VALID_FRACTION, direct_ids, expected_split,
                      text_documents)

from fast_electra_ds.data.indexed import IndexedReader
from fast_electra_ds.data.loader import (BLEND_BLOCK_SIZE, SampleOrder, build_loader,
                                         feistel_permutation, micro_batch_sample_ids, open_datasets)
from fast_electra_ds.data.masking import MaskedBatch, Masker
from fast_electra_ds.data.prepare import prepare_data
from fast_electra_ds.data.seeding import derive_key, splitmix64
from fast_electra_ds.data.tokenizer import load_tokenizer, train_tokenizer
from fast_electra_ds.errors import UserError


def masker_for(dataset, seed: int = 7, seq_len: int = TINY_SEQ_LEN) -> Masker:
    _, info = open_datasets([str(dataset)], "train")
    return Masker(seq_len=seq_len, vocab_size=info.vocab_size,
                  mask_id=info.special_token_ids["mask"], special_ids=info.special_ids, seed=seed)


def take(iterator, n: int) -> list[MaskedBatch]:
    return list(itertools.islice(iterator, n))


def assert_batches_equal(a: list[MaskedBatch], b: list[MaskedBatch]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for name, value in x.__dict__.items():
            assert torch.equal(value, getattr(y, name)), name


def loader(dataset, **overrides):
    kwargs = dict(split="train", seq_len=TINY_SEQ_LEN, micro_batch_size=4, global_batch_size=8,
                  rank=0, world_size=1, seed=11, consumed_samples=0,
                  masker=masker_for(dataset), num_workers=0)
    kwargs.update(overrides)
    paths = overrides.pop("paths", None) or [str(dataset)]
    kwargs.pop("paths", None)
    return build_loader(paths, **kwargs)


# --------------------------------------------------------------------------------------------
# Order


def test_splitmix64_gives_the_same_bits_on_ints_and_uint64_arrays():
    assert splitmix64(0) == 0xE220A8397B1DCDAF  # the reference splitmix64.c's first output
    words = [0, 1, 12345, 2**32, 2**63, 2**64 - 1]
    assert splitmix64(np.array(words, dtype=np.uint64)).tolist() == [splitmix64(w) for w in words]
    assert splitmix64(-1) == splitmix64(2**64 - 1)  # negative seeds: modulo 2**64
    assert derive_key(7, 3, 0) == splitmix64(splitmix64(splitmix64(7) ^ 3) ^ 0)
    assert derive_key(7) == splitmix64(7)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 16, 17, 100, 1000, 4097])
def test_feistel_is_a_bijection(n):
    for key in (0, 1, 2**63 + 5):
        perm = feistel_permutation(np.arange(n), n, key)
        assert perm.dtype == np.int64 and sorted(perm.tolist()) == list(range(n))
    if n >= 100:
        a, b = feistel_permutation(np.arange(n), n, 1), feistel_permutation(np.arange(n), n, 2)
        assert not np.array_equal(a, b)
        assert (a == np.arange(n)).mean() < 0.05  # a shuffle, not near the identity


def test_every_epoch_is_a_new_permutation():
    n = 37
    order = SampleOrder([n], None, seed=3)
    datasets, sequences = order(np.arange(5 * n))
    assert (datasets == 0).all()
    epochs = sequences.reshape(5, n)
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(n))
    assert len({tuple(e) for e in epochs}) == 5
    assert not np.array_equal(SampleOrder([n], None, seed=4)(np.arange(n))[1], epochs[0])


def test_order_is_pure_in_the_sample_id():
    order = SampleOrder([1000, 300], [0.6, 0.4], seed=5)
    full = order(np.arange(3 * BLEND_BLOCK_SIZE + 17))
    for start in (0, 1, 12345, BLEND_BLOCK_SIZE - 3, 2 * BLEND_BLOCK_SIZE + 11):
        part = SampleOrder([1000, 300], [0.6, 0.4], seed=5)(np.arange(start, start + 500))
        for a, b in zip(part, full):
            assert np.array_equal(a, b[start:start + 500])
    shuffled = np.random.default_rng(0).permutation(len(full[0]))
    for a, b in zip(order(shuffled), full):
        assert np.array_equal(a, b[shuffled])


def test_blending_weights_hold_deterministically():
    sizes, weights = [1000, 500, 50], [0.5, 0.3, 0.2]
    num_samples = 3 * BLEND_BLOCK_SIZE
    datasets, sequences = SampleOrder(sizes, weights, seed=1)(np.arange(num_samples))
    assert np.allclose(np.bincount(datasets) / num_samples, weights, atol=1e-3)
    # small prefixes are balanced too (greedy), not just the total
    assert np.allclose(np.bincount(datasets[:1000], minlength=3) / 1000, weights, atol=2e-3)
    again = SampleOrder(sizes, weights, seed=1)(np.arange(num_samples))
    assert np.array_equal(datasets, again[0]) and np.array_equal(sequences, again[1])
    # a dataset's draws go through whole epochs: its first N draws are all its sequences
    for d, n in enumerate(sizes):
        assert sorted(sequences[datasets == d][:n].tolist()) == list(range(n))

    default, _ = SampleOrder(sizes, None, seed=1)(np.arange(num_samples))
    assert np.allclose(np.bincount(default) / num_samples, np.array(sizes) / sum(sizes),
                       atol=1e-3)
    with pytest.raises(UserError, match="positive"):
        SampleOrder(sizes, [1.0, 0.0, 1.0], seed=1)


@pytest.mark.parametrize("world_size, micro_batch_size", [(1, 16), (1, 4), (2, 4), (4, 2),
                                                          (2, 8)])
def test_ranks_and_micro_steps_tile_each_global_batch(world_size, micro_batch_size):
    global_batch_size = 16
    for step in (0, 1, 7):
        ids = np.concatenate([
            micro_batch_sample_ids(step, j, rank=r, world_size=world_size,
                                   micro_batch_size=micro_batch_size,
                                   global_batch_size=global_batch_size)
            for j in range(global_batch_size // (micro_batch_size * world_size))
            for r in range(world_size)])
        assert ids.tolist() == list(range(step * 16, (step + 1) * 16))


# --------------------------------------------------------------------------------------------
# The loader


def test_loader_is_deterministic_and_resumes_exactly(tiny_dataset):
    first = take(loader(tiny_dataset), 12)  # 6 steps of 2 micro-batches
    assert_batches_equal(first, take(loader(tiny_dataset), 12))
    assert [b.sample_ids.tolist() for b in first[:2]] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    resumed = take(loader(tiny_dataset, consumed_samples=3 * 8), 6)
    assert_batches_equal(resumed, first[6:])
    with pytest.raises(ValueError, match="not a multiple"):
        loader(tiny_dataset, consumed_samples=5)


def test_two_ranks_see_the_one_rank_global_batches(tiny_dataset):
    one_rank = take(loader(tiny_dataset, micro_batch_size=4, global_batch_size=8), 8)
    per_rank = [take(loader(tiny_dataset, micro_batch_size=2, global_batch_size=8, rank=r,
                            world_size=2), 8) for r in range(2)]
    for step in range(4):
        def global_batch(batches: list[MaskedBatch]) -> dict[str, torch.Tensor]:
            merged = {k: torch.cat([b.__dict__[k] for b in batches])
                      for k in batches[0].__dict__}
            order = torch.argsort(merged["sample_ids"])
            return {k: v[order] for k, v in merged.items()}
        expected = global_batch(one_rank[2 * step:2 * step + 2])
        got = global_batch(per_rank[0][2 * step:2 * step + 2] + per_rank[1][2 * step:2 * step + 2])
        assert got["sample_ids"].tolist() == list(range(8 * step, 8 * step + 8))
        for k in expected:
            assert torch.equal(expected[k], got[k]), k


def test_worker_processes_give_the_same_batches(tiny_dataset):
    assert_batches_equal(take(loader(tiny_dataset, num_workers=2), 6),
                         take(loader(tiny_dataset), 6))


def test_corpus_to_loader_round_trip(tiny_corpus, tiny_tokenizer, tiny_dataset):
    """One epoch through the loader holds every stored sequence once, padded correctly, and the
    sequences put back in stored order are the direct tokenization of the corpus documents."""
    tok = load_tokenizer(str(tiny_tokenizer))
    reader = IndexedReader(tiny_dataset / "train")
    n = len(reader)
    batches = take(loader(tiny_dataset, micro_batch_size=64, global_batch_size=64), -(-n // 64))
    input_ids = torch.cat([b.input_ids for b in batches])[:n]  # [n, L]
    attention = torch.cat([b.attention_mask for b in batches])[:n]  # [n, L]
    sample_ids = torch.cat([b.sample_ids for b in batches])[:n]
    assert sample_ids.tolist() == list(range(n))
    _, sequence_index = SampleOrder([n], None, seed=11)(sample_ids.numpy())
    assert sorted(sequence_index.tolist()) == list(range(n))  # one epoch: each sequence once

    by_index: dict[int, list[int]] = {}
    for ids, mask, i in zip(input_ids, attention, sequence_index):
        length = int(mask.sum())
        assert mask[:length].eq(1).all() and mask[length:].eq(0).all()
        assert ids[length:].eq(tok.pad_token_id).all()
        assert ids[:length].tolist() == reader[i].tolist()
        by_index[int(i)] = [t for t in ids[:length].tolist()
                            if t not in (tok.cls_token_id, tok.sep_token_id)]
    bounds = reader.document_indices
    documents = [[t for i in range(bounds[d], bounds[d + 1]) for t in by_index[i]]
                 for d in range(len(bounds) - 1)]
    train_docs, _ = expected_split(text_documents(tiny_corpus), 1234, TINY_VALID_FRACTION)
    assert documents == [direct_ids(tok, lines) for lines in train_docs]


def test_token_types_are_0_through_the_first_sep_and_1_after(tiny_dataset, tiny_tokenizer):
    tok = load_tokenizer(str(tiny_tokenizer))
    batch = take(loader(tiny_dataset, micro_batch_size=64, global_batch_size=64), 1)[0]
    two_segments = 0
    for ids, mask, types in zip(batch.input_ids, batch.attention_mask, batch.token_type_ids):
        length = int(mask.sum())
        seps = torch.nonzero(ids[:length] == tok.sep_token_id).flatten().tolist()
        assert types[:seps[0] + 1].eq(0).all() and types[seps[0] + 1:length].eq(1).all()
        assert types[length:].eq(0).all()
        two_segments += len(seps) == 2
    assert two_segments > 32  # most of the corpus's examples have a segment B


def test_valid_split(tiny_dataset):
    batches = take(loader(tiny_dataset, split="valid"), 3)
    reader = IndexedReader(tiny_dataset / "valid")
    stored = {tuple(reader[i].tolist()) for i in range(len(reader))}
    for b in batches:
        for ids, mask in zip(b.input_ids, b.attention_mask):
            assert tuple(ids[:int(mask.sum())].tolist()) in stored
    assert_batches_equal(batches, take(loader(tiny_dataset, split="valid"), 3))


# --------------------------------------------------------------------------------------------
# Several datasets


@pytest.fixture(scope="module")
def other_datasets(tmp_path_factory, tiny_tokenizer):
    """Compatible (same tokenizer, seq_len 64), other seq_len, and other tokenizer datasets,
    from lines 3000-3600 of the corpus."""
    root = tmp_path_factory.mktemp("others")
    text = root / "more.txt"
    with open(KJV, encoding="utf-8") as f:
        text.write_text("".join(itertools.islice(f, 3000, 3600)), encoding="utf-8")
    out = {}
    for name, tok, seq_len in (("same", tiny_tokenizer, 64), ("seq32", tiny_tokenizer, 32),
                               ("cased", None, 64)):
        if tok is None:
            tok = train_tokenizer([str(text)], vocab_size=400, output=str(root / "cased-tok"),
                                  lowercase=False)
        out[name] = root / name
        prepare_data([str(text)], tokenizer=str(tok), seq_len=seq_len, output=str(out[name]),
                     valid_fraction=0.1)
    return out


def test_blended_loader(tiny_dataset, other_datasets):
    paths = [str(tiny_dataset), str(other_datasets["same"])]
    readers, info = open_datasets(paths, "train", seq_len=64)
    assert info.num_sequences == tuple(len(r) for r in readers)
    batches = take(loader(tiny_dataset, paths=paths, weights=[3.0, 1.0], micro_batch_size=64,
                          global_batch_size=64), 16)
    sample_ids = torch.cat([b.sample_ids for b in batches]).numpy()
    datasets, sequences = SampleOrder(info.num_sequences, [3.0, 1.0], seed=11)(sample_ids)
    assert abs((datasets == 0).mean() - 0.75) < 0.01
    input_ids = torch.cat([b.input_ids for b in batches])
    attention = torch.cat([b.attention_mask for b in batches])
    for ids, mask, d, i in zip(input_ids, attention, datasets, sequences):
        assert ids[:int(mask.sum())].tolist() == readers[d][i].tolist()


def test_datasets_that_cannot_be_blended(tiny_dataset, other_datasets):
    with pytest.raises(UserError, match="must share one tokenizer"):
        open_datasets([str(tiny_dataset), str(other_datasets["cased"])], "train")
    with pytest.raises(UserError, match="packed with seq-len 32, .* with 64"):
        open_datasets([str(tiny_dataset), str(other_datasets["seq32"])], "train")
    with pytest.raises(UserError, match=r"packed with seq-len 64 but data.seq_len is 128: set "
                                        r"data.seq_len=64, or re-run `fast-electra prepare-data "
                                        r"--seq-len 128`"):
        open_datasets([str(tiny_dataset)], "train", seq_len=128)


def test_batch_layout_errors(tiny_dataset):
    with pytest.raises(UserError, match="must be a multiple of"):
        loader(tiny_dataset, micro_batch_size=4, global_batch_size=12, world_size=2)
    with pytest.raises(UserError, match="data.weights has 2 entries for 1"):
        loader(tiny_dataset, weights=[1.0, 2.0])


def test_empty_valid_split_is_refused(tmp_path, tiny_corpus, tiny_tokenizer):
    out = tmp_path / "novalid"
    prepare_data([str(tiny_corpus)], tokenizer=str(tiny_tokenizer), seq_len=64, output=str(out),
                 valid_fraction=0.0)
    with pytest.raises(UserError, match="has no valid sequences.*--valid-fraction > 0"):
        open_datasets([str(out)], "valid")


# --------------------------------------------------------------------------------------------
# Damaged files: a UserError naming the file and the fix, never a numpy or megatron crash


def _truncate(path, num_bytes):
    data = path.read_bytes()
    path.write_bytes(data[:-num_bytes])


def _patch(path, offset, new):
    data = bytearray(path.read_bytes())
    data[offset:offset + len(new)] = new
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, file, what", [
    (lambda ds: _truncate(ds / "train.bin", 2), "train.bin", "bytes, but the index describes"),
    (lambda ds: (ds / "train.bin").write_bytes(b""), "train.bin", "bytes, but the index"),
    (lambda ds: _truncate(ds / "train.idx", 8), "train.idx", "but its counts"),
    (lambda ds: _truncate(ds / "train.idx", (ds / "train.idx").stat().st_size - 5), "train.idx",
     "shorter than the header"),
    (lambda ds: _patch(ds / "train.idx", 0, b"NOTANIDX"), "train.idx", "wrong magic bytes"),
    (lambda ds: _patch(ds / "train.idx", 9, b"\x07"), "train.idx", "index version 7"),
    (lambda ds: _patch(ds / "train.idx", 17, b"\x63"), "train.idx", "unknown dtype code 99"),
    (lambda ds: _patch(ds / "train.idx", 18, b"\xff\xff"), "train.idx", "but its counts"),
    (lambda ds: _patch(ds / "train.idx", 34, b"\x01\x00\x00\x00"), "train.idx",
     "pointers disagree"),
])
def test_damaged_files(copy_dataset, damage, file, what):
    ds = copy_dataset()
    masker = masker_for(ds)  # before the damage: reads the manifest only
    damage(ds)
    with pytest.raises(UserError) as e:
        build_loader([str(ds)], split="train", seq_len=TINY_SEQ_LEN, micro_batch_size=4,
                     global_batch_size=8, rank=0, world_size=1, seed=1, consumed_samples=0,
                     masker=masker)
    message = str(e.value)
    assert str(ds / file) in message and what in message
    assert "re-run `fast-electra prepare-data`" in message


def test_out_of_vocabulary_ids_are_reported(copy_dataset):
    ds = copy_dataset()
    masker = masker_for(ds)
    _patch(ds / "train.bin", 4, b"\xff\xff")  # a token id of 65535 in sequence 0
    batches = loader(ds, masker=masker, micro_batch_size=64, global_batch_size=64)
    with pytest.raises(UserError, match=r"train.bin sequence 0 is corrupted"):
        take(batches, 100)


def test_missing_files(copy_dataset):
    ds = copy_dataset()
    (ds / "valid.idx").unlink()
    with pytest.raises(UserError, match=r"valid.idx is missing; .*re-run"):
        open_datasets([str(ds)], "valid")
    (ds / "manifest.json").unlink()
    with pytest.raises(UserError, match="not a prepared dataset"):
        open_datasets([str(ds)], "train")
