"""Throughput and peak memory of `prepare-data` on the bundled corpus and on a 10x larger one.

  python benchmarks/prepare_data.py            # writes benchmarks/results/prepare_data.{md,csv}

A WordPiece tokenizer (vocab 8192) is trained on corpus/kjv.txt first (not timed). Then
`python -m fast_electra_ds prepare-data --seq-len 128` runs as a subprocess on
  1x   corpus/kjv.txt (4.1 MB)
  10x  ten copies of it concatenated into a temporary file (41 MB; a blank line between copies)
  30x  thirty copies (124 MB): shows where memory levels off
with --num-proc 1 and 2. For each run:
  wall          seconds from start to exit, imports included (megatron-core alone takes ~4 s)
  cpu           user + system seconds of the main process and its workers (os.wait4 rusage)
  tokens/s      stored tokens ([CLS]/[SEP] included, from the manifest) / wall; tokens per CPU
                second too, which depends less on other load on the machine
  main peak RSS the main process's high-water mark, from os.wait4's rusage (exact, kept by the
                kernel; with workers it is the largest single process, here always the main one)
  tree peak     psutil polling every 50 ms: main process RSS + each worker's USS (private pages)
  load          the machine's mean 1-minute load average during the run (other programs count)
Memory must stay flat: the 10x / 1x (and 30x / 10x) ratio of each peak is reported and should
be close to 1.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for benchmarks.machine, when run as a script
KJV = REPO / "corpus" / "kjv.txt"
RESULTS = REPO / "benchmarks" / "results"
SEQ_LEN = 128
VOCAB_SIZE = 8192
POLL_S = 0.05
COPIES = (1, 10, 30)


def machine() -> str:
    from benchmarks.machine import cpu_name

    cpu = cpu_name()
    mem_gib = psutil.virtual_memory().total / 2**30
    return (f"{platform.platform()}, {cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, "
            f"Python {platform.python_version()}")


def tree_footprint(proc: psutil.Process) -> int:
    """Bytes the process tree holds: the main process's RSS plus each worker's USS (its private
    pages; what it shares with the main process, forked from it, is counted once). Unlike PSS
    this does not depend on what other programs on the machine map the same libraries."""
    total = proc.memory_info().rss
    for worker in proc.children(recursive=True):
        try:
            total += worker.memory_full_info().uss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def run_prepare(inputs: list[Path], tokenizer: Path, output: Path, num_proc: int) -> dict:
    cmd = [sys.executable, "-m", "fast_electra_ds", "prepare-data", "--input", *map(str, inputs),
           "--tokenizer", str(tokenizer), "--seq-len", str(SEQ_LEN), "--output", str(output),
           "--num-proc", str(num_proc), "--overwrite"]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = psutil.Process(child.pid)
    peak_tree, loads = 0, []
    while True:
        # WNOHANG: reap with wait4 to get this child's own rusage (peak RSS, CPU time)
        pid, status, rusage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        try:
            peak_tree = max(peak_tree, tree_footprint(proc))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
        loads.append(os.getloadavg()[0])
        time.sleep(POLL_S)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr = child.stderr.read().decode()
    if child.returncode != 0:
        raise SystemExit(f"prepare-data failed ({child.returncode}):\n{stderr}")
    manifest = json.loads((output / "manifest.json").read_text())
    num_tokens = sum(s["num_tokens"] for s in manifest["splits"].values())
    cpu = rusage.ru_utime + rusage.ru_stime  # the main process and its reaped workers
    return {"input_mb": sum(p.stat().st_size for p in inputs) / 1e6, "num_proc": num_proc,
            "num_tokens": num_tokens, "wall_s": wall, "cpu_s": cpu,
            "tokens_per_s": num_tokens / wall, "tokens_per_cpu_s": num_tokens / cpu,
            "main_peak_rss_mb": rusage.ru_maxrss / 1024,  # Linux reports KiB
            "tree_peak_mb": peak_tree / 2**20,
            "load_avg": sum(loads) / max(len(loads), 1)}


def packing(output: Path) -> dict:
    """How full the stored sequences are (this two-segment format), against the previous format
    ([CLS] piece [SEP], pieces of seq_len - 2 tokens cut from each document's token stream)
    computed from the same documents' tokens."""
    import math

    import numpy as np

    from fast_electra_ds.data.indexed import IndexedReader

    manifest = json.loads((output / "manifest.json").read_text())
    sep = manifest["special_token_ids"]["sep"]
    body_len = SEQ_LEN - 2
    now = {"sequences": 0, "tokens": 0, "pairs": 0}
    before = {"sequences": 0, "tokens": 0}
    for split in ("train", "valid"):
        reader = IndexedReader(output / split)
        bounds = reader.document_indices
        for d in range(len(bounds) - 1):
            body = 0
            for i in range(bounds[d], bounds[d + 1]):
                seq = reader[i]
                seps = int(np.count_nonzero(seq == sep))
                body += len(seq) - 1 - seps  # minus [CLS] and the [SEP]s
                now["sequences"] += 1
                now["tokens"] += len(seq)
                now["pairs"] += seps == 2
            k = math.ceil(body / body_len)
            before["sequences"] += k
            before["tokens"] += body + 2 * k
    return {"sequences": now["sequences"],
            "padding": 1 - now["tokens"] / (now["sequences"] * SEQ_LEN),
            "two_segment_share": now["pairs"] / now["sequences"],
            "sequences_before": before["sequences"],
            "padding_before": 1 - before["tokens"] / (before["sequences"] * SEQ_LEN)}


def main() -> None:
    from fast_electra_ds.data.tokenizer import train_tokenizer

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        tmp = Path(tmp)
        tokenizer = train_tokenizer([str(KJV)], vocab_size=VOCAB_SIZE, output=str(tmp / "tok"))
        corpora = {"1x": KJV}
        for copies in COPIES[1:]:
            corpora[f"{copies}x"] = tmp / f"kjv_x{copies}.txt"
            with open(corpora[f"{copies}x"], "wb") as out:
                for _ in range(copies):
                    with open(KJV, "rb") as f:
                        shutil.copyfileobj(f, out)
                    out.write(b"\n")  # keep a copy's last chapter apart from the next's first
        packed = {}
        for num_proc in (1, 2):
            for name, path in corpora.items():
                row = {"corpus": name, **run_prepare([path], tokenizer, tmp / "ds", num_proc)}
                print(json.dumps(row), flush=True)
                rows.append(row)
                if num_proc == 1 and name == "1x":
                    packed = packing(tmp / "ds")
    write_results(rows, packed)


def write_results(rows: list[dict], packed: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0])
    with open(RESULTS / "prepare_data.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: round(v, 3) if isinstance(v, float) else v
                             for k, v in row.items()})

    lines = [
        "# prepare-data: throughput, peak memory and packing",
        "",
        f"Machine: {machine()}.",
        f"Command: `python -m fast_electra_ds prepare-data --seq-len {SEQ_LEN} --num-proc N` on "
        f"corpus/kjv.txt (1x) and on 10 and 30 concatenated copies (10x, 30x), WordPiece vocab "
        f"{VOCAB_SIZE}. Produced by `python benchmarks/prepare_data.py`; how each column is "
        f"measured is in its docstring (main peak RSS: os.wait4 rusage of the main process; "
        f"tree peak: psutil polling every {int(POLL_S * 1000)} ms, main RSS + workers' USS; "
        f"load: mean 1-minute load average of the machine during the run).",
        "",
        "| corpus | num_proc | input MB | tokens | wall s | CPU s | tokens/s | tokens/CPU-s "
        "| main peak RSS MB | tree peak MB | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['corpus']} | {r['num_proc']} | {r['input_mb']:.1f} | "
                     f"{r['num_tokens']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                     f"{r['tokens_per_s']:,.0f} | {r['tokens_per_cpu_s']:,.0f} | "
                     f"{r['main_peak_rss_mb']:.0f} | {r['tree_peak_mb']:.0f} | "
                     f"{r['load_avg']:.1f} |")
    lines += ["", "Growth with the corpus, per num_proc (ratios of peaks; marginal tokens/s = "
                  "extra tokens / extra wall time, the steady rate without the fixed start-up of "
                  "imports and tokenizer load):", "",
              "| num_proc | from | to | main peak RSS ratio | tree peak ratio "
              "| marginal tokens/s |",
              "|---|---|---|---|---|---|"]
    for num_proc in sorted({r["num_proc"] for r in rows}):
        runs = {r["corpus"]: r for r in rows if r["num_proc"] == num_proc}
        for small, large in (("1x", "10x"), ("10x", "30x"), ("1x", "30x")):
            a, b = runs[small], runs[large]
            marginal = (b["num_tokens"] - a["num_tokens"]) / (b["wall_s"] - a["wall_s"])
            lines.append(f"| {num_proc} | {small} | {large} | "
                         f"{b['main_peak_rss_mb'] / a['main_peak_rss_mb']:.2f} | "
                         f"{b['tree_peak_mb'] / a['tree_peak_mb']:.2f} | "
                         f"{marginal:,.0f} |")
    lines += ["", f"Packing of the 1x corpus at seq_len {SEQ_LEN} (padding = share of the "
                  f"sequences' {SEQ_LEN} slots left empty; stored files hold no padding, the "
                  f"loader adds it): ELECTRA's two-segment examples against the previous "
                  f"single-segment format, computed from the same documents' tokens:", "",
              "| format | sequences | padding fraction | two-segment examples |",
              "|---|---|---|---|",
              f"| [CLS] A [SEP] B [SEP] (now) | {packed['sequences']:,} | "
              f"{packed['padding']:.4f} | {packed['two_segment_share']:.1%} |",
              f"| [CLS] piece [SEP] (format 1) | {packed['sequences_before']:,} | "
              f"{packed['padding_before']:.4f} | 0 |"]
    mean_load = sum(r["load_avg"] for r in rows) / len(rows)
    if mean_load > os.cpu_count():
        lines += ["", f"The machine was busy with other jobs (mean 1-minute load {mean_load:.1f} "
                      f"on {os.cpu_count()} cores): wall-clock rates are pessimistic and noisy; "
                      f"tokens per CPU-second and the memory columns are the comparable figures."]
    (RESULTS / "prepare_data.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "prepare_data.md").read_text())


if __name__ == "__main__":
    main()
