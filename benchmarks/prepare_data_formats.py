"""Peak memory of `prepare-data` reading the `datasets` formats, as the corpus grows.

  python benchmarks/prepare_data_formats.py   # writes benchmarks/results/prepare_data_formats.md

The bundled corpus (corpus/kjv.txt) split into documents at blank lines, one record per document,
stored 1x, 10x and 30x (the documents repeated) as
  disk     a Dataset written by save_to_disk (20 MB Arrow shards; read memory-mapped)
  parquet  a folder of parquet shards of 2,000 documents each (read streaming)
and prepared with `--num-proc 1 --seq-len 128` (WordPiece vocab 8192, trained first, not timed).
Measured as benchmarks/prepare_data.py measures (run_prepare: main peak RSS from os.wait4's
rusage, tree peak by polling). Memory must stay flat: the ratios to 1x should be close to 1.
A saved dataset is read by memory map: the Arrow pages it has touched count in its RSS as
file-backed pages (page cache the kernel can drop), unlike the allocations of the other formats.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.prepare_data import KJV, RESULTS, VOCAB_SIZE, machine, run_prepare  # noqa: E402

COPIES = (1, 10, 30)
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
    if len(sys.argv) == 4 and sys.argv[1] == "--write":  # the child that writes one size
        write_inputs(Path(sys.argv[2]), kjv_documents() * int(sys.argv[3]))
        return
    from fast_electra_ds.data.tokenizer import train_tokenizer

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-formats-") as tmp:
        tmp = Path(tmp)
        tokenizer = train_tokenizer([str(KJV)], vocab_size=VOCAB_SIZE, output=str(tmp / "tok"))
        for copies in COPIES:
            # written by a child process: a child forked from a parent that held the corpus
            # would count the parent's pages in its own peak RSS (ru_maxrss), before its exec
            subprocess.run([sys.executable, __file__, "--write", str(tmp / f"x{copies}"),
                            str(copies)], check=True)
            inputs = {"disk": tmp / f"x{copies}" / "disk",
                      "parquet": tmp / f"x{copies}" / "parquet"}
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
    lines += ["", "| format | to | main peak RSS / 1x's | tree peak / 1x's |",
              "|---|---|---|---|"]
    for kind in ("disk", "parquet"):
        at = {r["corpus"]: r for r in rows if r["format"] == kind}
        for c in (f"{n}x" for n in COPIES[1:]):
            lines.append(f"| {kind} | {c} | "
                         f"{at[c]['main_peak_rss_mb'] / at['1x']['main_peak_rss_mb']:.2f} | "
                         f"{at[c]['tree_peak_mb'] / at['1x']['tree_peak_mb']:.2f} |")
    out = RESULTS / "prepare_data_formats.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
