"""megatron-core indexed datasets: the one module that imports megatron.core.

A dataset is a prefix P with two files: P.bin holds every sequence's token ids back to back;
P.idx holds a header (magic, version, dtype code, sequence and document counts) then
int32 lengths [S], int64 byte pointers [S] and int64 document boundaries [D+1].

megatron.core is imported on first use, not with this module: it takes seconds and ~400 MB,
and argument errors in `prepare-data` should not wait for it. Its Transformer-Engine/Apex
"not installed" warnings are silenced: they concern training kernels this package does not use.
"""

from __future__ import annotations

import contextlib
import functools
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np

from fast_electra_ds.errors import UserError

_HEADER_BYTES = 9 + 8 + 1 + 8 + 8  # magic, version, dtype code, sequence count, document count


@contextlib.contextmanager
def _quiet_megatron_import() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not "
                                                  "installed.*")
        yield


@functools.cache
def _megatron() -> ModuleType:
    with _quiet_megatron_import():
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


def storage_dtype(vocab_size: int) -> np.dtype:
    """The smallest dtype megatron-core stores ids of this vocabulary in (uint16 below 65500)."""
    return np.dtype(_megatron().DType.optimal_dtype(vocab_size))


class IndexedWriter:
    """Appends documents (each one or more sequences) to P.bin; `finalize` writes P.idx.

    megatron's builder keeps every sequence length in a Python list until `finalize`: roughly
    40 bytes of memory per sequence (a few MB for a 100M-token corpus at seq_len 128).
    """

    def __init__(self, prefix: Path, vocab_size: int):
        mdt = _megatron()
        self.prefix = prefix
        self.dtype = storage_dtype(vocab_size)
        self._builder = mdt.IndexedDatasetBuilder(mdt.get_bin_path(str(prefix)),
                                                  dtype=self.dtype.type)
        self.num_documents = self.num_sequences = self.num_tokens = 0

    def add_document(self, tokens: np.ndarray, lengths: list[int]) -> None:
        """tokens: [sum(lengths)], the document's sequences back to back."""
        assert lengths and sum(lengths) == len(tokens), (len(tokens), lengths)
        # add_document writes the tokens and closes the document (what end_document does
        # after a run of add_item calls) in one write instead of one per sequence
        self._builder.add_document(tokens.astype(self.dtype, copy=False), lengths)
        self.num_documents += 1
        self.num_sequences += len(lengths)
        self.num_tokens += len(tokens)

    def finalize(self) -> None:
        self._builder.finalize(_megatron().get_idx_path(str(self.prefix)))


