"""The pretraining input pipeline: global sample ids -> sequences -> masked micro-batches.

Order. Everything is a pure function of (seed, global sample id g), g = 0, 1, 2, ... over the
run. The global batch of step s is g in [s*G, (s+1)*G); within it, rank r of W at accumulation
micro-step j (of A = G / (m*W)) gets g = s*G + (j*W + r)*m + [0, m). The union over ranks is the
one-rank order, any world size with the same G sees the same global batches, and resuming at
`consumed_samples` continues the exact stream.

g -> sequence:
  1. blending: megatron-core's greedy (each sample goes to the dataset furthest behind its
     weight) over a block of BLEND_BLOCK_SIZE samples, repeated block after block, gives the
     dataset d and that dataset's counter c;
  2. epoch e = c // N_d, position c % N_d -> a keyed Feistel permutation of [0, N_d) for
     (seed, d, e): every epoch is a fresh shuffle, no memory of size N_d is ever built.

Masks come from `Masker`, which keys each sequence's randomness on g, so they too are
independent of world size, micro-batch split and resumes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fast_electra_ds.data.indexed import IndexedReader, blending_table
from fast_electra_ds.data.masking import MaskedBatch, Masker
from fast_electra_ds.data.prepare import SPLITS, read_manifest
from fast_electra_ds.data.seeding import derive_key, splitmix64
from fast_electra_ds.errors import UserError

BLEND_BLOCK_SIZE = 1 << 16  # samples per blending block: weights hold to ~1/65536 per block
FEISTEL_ROUNDS = 4


# --------------------------------------------------------------------------------------------
# Datasets and their manifests


@dataclass(frozen=True)
class DataInfo:
    """What the blended datasets of one split share, from their manifests."""

    seq_len: int
    vocab_size: int
    special_token_ids: dict  # {"pad", "cls", "sep", "mask": int, "unk": int or None}
    tokenizer: str  # the tokenizer folder (or hub id) the data was prepared with
    tokenizer_fingerprint: str
    num_sequences: tuple[int, ...]  # per dataset, in this split

    @property
    def special_ids(self) -> list[int]:
        """The special token ids present, for `Masker(special_ids=...)`."""
        return sorted({i for i in self.special_token_ids.values() if i is not None})


def open_datasets(paths: Sequence[str], split: str, *, seq_len: int | None = None
                  ) -> tuple[list[IndexedReader], DataInfo]:
    """Open `split` of each prepared dataset, after checking that they can be blended (same
    tokenizer fingerprint and seq_len), that the files are intact, and, when `seq_len` is given,
    that the data was packed for it."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not paths:
        raise UserError("data.paths is empty: name at least one folder written by "
                        "`fast-electra prepare-data`")
    manifests = [read_manifest(p) for p in paths]
    first = manifests[0]
    for path, m in zip(paths[1:], manifests[1:]):
        if m["tokenizer_fingerprint"] != first["tokenizer_fingerprint"]:
            raise UserError(
                f"{path} was tokenized with {m['tokenizer']}, {paths[0]} with "
                f"{first['tokenizer']} (different vocabularies or normalization): blended "
                f"datasets must share one tokenizer; re-run prepare-data on one of them with "
                f"the other's --tokenizer")
        if m["seq_len"] != first["seq_len"]:
            raise UserError(f"{path} was packed with seq-len {m['seq_len']}, {paths[0]} with "
                            f"{first['seq_len']}: blended datasets must share one; re-run "
                            f"prepare-data on one of them with the other's --seq-len")
    if seq_len is not None and first["seq_len"] != seq_len:
        raise UserError(f"{paths[0]} was packed with seq-len {first['seq_len']} but data.seq_len "
                        f"is {seq_len}: set data.seq_len={first['seq_len']}, or re-run "
                        f"`fast-electra prepare-data --seq-len {seq_len}`")
    readers = []
    for path, m in zip(paths, manifests):
        reader = IndexedReader(Path(path) / split)
        expected = m["splits"][split]["num_sequences"]
        if len(reader) != expected:
            raise UserError(f"{Path(path) / split}.idx holds {len(reader)} sequences but "
                            f"{path}/manifest.json says {expected}: the files do not belong "
                            f"together; re-run `fast-electra prepare-data`")
        if len(reader) == 0:
            raise UserError(f"{path} has no {split} sequences; re-run `fast-electra "
                            f"prepare-data` with more text" + (" or --valid-fraction > 0"
                                                               if split == "valid" else ""))
        if reader.sequence_lengths.max() > first["seq_len"]:
            raise UserError(f"{Path(path) / split}.idx has sequences longer than its seq-len "
                            f"{first['seq_len']}: it is corrupted; re-run `fast-electra "
                            f"prepare-data`")
        readers.append(reader)
    info = DataInfo(seq_len=first["seq_len"], vocab_size=first["vocab_size"],
                    special_token_ids=dict(first["special_token_ids"]),
                    tokenizer=first["tokenizer"],
                    tokenizer_fingerprint=first["tokenizer_fingerprint"],
                    num_sequences=tuple(len(r) for r in readers))
    return readers, info


