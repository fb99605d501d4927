"""Why the demo's sequences are 16 tokens long: fast-electra at seq_len 16, 32 and 64, the same
tokens per step, the same judge.

    make demo && .venv/bin/python benchmarks/demo_seq_len.py [--steps 2000]

Needs the demo's tokenizer and generator (.demo/tokenizer, .demo/mlm/generator). For each
seq_len it prepares the corpus (kept in .demo/data<L>), runs the `demo` recipe in mode=fast-electra
with batch 2048 / seq_len (2,048 tokens a step) and the demo's generator as frozen generator and
judge, and writes benchmarks/results/demo_seq_len.md: the held-out AUC (all real tokens, and
without [CLS]/[SEP], whose share grows as sequences shorten) after each evaluation, with the
machine named. Runs one after another (never two timed processes at once on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fast_electra_ds.bench import cpu_name  # noqa: E402
from fast_electra_ds.compare import describe_set, read_run, table  # noqa: E402

SEQ_LENS = (16, 32, 64)
TOKENS_PER_STEP = 2048


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--demo-dir", default=str(REPO / ".demo"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    demo = Path(args.demo_dir)
    generator = demo / "mlm" / "generator"
    if not generator.is_dir():
        print(f"{generator} is missing: run `make demo` first", file=sys.stderr)
        return 2
    fe = [sys.executable, "-m", "fast_electra_ds"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    runs = []
    for seq_len in SEQ_LENS:
        data = demo / f"data{seq_len}"
        if not data.is_dir():
            subprocess.run([*fe, "prepare-data", "--input", str(REPO / "corpus" / "kjv.txt"),
                            "--tokenizer", str(demo / "tokenizer"), "--seq-len", str(seq_len),
                            "--valid-fraction", "0.02", "--output", str(data)],
                           check=True, env=env)
        run_dir = demo / "seq_len" / f"fast-electra-{seq_len}"
        batch = TOKENS_PER_STEP // seq_len
        subprocess.run([*fe, "pretrain", "--config", "demo", "mode=fast-electra",
                        f"run_dir={run_dir}", f"data.paths={data}", f"data.seq_len={seq_len}",
                        f"train.global_batch_size={batch}", f"train.micro_batch_size={batch}",
                        f"train.steps={args.steps}", f"generator.path={generator}",
                        "checkpoint.resume=none", "device=cpu", "logging.progress_bar=false"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        runs.append((seq_len, batch, read_run(run_dir)))

    rows = []
    for seq_len, batch, run in runs:
        for r in run["evals"]:
            rows.append({"seq_len": seq_len, "batch": batch, "step": r["step"],
                         "auc": r["auc"], "auc_maskable": r["auc_maskable"],
                         "recall": r["rtd_accuracy_replaced"], "seconds": r["train_seconds"]})
    lines = [
        "# Demo design: sequence length and the replaced-token-detection plateau",
        "",
        f"Machine: {cpu_name()}, {len(os.sched_getaffinity(0))} cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}.",
        f"Command: `make demo && .venv/bin/python benchmarks/demo_seq_len.py --steps "
        f"{args.steps}`.",
        "",
        f"fast-electra with the `demo` recipe (discriminator 2 x 64, no dropout, lr 2e-3, T0 = 2, "
        f"tau = 0.1), {TOKENS_PER_STEP:,} tokens a step at every length, {args.steps:,} steps; "
        f"frozen generator and judge: the demo's generator. Each length has its own evaluation "
        f"set (the same judge, seed and size, over that length's packing of the held-out text):",
        "",
        *[f"- seq_len {s}: {describe_set(run['eval_set'])}" for s, _, run in runs],
        "",
        table(rows, [("seq_len", "seq_len"), ("batch", "batch"), ("step", "step"),
                     ("AUC", "auc"), ("AUC maskable", "auc_maskable"),
                     ("replaced recall", "recall"), ("train s", "seconds")]),
        "",
    ]
    out = Path(args.output) / "demo_seq_len.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