def check_indexed_files(prefix: Path) -> int:
    """The number of sequences in P, after raising a UserError naming the file if P.idx or P.bin
    is missing, truncated or corrupted.

    Checks the header, that the .idx size matches its counts, that lengths, pointers and
    document boundaries are consistent, and that P.bin holds exactly sum(lengths) items. Reads
    the index through a memory map (12 bytes per sequence), never the .bin.
    """
    mdt = _megatron()
    idx_path, bin_path = Path(mdt.get_idx_path(str(prefix))), Path(mdt.get_bin_path(str(prefix)))
    fix = "re-run `fast-electra prepare-data` to rebuild the dataset"
    for path in (idx_path, bin_path):
        if not path.is_file():
            raise UserError(f"{path} is missing; the dataset is incomplete: {fix}")

    def bad(what: str, path: Path = idx_path) -> UserError:
        return UserError(f"{path} is corrupted or truncated ({what}); {fix}")

    idx_bytes = idx_path.stat().st_size
    if idx_bytes < _HEADER_BYTES:
        raise bad(f"{idx_bytes} bytes, shorter than the header")
    with open(idx_path, "rb") as f:
        header = f.read(_HEADER_BYTES)
    magic = header[:9]
    version, code, num_sequences, num_boundaries = struct.unpack("<QBQQ", header[9:])
    if magic != mdt._INDEX_HEADER:
        raise bad("wrong magic bytes: not a megatron-core .idx file")
    if version != 1:
        raise bad(f"index version {version}, expected 1")
    if code not in {d.value for d in mdt.DType}:
        raise bad(f"unknown dtype code {code}")
    expected = _HEADER_BYTES + num_sequences * (4 + 8) + num_boundaries * 8
    if idx_bytes != expected or num_boundaries < 1:
        raise bad(f"{idx_bytes} bytes, but its counts ({num_sequences} sequences, "
                  f"{max(num_boundaries - 1, 0)} documents) need {expected}")
    itemsize = mdt.DType.size(code)
    data = np.memmap(idx_path, mode="r", dtype=np.uint8, offset=_HEADER_BYTES)
    lengths = data[:4 * num_sequences].view(np.int32)  # [S]
    pointers = data[4 * num_sequences:12 * num_sequences].view(np.int64)  # [S]
    boundaries = data[12 * num_sequences:].view(np.int64)  # [D+1]
    if num_sequences and lengths.min() < 0:
        raise bad("negative sequence length")
    ends = np.cumsum(lengths, dtype=np.int64) * itemsize  # [S] byte offset after each sequence
    if num_sequences and (pointers[0] != 0 or not np.array_equal(pointers[1:], ends[:-1])):
        raise bad("sequence pointers disagree with the lengths")
    if boundaries[0] != 0 or boundaries[-1] != num_sequences or np.any(np.diff(boundaries) < 0):
        raise bad("document boundaries out of order")
    bin_bytes = bin_path.stat().st_size
    want = int(ends[-1]) if num_sequences else 0
    if bin_bytes != want:
        raise bad(f"{bin_bytes} bytes, but the index describes {want}", bin_path)
    return num_sequences


class IndexedReader:
    """Read-only access to one prefix, after `check_indexed_files`; pickles by path (for
    DataLoader workers), each process memory-maps the files itself."""

    def __init__(self, prefix: Path):
        self.prefix = prefix
        self.num_sequences = check_indexed_files(prefix)
        # an empty split has an empty .bin, which megatron cannot memory-map
        self._ds = _megatron().IndexedDataset(str(prefix), mmap=True) if self.num_sequences \
            else None

    def __len__(self) -> int:
        return self.num_sequences

    def __getitem__(self, index: int) -> np.ndarray:
        """Sequence `index` as stored: [CLS] ... [SEP]. A copy: megatron closes its memory map
        when the dataset is freed, and a view that outlived it would crash on access."""
        return np.array(self._ds[int(index)])

    @property
    def sequence_lengths(self) -> np.ndarray:
        """[S] int32, a view: valid while this reader lives."""
        return self._ds.sequence_lengths if self._ds else np.zeros(0, dtype=np.int32)

    @property
    def document_indices(self) -> np.ndarray:
        """[D+1] int64, the first sequence of each document then S (a view)."""
        return self._ds.document_indices if self._ds else np.zeros(1, dtype=np.int64)

    def __getstate__(self) -> dict:
        return {"prefix": self.prefix}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["prefix"])


def blending_table(weights: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """megatron-core's greedy blend of `size` samples over datasets with normalized `weights`.

    Returns dataset_index [size] int16 (sample i's dataset: the one furthest behind its share,
    weight * i - count) and dataset_sample_index [size] int64 (how many samples that dataset had
    before sample i).
    """
    with _quiet_megatron_import():
        from megatron.core.datasets import helpers_cpp
    dataset_index = np.zeros(size, dtype=np.int16)
    dataset_sample_index = np.zeros(size, dtype=np.int64)
    helpers_cpp.build_blending_indices(dataset_index, dataset_sample_index,
                                       np.asarray(weights, dtype=np.float64), len(weights), size,
                                       False)
    return dataset_index, dataset_sample_index