# --------------------------------------------------------------------------------------------
# Order: sample ids of a micro-batch, and sample id -> (dataset, sequence)


def micro_batch_sample_ids(step: int, micro_step: int, *, rank: int, world_size: int,
                           micro_batch_size: int, global_batch_size: int) -> np.ndarray:
    """[micro_batch_size] int64 global sample ids of rank `rank`'s micro-step `micro_step` of
    optimizer step `step` (see the module docstring)."""
    m, w = micro_batch_size, world_size
    assert global_batch_size % (m * w) == 0 and 0 <= micro_step < global_batch_size // (m * w)
    start = step * global_batch_size + (micro_step * w + rank) * m
    return np.arange(start, start + m, dtype=np.int64)


def feistel_permutation(positions: np.ndarray, n: int, key: int) -> np.ndarray:
    """A key-chosen bijection of [0, n), applied to `positions` ([k] ints in [0, n)).

    A balanced Feistel network permutes [0, 4**h) with 4**h >= n; cycle walking (re-applying it
    while the result is >= n) restricts it to [0, n), still a bijection. O(1) memory in n.
    """
    half_bits = max(1, ((n - 1).bit_length() + 1) // 2)
    shift, mask = np.uint64(half_bits), np.uint64((1 << half_bits) - 1)
    round_keys = [np.uint64(splitmix64(key ^ r)) for r in range(FEISTEL_ROUNDS)]

    def encrypt(v: np.ndarray) -> np.ndarray:
        left, right = v >> shift, v & mask
        for rk in round_keys:
            left, right = right, left ^ (splitmix64(right ^ rk) & mask)
        return (left << shift) | right

    y = encrypt(np.asarray(positions, dtype=np.uint64))
    outside = y >= n
    while outside.any():
        y[outside] = encrypt(y[outside])
        outside = y >= n
    return y.astype(np.int64)


class SampleOrder:
    """Global sample id -> (dataset index, sequence index in that dataset); pure and picklable.

    weights: one per dataset, normalized here; None = proportional to the dataset sizes.
    """

    def __init__(self, num_sequences: Sequence[int], weights: Sequence[float] | None, seed: int):
        sizes = np.asarray(num_sequences, dtype=np.int64)
        assert len(sizes) >= 1 and (sizes > 0).all(), sizes
        w = np.asarray(weights if weights is not None else sizes, dtype=np.float64)
        if len(w) != len(sizes) or not (w > 0).all():
            raise UserError(f"blend weights must be one positive number per dataset "
                            f"({len(sizes)}), got {list(w)}")
        self.weights = w / w.sum()
        self.sizes, self.seed = sizes, seed
        if len(sizes) > 1:
            # [B] dataset of each sample of a block, and its count within the block
            self.block_dataset, self.block_counter = blending_table(self.weights,
                                                                    BLEND_BLOCK_SIZE)
            self.block_counts = np.bincount(self.block_dataset, minlength=len(sizes))  # [D]
            if (self.block_counts == 0).any():
                raise UserError(f"blend weights {list(self.weights)} give some dataset no "
                                f"sample in {BLEND_BLOCK_SIZE}; raise its weight")

    def __call__(self, sample_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """sample_ids [k] int64 -> (dataset index [k] int64, sequence index [k] int64)."""
        g = np.asarray(sample_ids, dtype=np.int64)
        assert (g >= 0).all()
        if len(self.sizes) == 1:
            dataset, counter = np.zeros_like(g), g
        else:
            block, within = np.divmod(g, BLEND_BLOCK_SIZE)
            dataset = self.block_dataset[within].astype(np.int64)
            counter = block * self.block_counts[dataset] + self.block_counter[within]
        epoch, position = np.divmod(counter, self.sizes[dataset])
        sequence = np.empty_like(g)
        # one permutation per (dataset, epoch) present; a micro-batch usually holds one or two
        groups, group_of = np.unique(np.stack([dataset, epoch]), axis=1, return_inverse=True)
        for k, (d, e) in enumerate(groups.T.tolist()):
            sel = group_of.reshape(-1) == k
            key = derive_key(self.seed, d, e)
            sequence[sel] = feistel_permutation(position[sel], int(self.sizes[d]), key)
        return dataset, sequence


# --------------------------------------------------------------------------------------------
# torch Dataset, sampler, collate


Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]  # ids, mask, types [L]; sample id


class PackedSequences(torch.utils.data.Dataset):
    """Indexed by global sample id: (input_ids [L] int64 padded with [PAD], attention_mask [L]
    int64, token_type_ids [L] int64, sample id).

    Token types are not stored but derived, as ELECTRA's segment ids are set: 0 up to and
    including the sequence's first [SEP] ([CLS] A [SEP]), 1 after it (B [SEP]), 0 on padding.
    """

    def __init__(self, readers: Sequence[IndexedReader], order: SampleOrder, *, seq_len: int,
                 pad_id: int, sep_id: int, vocab_size: int):
        self.readers, self.order = list(readers), order
        self.seq_len, self.pad_id, self.sep_id = seq_len, pad_id, sep_id
        self.vocab_size = vocab_size

    def __getitem__(self, sample_id: int) -> Sample:
        return self.__getitems__([sample_id])[0]

    def __getitems__(self, sample_ids: list[int]) -> list[Sample]:
        """Batched fetch (the DataLoader calls this): one order computation per micro-batch."""
        datasets, sequences = self.order(np.asarray(sample_ids, dtype=np.int64))
        out = []
        for g, d, i in zip(sample_ids, datasets, sequences):
            reader = self.readers[d]
            tokens = reader[i]  # [n] stored dtype, [CLS] ... [SEP]
            n = len(tokens)
            if n > self.seq_len or (n and int(tokens.max()) >= self.vocab_size):
                raise UserError(f"{reader.prefix}.bin sequence {i} is corrupted (length {n}, "
                                f"ids up to {int(tokens.max()) if n else None}, vocabulary "
                                f"{self.vocab_size}); re-run `fast-electra prepare-data`")
            input_ids = torch.full((self.seq_len,), self.pad_id, dtype=torch.int64)  # [L]
            input_ids[:n] = torch.from_numpy(tokens.astype(np.int64))
            attention_mask = torch.zeros(self.seq_len, dtype=torch.int64)  # [L]
            attention_mask[:n] = 1
            token_type_ids = torch.zeros(self.seq_len, dtype=torch.int64)  # [L]
            first_sep = int(np.argmax(tokens == self.sep_id)) if n else 0
            token_type_ids[first_sep + 1:n] = 1
            out.append((input_ids, attention_mask, token_type_ids, int(g)))
        return out


class MicroBatchSampler:
    """This rank's micro-batches of global sample ids, step after step from `consumed_samples`
    (a multiple of global_batch_size), forever."""

    def __init__(self, *, consumed_samples: int, rank: int, world_size: int,
                 micro_batch_size: int, global_batch_size: int):
        if consumed_samples % global_batch_size:
            raise ValueError(f"consumed_samples={consumed_samples} is not a multiple of "
                             f"global_batch_size={global_batch_size}")
        self.start_step = consumed_samples // global_batch_size
        self.rank, self.world_size = rank, world_size
        self.micro_batch_size, self.global_batch_size = micro_batch_size, global_batch_size
        self.num_micro_steps = global_batch_size // (micro_batch_size * world_size)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            for j in range(self.num_micro_steps):
                yield micro_batch_sample_ids(
                    step, j, rank=self.rank, world_size=self.world_size,
                    micro_batch_size=self.micro_batch_size,
                    global_batch_size=self.global_batch_size).tolist()
            step += 1


class MaskingCollate:
    """Stacks samples and masks them: list of (ids [L], mask [L], types [L], g) -> MaskedBatch
    [B, ...]."""

    def __init__(self, masker: Masker):
        self.masker = masker

    def __call__(self, samples: list[Sample]) -> MaskedBatch:
        input_ids = torch.stack([s[0] for s in samples])  # [B, L]
        attention_mask = torch.stack([s[1] for s in samples])  # [B, L]
        token_type_ids = torch.stack([s[2] for s in samples])  # [B, L]
        sample_ids = torch.tensor([s[3] for s in samples], dtype=torch.int64)  # [B]
        return self.masker(input_ids, attention_mask, sample_ids, token_type_ids)


def packed_sequences(paths: list[str], *, split: str, seq_len: int, seed: int,
                     weights: list[float] | None = None) -> PackedSequences:
    """`split` of the blended datasets, indexed by global sample id in the order of `seed`."""
    readers, info = open_datasets(paths, split, seq_len=seq_len)
    if weights is not None and len(weights) != len(paths):
        raise UserError(f"data.weights has {len(weights)} entries for {len(paths)} data.paths")
    return PackedSequences(readers, SampleOrder(info.num_sequences, weights, seed),
                           seq_len=seq_len, pad_id=info.special_token_ids["pad"],
                           sep_id=info.special_token_ids["sep"], vocab_size=info.vocab_size)


def build_loader(paths: list[str], *, split: str, seq_len: int, micro_batch_size: int,
                 global_batch_size: int, rank: int, world_size: int, seed: int,
                 consumed_samples: int, masker: Masker, num_workers: int = 0,
                 weights: list[float] | None = None) -> Iterator[MaskedBatch]:
    """This rank's masked micro-batches of `split`, from `consumed_samples` on, forever.

    Every dataset wraps into a new shuffled epoch when exhausted, the valid split too: for
    evaluation, take a fixed number of micro-batches from consumed_samples=0 (same batches and
    masks every time).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if micro_batch_size < 1 or global_batch_size % (micro_batch_size * world_size):
        raise UserError(f"train.global_batch_size={global_batch_size} must be a multiple of "
                        f"train.micro_batch_size * world size = {micro_batch_size} * "
                        f"{world_size}")
    if num_workers < 0:
        raise UserError(f"data.num_workers must be >= 0, got {num_workers}")
    assert masker.seq_len == seq_len, (masker.seq_len, seq_len)
    dataset = packed_sequences(paths, split=split, seq_len=seq_len, seed=seed, weights=weights)
    sampler = MicroBatchSampler(consumed_samples=consumed_samples, rank=rank,
                                world_size=world_size, micro_batch_size=micro_batch_size,
                                global_batch_size=global_batch_size)
    # Its own generator: otherwise iter(DataLoader) draws a base seed from the *global* torch RNG,
    # shifting the dropout stream, so a resumed run (which builds the loader after restoring
    # the RNG) would no longer match an uninterrupted one. Nothing here is random anyway.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                         collate_fn=MaskingCollate(masker),
                                         prefetch_factor=2 if num_workers > 0 else None,
                                         generator=torch.Generator().manual_seed(seed))
    return iter(loader)
