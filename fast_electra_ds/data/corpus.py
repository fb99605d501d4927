"""Reading a corpus as a stream of documents, and writing output folders atomically.

Inputs are files or globs, folders, or hub ids. A file's `datasets` builder is chosen by extension:
    .json / .jsonl  -> "json":    one record per document, its `text_key` field, split on "\\n"
    .parquet        -> "parquet": the same
    anything else   -> "text":    a document is a run of non-blank lines; blank lines separate them
A folder is a dataset written by `save_to_disk` ("disk": a Dataset, or a DatasetDict whose
`split` is read), or else a folder of .parquet / .jsonl / .json shards (each read as above, sorted).
A name that is not a path, like "org/name" or "wikitext", is a dataset on the HF hub ("hub"),
streamed: its `split`, one record per document, `text_key`. Everything is read with
`streaming=True` (a saved dataset by memory map), one source at a time in the order given, so a
document never spans two sources and memory holds one batch of records, never the corpus.

UTF-8: before anything is read, each text / JSON file gets a streaming binary scan. With
errors="strict" the first invalid byte is a UserError naming the file, byte offset and line. With
errors="skip" a file that holds invalid bytes is copied, without its invalid lines, into a scratch
folder and read from there (exact: a line is kept iff its bytes are valid UTF-8; the copy costs
disk only for files that need it); the number of skipped lines is printed and kept in
`Corpus.num_skipped_lines`. Parquet strings are UTF-8 by construction.

Small labelled hub datasets (GLUE for fine-tuning) are read whole instead, by `read_hub_splits`:
downloaded once into datasets' cache, which HF_DATASETS_OFFLINE=1 reads without network. This
module is where the project imports `datasets`.
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fast_electra_ds.errors import UserError

_BUILDER_BY_SUFFIX = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_SCAN_CHUNK_BYTES = 1 << 20
_BATCH_ROWS = 1000  # rows per batch pulled from `datasets`
_READ_CHUNK_BYTES = 1 << 20  # see _stream


@dataclass(frozen=True)
class Source:
    """One input: a file, a saved dataset folder, or a hub dataset."""

    path: Path  # for "hub", the dataset id as a relative path
    builder: str  # "text" | "json" | "parquet" (packaged builders) | "disk" | "hub"
    size_bytes: int  # 0 for "hub"

    @property
    def location(self) -> str:
        """What the manifest records: the resolved path, or the hub id."""
        return str(self.path) if self.builder == "hub" else str(self.path.resolve())


# save_to_disk writes these: a Dataset's state.json + dataset_info.json, a DatasetDict's
# dataset_dict.json
_SAVED_DATASET_FILES = ("state.json", "dataset_dict.json")


def _looks_like_hub_id(item: str) -> bool:
    """"org/name" or "name": no path syntax, and nothing by that name on disk up to its parent."""
    path = Path(item)
    return (not path.exists() and item.count("/") <= 1 and not item.startswith((".", "/", "~"))
            and not path.suffix and (item.count("/") == 0 or not path.parent.exists()))


def resolve_inputs(inputs: Sequence[str]) -> list[Source]:
    """Files, globs, folders and hub ids -> sources in the given order (each glob and shard
    folder sorted); files must exist and be non-empty."""
    if not inputs:
        raise UserError("no input given: pass --input FILE_OR_GLOB ...")
    sources: list[Source] = []
    for item in inputs:
        if glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            files = [Path(m) for m in matches if os.path.isfile(m)]
            if not files:
                raise UserError(f"input glob {item!r} matches no file; check the pattern (quote it "
                                f"so that the shell does not expand it) and the directory")
        else:
            path = Path(item)
            if path.is_dir():
                if any((path / f).is_file() for f in _SAVED_DATASET_FILES):
                    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                    sources.append(Source(path=path, builder="disk", size_bytes=size))
                    continue
                files = sorted(f for f in path.iterdir()
                               if f.is_file() and f.suffix.lower() in _BUILDER_BY_SUFFIX)
                if not files:
                    raise UserError(
                        f"input {item} is a directory that is neither a dataset saved with "
                        f"save_to_disk nor a folder of .parquet / .jsonl / .json shards; pass its "
                        f"files or a glob such as '{path / '*.txt'}'")
            elif _looks_like_hub_id(item):
                sources.append(Source(path=path, builder="hub", size_bytes=0))
                continue
            elif not path.is_file():
                raise UserError(f"input file {item} does not exist; check the path")
            else:
                files = [path]
        for path in files:
            size = path.stat().st_size
            if size == 0:
                raise UserError(f"input file {path} is empty; remove it from --input")
            builder = _BUILDER_BY_SUFFIX.get(path.suffix.lower(), "text")
            sources.append(Source(path=path, builder=builder, size_bytes=size))
    return sources


def find_invalid_utf8(path: Path) -> tuple[int, int] | None:
    """(byte offset, 1-based line number) of the first byte that is not valid UTF-8, or None.

    Streams the file in 1 MiB chunks; a multi-byte character cut by a chunk boundary is carried
    into the next chunk (utf_8_decode with final=False leaves it unconsumed).
    """
    offset = 0  # file offset of `pending[0]`
    lines_before = 0  # newlines before `offset`
    pending = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_SCAN_CHUNK_BYTES)
            final = not chunk
            data = pending + chunk
            try:
                _, consumed = codecs.utf_8_decode(data, "strict", final)
            except UnicodeDecodeError as e:
                return offset + e.start, lines_before + data.count(b"\n", 0, e.start) + 1
            if final:
                return None
            lines_before += data.count(b"\n", 0, consumed)
            offset += consumed
            pending = data[consumed:]


def _copy_valid_lines(src: Path, dst: Path) -> int:
    """Copy the lines of `src` that are valid UTF-8 to `dst`; returns the number dropped."""
    dropped = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for line in fin:  # one line in memory at a time; the tokenizer needs whole lines anyway
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                dropped += 1
                continue
            fout.write(line)
    return dropped


class Corpus:
    """Validated inputs, read on demand as documents (lists of lines).

    Construction does every check that needs no tokenizer: inputs exist and are non-empty, text
    and JSON files are UTF-8 (errors="strict") and JSON / parquet records hold `text_key`.
    """

    def __init__(self, inputs: Sequence[str], *, text_key: str = "text", errors: str = "strict",
                 split: str = "train"):
        if errors not in ("strict", "skip"):
            raise UserError(f"errors must be 'strict' or 'skip', got {errors!r}")
        self.sources = resolve_inputs(inputs)
        self.text_key = text_key
        self.split = split  # of a hub dataset, or of a saved DatasetDict
        self.num_skipped_lines = 0
        self._needs_cleaning: set[Path] = set()
        for src in self.sources:
            if src.builder in ("parquet", "disk", "hub"):  # Arrow strings are UTF-8
                continue
            bad = find_invalid_utf8(src.path)
            if bad is None:
                continue
            if errors == "strict":
                byte_offset, line = bad
                raise UserError(
                    f"{src.path} is not valid UTF-8: invalid byte at offset {byte_offset} "
                    f"(line {line}). Pass --errors skip to drop such lines, or convert the file, "
                    f"e.g. iconv -f LATIN1 -t UTF-8 {src.path} > fixed.txt")
            self._needs_cleaning.add(src.path)
        for src in self.sources:
            if src.builder != "text" and src.path not in self._needs_cleaning:
                self._check_text_key(src.path, src.builder)

    def documents(self, scratch_dir: Path | None = None) -> Iterator[list[str]]:
        """Every non-empty document of every source, in order, as its lines (without newlines).

        `scratch_dir` receives cleaned copies of files with invalid UTF-8 (errors="skip"); each
        copy is deleted once read. Defaults to the system temp folder.
        """
        self.num_skipped_lines = 0
        for src in self.sources:
            if src.path not in self._needs_cleaning:
                yield from self._read(src.path, src.builder)
                continue
            with tempfile.TemporaryDirectory(dir=scratch_dir, prefix="clean-") as folder:
                clean = Path(folder) / src.path.name
                dropped = _copy_valid_lines(src.path, clean)
                self.num_skipped_lines += dropped
                print(f"warning: skipped {dropped} line(s) of {src.path} that are not valid UTF-8",
                      file=sys.stderr)
                if src.builder != "text":
                    self._check_text_key(clean, src.builder, shown_as=src.path)
                yield from self._read(clean, src.builder)

    # ----------------------------------------------------------------------------------------

    def _read(self, path: Path, builder: str) -> Iterator[list[str]]:
        if builder == "text":
            yield from _text_documents(_stream(path, "text"))
            return
        for batch in _stream(path, builder, self.split):
            for text in batch[self.text_key]:
                if text is None:
                    continue
                if not isinstance(text, str):
                    raise UserError(f"{path}: field {self.text_key!r} holds "
                                    f"{type(text).__name__} values, not text; pass --text-key "
                                    f"naming the text field")
                lines = text.split("\n")
                if any(line.strip() for line in lines):
                    yield lines

    def _check_text_key(self, path: Path, builder: str, shown_as: Path | None = None) -> None:
        first = next(iter(_stream(path, builder, self.split)), None)
        if first is None:
            raise UserError(f"{shown_as or path} holds no records; remove it from --input")
        if self.text_key not in first:
            raise UserError(f"{shown_as or path}: records have no field {self.text_key!r} "
                            f"(fields: {', '.join(sorted(first))}); pass --text-key with the "
                            f"field that holds the text")


def _saved_dataset(path: Path, split: str):
    """The Dataset saved at `path` (a DatasetDict's `split`), memory-mapped."""
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as e:
        raise UserError(f"{path} cannot be read as a dataset saved with save_to_disk ({e})") \
            from None
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise UserError(f"{path} holds the splits {', '.join(ds)}, not {split!r}; pass "
                            f"--split with one of them")
        ds = ds[split]
    return ds


def _hub_dataset(name: str, split: str):
    """A streaming view of hub dataset `name`'s `split`; a clear error where the hub (or the
    dataset, or the split) cannot be reached."""
    from datasets import load_dataset

    try:
        return load_dataset(name, split=split, streaming=True)
    except Exception as e:  # noqa: BLE001 (connection, not found, offline mode, bad split...)
        raise UserError(
            f"--input {name}: not a file or folder here, and the hub dataset {name!r} (split "
            f"{split!r}) cannot be read: {type(e).__name__}: {str(e)[:300]}. Check the name and "
            f"--split; without network, save it elsewhere with datasets' save_to_disk and pass "
            f"that folder") from None


@dataclass(frozen=True)
class HubSplit:
    """One split of a hub dataset, read whole."""

    columns: dict[str, list]  # column name -> its values, one per row
    class_names: dict[str, tuple[str, ...]]  # class-label column -> its class names, in id order


def read_hub_splits(name: str, config: str, splits: Sequence[str], *, instead: str,
                    ) -> dict[str, HubSplit]:
    """`splits` of the hub dataset `name` (its config `config`), loaded through datasets' cache
    (HF_HOME / HF_DATASETS_CACHE; with HF_DATASETS_OFFLINE=1 from the cache alone, without
    network). A dataset that cannot be loaded (no network, offline and not cached, no such
    config) or that lacks one of `splits` is a UserError ending with `instead`: what the caller
    can do in its place."""
    from datasets import ClassLabel, load_dataset
    from datasets import config as datasets_config

    try:
        dataset = load_dataset(name, config)
    except Exception as e:  # noqa: BLE001 (connection, offline without a copy, not found...)
        offline = (f" (offline mode is on: only the datasets cache "
                   f"{datasets_config.HF_DATASETS_CACHE} is read)"
                   if datasets_config.HF_HUB_OFFLINE else "")
        raise UserError(
            f"the hub dataset {name} (config {config}) cannot be loaded{offline}: "
            f"{type(e).__name__}: {str(e)[:300]}. Either load it once where the hub is "
            f"reachable, so that the datasets cache (HF_HOME or HF_DATASETS_CACHE) holds a copy, "
            f"and set HF_DATASETS_OFFLINE=1 to read that copy without network; or "
            f"{instead}") from None
    missing = [split for split in splits if split not in dataset]
    if missing:
        raise UserError(f"the hub dataset {name} (config {config}) holds the splits "
                        f"{', '.join(dataset)}, not {', '.join(missing)}; {instead}")
    return {split: HubSplit(
        columns=dataset[split].to_dict(),
        class_names={column: tuple(feature.names)
                     for column, feature in dataset[split].features.items()
                     if isinstance(feature, ClassLabel)})
        for split in splits}


def _stream(path: Path, builder: str, split: str = "train") -> Iterator[dict[str, list]]:
    """Batches (column -> list of values) of one source through a streaming `datasets` reader."""
    from datasets import load_dataset  # imported here: it takes ~1 s and only reading needs it

    if builder in ("disk", "hub"):
        ds = _saved_dataset(path, split) if builder == "disk" else _hub_dataset(str(path), split)
        try:
            yield from ds.iter(batch_size=_BATCH_ROWS)
        except (OSError, ConnectionError) as e:
            raise UserError(f"reading {path} failed part-way: {e}") from None
        return

    # text and json read the file in `chunksize` pieces (10 MB by default), each held as a string,
    # its lines and an Arrow table at once: 1 MiB keeps that transient small
    options = {"chunksize": _READ_CHUNK_BYTES} if builder in ("text", "json") else {}
    def unreadable(e: ValueError) -> UserError:
        # pyarrow.ArrowInvalid is a ValueError: malformed JSON lines, not a parquet file, ...
        return UserError(f"{path} cannot be read as {builder} ({e}); fix the file or remove it "
                         f"from --input")

    try:
        ds = load_dataset(builder, data_files=[str(path)], streaming=True, split="train",
                          **options)
        batches = iter(ds.iter(batch_size=_BATCH_ROWS))
    except ValueError as e:
        raise unreadable(e) from None
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except ValueError as e:
            raise unreadable(e) from None
        yield batch


def _text_documents(batches: Iterator[dict[str, list]]) -> Iterator[list[str]]:
    """Runs of non-blank lines; one or more blank (or whitespace-only) lines end a document."""
    doc: list[str] = []
    for batch in batches:
        for line in batch["text"]:
            if line.strip():
                doc.append(line)
            elif doc:
                yield doc
                doc = []
    if doc:
        yield doc


# --------------------------------------------------------------------------------------------
# Output folders: built beside their destination, renamed into place only when complete.


def check_output_dir(output: Path, *, overwrite: bool, marker: str, inputs: Sequence[Path] = (),
                     ) -> None:
    """Refuse a non-empty `output` unless `overwrite`; even then, replace only a folder that this
    package wrote (it holds `marker`) and that holds none of the inputs."""
    if output.exists() and not output.is_dir():
        raise UserError(f"output {output} exists and is not a directory; choose another --output")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not overwrite:
        raise UserError(f"output {output} already exists; pass --overwrite to replace it, or "
                        f"choose another --output")
    if not (output / marker).is_file():
        raise UserError(f"output {output} is not empty and holds no {marker}, so it was not "
                        f"written by this command; --overwrite will not delete it: remove it "
                        f"yourself or choose another --output")
    resolved = output.resolve()
    for path in inputs:
        if resolved in path.resolve().parents:
            raise UserError(f"input {path} is inside the output {output}; --overwrite would "
                            f"delete it: choose another --output")


@contextlib.contextmanager
def _interrupts_latched() -> Iterator[Callable[[], bool]]:
    """Yield `interrupted()`: whether SIGINT arrived inside the block. The signal still raises
    KeyboardInterrupt as usual, but Python drops an exception raised where it cannot propagate
    (measured: a Ctrl-C landing in logging's at-fork handler as the tokenizer pool forks is
    printed as "Exception ignored" and the command finished and exited 0), so the block's owner
    checks the latch before committing. Outside the main thread, or where SIGINT is not Python's
    default (ignored in a background job, or someone else's handler), the block runs unlatched."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield lambda: False
        return
    seen = []

    def latch(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, latch)
    try:
        yield lambda: bool(seen)
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def staged_output_dir(output: Path) -> Iterator[Path]:
    """Yield an empty sibling folder `OUTPUT.tmp-<pid>`; on success it replaces `output`.

    On any exception, KeyboardInterrupt included, the temporary folder is deleted and `output`
    is left as it was. An existing `output` is moved aside, the new one renamed in, then the old
    one deleted, so at every instant either the old or the new complete folder is in place
    (a hard kill, SIGKILL, can leave OUTPUT.tmp-<pid> behind, never a partial OUTPUT).
    """
    output = output.absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f"{output.name}.tmp-{os.getpid()}")
    if tmp.exists():  # left by an earlier process that had the same pid and was killed
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        with _interrupts_latched() as interrupted:
            yield tmp
            if interrupted():  # a Ctrl-C that Python swallowed still cancels the output
                raise KeyboardInterrupt
        if output.exists():
            old = output.with_name(f"{output.name}.old-{os.getpid()}")
            os.rename(output, old)
            try:
                os.rename(tmp, output)
            except BaseException:
                os.rename(old, output)
                raise
            shutil.rmtree(old)
        else:
            os.rename(tmp, output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
