"""Why the demo's recipe is what it is: fast-electra on the demo data with one setting changed at a
time, the same tokens per step, the same judge.

    make demo && .venv/bin/python benchmarks/demo_ablations.py [--steps 2000]

Needs the demo's tokenizer and generator (.demo/tokenizer, .demo/mlm/generator), which is the
frozen generator and the judge of every run. Variants of the `demo` recipe, mode=fast-electra:

  demo recipe        dropout 0, T from 2 to 1 (tau 0.1), lr 2e-3, seq_len 64, batch 32
  constant T = 1     no temperature curriculum
  dropout 0.1        the `tiny` recipe's dropout
  seq_len 32, 16     batch 64, 128: the same 2,048 tokens a step

Each seq_len has its corpus prepared as the demo does (kept in .demo/ablations/data<L>) and its own
evaluation set (the same judge, seed and size over that packing of the held-out text). Writes
benchmarks/results/demo_ablations.md: held-out AUC (all real tokens, and without [CLS]/[SEP],
whose share grows as sequences shorten) and replaced recall after each evaluation, with the
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

from benchmarks.machine import cpu_name  # noqa: E402
from fast_electra_ds.downstream.compare import describe_set, read_run, table  # noqa: E402

TOKENS_PER_STEP = 2048
VARIANTS = {  # name -> (seq_len, overrides)
    "demo recipe": (64, []),
    "constant T = 1": (64, ["temperature.schedule=constant", "temperature.t0=1"]),
    "dropout 0.1": (64, ["model.hidden_dropout=0.1", "model.attention_dropout=0.1"]),
    "seq_len 32": (32, []),
    "seq_len 16": (16, []),
}


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
    results = []
    for i, (name, (seq_len, overrides)) in enumerate(VARIANTS.items()):
        data = demo / "ablations" / f"data{seq_len}"
        if not data.is_dir():
            subprocess.run([*fe, "prepare-data", "--input", str(REPO / "corpus" / "kjv.txt"),
                            "--tokenizer", str(demo / "tokenizer"), "--seq-len", str(seq_len),
                            "--valid-fraction", "0.05", "--output", str(data)],
                           check=True, env=env, stdout=subprocess.DEVNULL)
        run_dir = demo / "ablations" / f"run{i}"
        batch = TOKENS_PER_STEP // seq_len
        subprocess.run([*fe, "pretrain", "--config", "demo", "mode=fast-electra",
                        f"run_dir={run_dir}", f"data.paths={data}", f"data.seq_len={seq_len}",
                        f"train.global_batch_size={batch}", f"train.micro_batch_size={batch}",
                        f"train.steps={args.steps}", f"generator.path={generator}",
                        "checkpoint.resume=none", "device=cpu", "logging.progress_bar=false",
                        *overrides], check=True, env=env, stdout=subprocess.DEVNULL)
        results.append((name, seq_len, batch, read_run(run_dir)))

    rows = [{"variant": name, "seq_len": seq_len, "step": r["step"], "auc": r["auc"],
             "auc_maskable": r["auc_maskable"], "recall": r["rtd_accuracy_replaced"],
             "seconds": r["train_seconds"]}
            for name, seq_len, _, run in results for r in run["evals"]]
    final = [{"variant": name, "seq_len": seq_len, "batch": batch,
              "auc": run["evals"][-1]["auc"], "auc_maskable": run["evals"][-1]["auc_maskable"],
              "recall": run["evals"][-1]["rtd_accuracy_replaced"]}
             for name, seq_len, batch, run in results]
    sets = {seq_len: run["eval_set"] for _, seq_len, _, run in results}
    lines = [
        "# Demo design: what gets a discriminator past the plateau in minutes",
        "",
        f"Machine: {cpu_name()}, {len(os.sched_getaffinity(0))} cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}.",
        f"Command: `make demo && .venv/bin/python benchmarks/demo_ablations.py --steps "
        f"{args.steps}`.",
        "",
        f"fast-electra with the `demo` recipe (discriminator 2 x 64, dropout 0, lr 2e-3, T from 2 "
        f"to 1 with tau = 0.1, seq_len 64, batch 32) and one setting changed at a time; "
        f"{TOKENS_PER_STEP:,} tokens a step, {args.steps:,} steps; frozen generator and judge: "
        f"the demo's generator. Evaluation sets:",
        "",
        *[f"- seq_len {s}: {describe_set(record)}" for s, record in sorted(sets.items())],
        "",
        f"## After {args.steps:,} steps",
        "",
        table(final, [("variant", "variant"), ("seq_len", "seq_len"), ("batch", "batch"),
                      ("AUC", "auc"), ("AUC maskable", "auc_maskable"),
                      ("replaced recall", "recall")]),
        "",
        "## Every evaluation",
        "",
        table(rows, [("variant", "variant"), ("seq_len", "seq_len"), ("step", "step"),
                     ("AUC", "auc"), ("AUC maskable", "auc_maskable"),
                     ("replaced recall", "recall"), ("train s", "seconds")]),
        "",
    ]
    out = Path(args.output) / "demo_ablations.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
