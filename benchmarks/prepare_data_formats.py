"""Peak memory of `prepare-data` reading the `datasets` formats, as the corpus grows.

  python benchmarks/prepare_data_formats.py   # writes benchmarks/results/prepare_data_formats.md

The bundled corpus (corpus/kjv.txt) split into documents at blank lines, one record per document,
stored 1x and 10x (the documents repeated) as
  disk     a Dataset written by save_to_disk (20 MB Arrow shards; read memory-mapped)
  parquet  a folder of parquet shards of 2,000 documents each (read streaming)
and prepared with `--num-proc 1 --seq-len 128` (WordPiece vocab 8192, trained first, not timed).
Measured as benchmarks/prepare_data.py measures (run_prepare: main peak RSS from os.wait4's
rusage, tree peak by polling). Memory must stay flat: the 10x / 1x ratio should be close to 1.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.prepare_data import KJV, RESULTS, VOCAB_SIZE, machine, run_prepare  # noqa: E402

COPIES = (1, 10)
SHARD_DOCS = 2000


def kjv_documents() -> list[str]:
    docs, current = [], []
    for line in KJV.read_text(encoding="utf-8").splitlines():
        if line.strip():
            current.append(line)
        elif current:
            docs.append("\n".join(current))
            current = []
    if current:
        docs.append("\n".join(current))
    return docs


def write_inputs(folder: Path, docs: list[str]) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    disk = folder / "disk"
    Dataset.from_dict({"text": docs}).save_to_disk(str(disk), max_shard_size="20MB")
    shards = folder / "parquet"
    shards.mkdir(parents=True)
    for i in range(0, len(docs), SHARD_DOCS):
        pq.write_table(pa.table({"text": docs[i:i + SHARD_DOCS]}),
                       shards / f"part-{i // SHARD_DOCS:05d}.parquet")
    return {"disk": disk, "parquet": shards}


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    from fast_electra_ds.data.tokenizer import train_tokenizer

    docs = kjv_documents()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-formats-") as tmp:
        tmp = Path(tmp)
        tokenizer = train_tokenizer([str(KJV)], vocab_size=VOCAB_SIZE, output=str(tmp / "tok"))
        for copies in COPIES:
            inputs = write_inputs(tmp / f"x{copies}", docs * copies)
            for kind, path in inputs.items():
                row = {"format": kind, "corpus": f"{copies}x",
                       **run_prepare([path], tokenizer, tmp / "ds", 1),
                       "input_mb": folder_mb(path)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    lines = ["# prepare-data on `datasets` formats: peak memory as the corpus grows", "",
             f"Machine: {machine()}.",
             "Command: `python benchmarks/prepare_data_formats.py` (how each column is measured: "
             "its docstring and benchmarks/prepare_data.py's).", "",
             "| format | corpus | input MB | tokens | wall s | main peak RSS MB | tree peak MB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['format']} | {r['corpus']} | {r['input_mb']:.1f} | "
                     f"{r['num_tokens']:,} | {r['wall_s']:.1f} | {r['main_peak_rss_mb']:.0f} | "
                     f"{r['tree_peak_mb']:.0f} |")
    lines += ["", "| format | main peak RSS 10x / 1x | tree peak 10x / 1x |", "|---|---|---|"]
    for kind in ("disk", "parquet"):
        one, ten = (next(r for r in rows if r["format"] == kind and r["corpus"] == c)
                    for c in ("1x", "10x"))
        lines.append(f"| {kind} | {ten['main_peak_rss_mb'] / one['main_peak_rss_mb']:.2f} | "
                     f"{ten['tree_peak_mb'] / one['tree_peak_mb']:.2f} |")
    out = RESULTS / "prepare_data_formats.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
