"""Where does each method leave the replaced-token-detection plateau? A map over corpora,
vocabularies and discriminator sizes.

    .venv/bin/python benchmarks/plateau_map.py --variant defaults   # the recipe's defaults
    .venv/bin/python benchmarks/plateau_map.py --variant before     # the defaults before issue 20
    .venv/bin/python benchmarks/plateau_map.py --report-only        # tables + PNG from what ran

Cells: {kjv (the bundled Bible), techdocs (corpus/build_techdocs.py)} x {WordPiece 4,096, 8,000}
x {discriminator 2 x 64, 2 x 128} x {fast-electra, electra}. Everything else is the `demo`
recipe (seq_len 64, batch 32, 3,000 steps) with no per-corpus setting. Per corpus and vocabulary
the script prepares, once, under .plateau/: the tokenizer, the data (5% of documents held out),
the generator (the recipe's 2 x 32 masked LM, mode=mlm, 1,000 steps), which is fast-electra's
frozen generator and the common judge of every run of that corpus and vocabulary (held-out AUC
over maskable tokens - [CLS]/[SEP] left out - every 250 steps), and an independent judge (a
2 x 128 masked LM, 1,000 steps) that scores each finished discriminator once more
(`fast-electra evaluate`). A variant is a set of config overrides; runs are kept under
.plateau/runs/VARIANT/ and reused when finished, so a map can be built in pieces.

Written to benchmarks/results/plateau_map.{md,csv,png}: per variant and cell, the step at
which held-out AUC (maskable, common judge) first reaches 0.60 and 0.65, its value at the end,
replaced recall, the independent judge's AUC, and whether the run's plateau warning fired; and
per corpus and vocabulary what the generator is (MLM accuracy, entropy at T = 1).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "corpus"))

from benchmarks.machine import cpu_name  # noqa: E402
from fast_electra_ds.downstream.compare import read_run  # noqa: E402

WORK = REPO / ".plateau"
RESULTS = REPO / "benchmarks" / "results"
CORPORA = ("kjv", "techdocs")
VOCABS = (4096, 8000)
SIZES = (64, 128)
METHODS = ("fast-electra", "electra")
STEPS = 3000
THRESHOLDS = (0.60, 0.65)
# a discriminator of width H: 2 layers, 2 heads, feed-forward 2H (the demo's at 64) / 4H at 128
SHAPES = {64: ["model.hidden_size=64", "model.num_heads=2", "model.intermediate_size=128"],
          128: ["model.hidden_size=128", "model.num_heads=2", "model.intermediate_size=512"]}
JUDGE = ["generator.num_layers=2", "generator.hidden_size=128", "generator.num_heads=2",
         "generator.intermediate_size=512"]
# what the defaults were before issue 20: the paper's curriculum from T0 = 2, a head whose output
# bias starts at 0, the demo recipe's lr and warm-up
PAPER = ["temperature.schedule=exponential", "temperature.t0=2.0", "temperature.tau=0.1"]
RECIPE = ["optim.lr=2e-3", "optim.warmup_steps=30"]
VARIANTS = {
    "defaults": [],
    "before": ["model.head_bias_init=zero", *PAPER, *RECIPE],
    # one change at a time from `before` or the defaults (run on one cell: what decides escape)
    "zero-init-warmup300": ["model.head_bias_init=zero", *PAPER, "optim.lr=2e-3",
                            "optim.warmup_steps=300"],
    "prior-init-paper-schedule": ["model.head_bias_init=prior", *PAPER, *RECIPE],
    "prior-init-constant-T1": ["model.head_bias_init=prior", "temperature.schedule=constant",
                               "temperature.t0=1.0", *RECIPE],
    # a confident generator: the same one with its logits x3 (its head's LayerNorm and output
    # bias scaled), i.e. the same ranking of tokens, much sharper; still judged by the original
    "sharp-generator-paper-schedule": ["model.head_bias_init=prior", *PAPER, *RECIPE],
    "sharp-generator-calibrated": ["model.head_bias_init=prior",
                                   "temperature.schedule=calibrated", *RECIPE],
}
SHARPEN = {"sharp-generator-paper-schedule": 3.0, "sharp-generator-calibrated": 3.0}


def sharpened(generator: Path, factor: float) -> Path:
    """A copy of the masked LM `generator` whose logits are `factor` times its own."""
    out = generator.parent / f"generator-logits-x{factor:g}"
    if out.is_dir():
        return out
    import shutil

    import torch
    from transformers import ElectraForMaskedLM

    model = ElectraForMaskedLM.from_pretrained(generator)
    with torch.no_grad():  # logits = W LN(h) + b: scale LN's gain and bias, and b
        norm = model.generator_predictions.LayerNorm
        norm.weight.mul_(factor)
        norm.bias.mul_(factor)
        model.generator_lm_head.bias.mul_(factor)
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(generator, tmp)
    model.save_pretrained(tmp)
    tmp.rename(out)
    return out


FE = [sys.executable, "-m", "fast_electra_ds"]


def wait_for_cpu() -> None:
    """Wait while the file named by $FE_CPU_HOLD exists: on a shared machine someone else is
    timing something, and a training run beside it would spoil both timings."""
    hold = os.environ.get("FE_CPU_HOLD")
    announced = False
    while hold and Path(hold).exists():
        if not announced:
            print(f"waiting: {hold} exists", flush=True)
            announced = True
        time.sleep(10)


def run_cli(*args: str, log: Path | None = None, check: bool = True) -> int:
    """`fast-electra ARGS` in a subprocess, after wait_for_cpu; its output goes to `log` if
    given. check: a failure ends the script (else the return code is returned)."""
    wait_for_cpu()
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    done = subprocess.run([*FE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(done.stdout)
    if done.returncode != 0 and check:
        print(done.stdout[-4000:], file=sys.stderr)
        raise SystemExit(f"failed: fast-electra {' '.join(args)}")
    return done.returncode


def _finished(run_dir: Path, steps: int) -> bool:
    metrics = run_dir / "metrics.jsonl"
    return metrics.is_file() and any(
        json.loads(line).get("split") == "eval" and json.loads(line)["step"] == steps
        for line in metrics.read_text().splitlines())


def corpus_file(name: str) -> Path:
    if name == "kjv":
        return REPO / "corpus" / "kjv.txt"
    import build_techdocs

    return build_techdocs.ensure()


def generator_args(data: Path) -> list[str]:
    """The overrides (of the demo recipe) that train a corpus's generator: mode=mlm, 1,000
    steps."""
    return [f"data.paths={data}", "device=cpu", "checkpoint.resume=none", "mode=mlm",
            "train.steps=1000", "eval.every=1000", "logging.progress_bar=false"]


def prepare(corpus: str, vocab: int, independent_judge: bool = True) -> dict[str, Path]:
    """Tokenizer, data, generator and (if asked) independent judge of one corpus and
    vocabulary."""
    base = WORK / f"{corpus}-{vocab}"
    paths = {"tokenizer": base / "tokenizer", "data": base / "data", "generator":
             base / "mlm" / "generator", "judge": base / "judge" / "generator"}
    if not paths["tokenizer"].is_dir():
        run_cli("train-tokenizer", "--input", str(corpus_file(corpus)), "--vocab-size",
                str(vocab), "--output", str(paths["tokenizer"]))
    if not paths["data"].is_dir():
        run_cli("prepare-data", "--input", str(corpus_file(corpus)), "--tokenizer",
                str(paths["tokenizer"]), "--seq-len", "64", "--valid-fraction", "0.05",
                "--config", "demo", "--output", str(paths["data"]))
    common = generator_args(paths["data"])
    if not paths["generator"].is_dir():
        run_cli("pretrain", "--config", "demo", f"run_dir={base / 'mlm'}", *common)
    if independent_judge and not paths["judge"].is_dir():
        run_cli("pretrain", "--config", "demo", f"run_dir={base / 'judge'}", *common, *JUDGE)
    return paths


def pretrain_args(method: str, run_dir: Path, paths: dict[str, Path], generator: Path,
                  steps: int, overrides: list[str]) -> list[str]:
    """The `fast-electra` arguments of one run of the map: the demo recipe, `generator` as the
    frozen generator, scored every 250 steps on the corpus's common judge, then `overrides`."""
    return ["pretrain", "--config", "demo", f"mode={method}", f"run_dir={run_dir}",
            f"data.paths={paths['data']}", f"generator.path={generator}",
            f"eval.judge={paths['generator']}", f"train.steps={steps}", "eval.every=250",
            "device=cpu", "checkpoint.resume=none", "logging.progress_bar=false", *overrides]


def run_cell(variant: str, overrides: list[str], corpus: str, vocab: int, size: int,
             method: str, paths: dict[str, Path], steps: int) -> Path:
    run_dir = WORK / "runs" / variant / f"{corpus}-{vocab}-{size}-{method}"
    if _finished(run_dir, steps) and (run_dir / "independent.json").is_file():
        return run_dir
    start = time.time()
    generator = paths["generator"]
    if variant in SHARPEN:
        generator = sharpened(generator, SHARPEN[variant])
    run_cli(*pretrain_args(method, run_dir, paths, generator, steps, [*SHAPES[size], *overrides]))
    run_cli("evaluate", str(run_dir), "--judge", str(paths["judge"]), "--data",
            str(paths["data"]), "--output", str(run_dir / "independent.json"))
    print(f"{variant} {corpus}-{vocab} 2x{size} {method}: {time.time() - start:.0f} s",
          flush=True)
    return run_dir


# ---- the report ---------------------------------------------------------------------------------


def cell_row(variant: str, run_dir: Path) -> dict:
    corpus, vocab, size, method = run_dir.name.split("-", 3)
    run = read_run(run_dir)
    evals = [r for r in run["evals"] if "auc_maskable" in r]
    first = {t: next((r["step"] for r in evals if r["auc_maskable"] >= t), None)
             for t in THRESHOLDS}
    independent = json.loads((run_dir / "independent.json").read_text())["rows"][0]
    alerts = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["split"] == "alert"]
    warned = [a["step"] for a in alerts if a["on"]]
    return {"variant": variant, "corpus": corpus, "vocab": int(vocab), "size": int(size),
            "method": method, "first_060": first[0.60], "first_065": first[0.65],
            "auc_maskable": evals[-1]["auc_maskable"],
            "recall": evals[-1]["rtd_accuracy_replaced"],
            "independent_auc_maskable": independent["auc_maskable"],
            "plateau_warning": warned[0] if warned else None,
            "curve": [(r["step"], r["auc_maskable"]) for r in evals]}


def generator_rows() -> list[dict]:
    rows = []
    for corpus in CORPORA:
        for vocab in VOCABS:
            base = WORK / f"{corpus}-{vocab}"
            if not (base / "judge" / "generator").is_dir():
                continue
            row = {"corpus": corpus, "vocab": vocab}
            for role in ("mlm", "judge"):
                last = read_run(base / role)["evals"][-1]
                row[f"{role}_acc"] = last["mlm_accuracy"]
            record = json.loads((WORK / "runs").glob(f"*/{corpus}-{vocab}-*/eval_set.json")
                                .__next__().read_text())
            row["entropy"] = record["judge_stats"]["judge_gen_entropy"]
            rows.append(row)
    return rows


def _step(v) -> str:
    return "-" if v is None else f"{v:,}"


def report(steps: int) -> None:
    rows = [cell_row(variant.name, run_dir)
            for variant in sorted((WORK / "runs").iterdir())
            for run_dir in sorted(variant.iterdir())
            if _finished(run_dir, steps) and (run_dir / "independent.json").is_file()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "plateau_map.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "curve"])
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if k != "curve"} for r in rows)
    lines = [
        "# The plateau map: where each method leaves the replaced-token-detection plateau",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} given to "
        f"this script, torch threads {torch.get_num_threads()}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; one run at a time.",
        "Command: `.venv/bin/python benchmarks/plateau_map.py --variant VARIANT` per variant "
        "(module doc: what is prepared and how each run is scored).",
        "",
        f"Every run: the `demo` recipe, {steps:,} steps of 32 x 64 tokens, no per-corpus "
        "setting. Held-out AUC is over maskable tokens ([CLS]/[SEP] left out), scored every 250 "
        "steps on the common judge of its corpus and vocabulary (fast-electra's frozen "
        "generator); \"independent\" is the finished discriminator scored once more with an "
        "independent 2 x 128 masked LM as the judge. \"warning\": the step at which the run's "
        "plateau warning (logging.plateau_patience) fired.",
        "",
        "Variants (config overrides of the recipe): "
        + "; ".join(f"`{v}`: {' '.join(o) or '(none: the recipe defaults)'}"
                    for v, o in VARIANTS.items()
                    if any(r['variant'] == v for r in rows)) + ".",
        "",
        "## The generators (one per corpus and vocabulary)",
        "",
        "| corpus | vocab | generator MLM acc | its entropy at T = 1 (nats) | "
        "independent judge MLM acc |",
        "|---|---|---|---|---|",
        *[f"| {g['corpus']} | {g['vocab']:,} | {g['mlm_acc']:.3f} | {g['entropy']:.2f} | "
          f"{g['judge_acc']:.3f} |" for g in generator_rows()],
    ]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        lines += ["", f"## Variant `{variant}`", "",
                  "| corpus | vocab | disc | method | AUC >= 0.60 at step | >= 0.65 at step | "
                  f"AUC at {steps:,} | replaced recall | independent judge AUC | warning |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["variant"] == variant):
            lines.append(
                f"| {r['corpus']} | {r['vocab']:,} | 2 x {r['size']} | {r['method']} | "
                f"{_step(r['first_060'])} | {_step(r['first_065'])} | {r['auc_maskable']:.3f} | "
                f"{r['recall']:.3f} | {r['independent_auc_maskable']:.3f} | "
                f"{_step(r['plateau_warning'])} |")
        fe = [r for r in rows if r["variant"] == variant and r["method"] == "fast-electra"]
        met = sum(r["first_065"] is not None for r in fe)
        lines += ["", f"fast-electra reached 0.65 in {met} of {len(fe)} cells."]
    (RESULTS / "plateau_map.md").write_text("\n".join(lines) + "\n")
    _plot(rows)
    print(f"wrote {RESULTS / 'plateau_map.md'}")


def _plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(r["corpus"], r["vocab"], r["size"]) for r in rows})
    cols = 4
    fig, axes = plt.subplots((len(cells) + cols - 1) // cols, cols, figsize=(16, 3.4 * (
        (len(cells) + cols - 1) // cols)), sharey=True, squeeze=False)
    styles = {"fast-electra": "-", "electra": "--"}
    colors = {}
    for ax, cell in zip(axes.flat, cells):
        for r in rows:
            if (r["corpus"], r["vocab"], r["size"]) != cell:
                continue
            color = colors.setdefault(r["variant"], f"C{len(colors)}")
            steps, aucs = zip(*r["curve"])
            ax.plot(steps, aucs, styles[r["method"]], color=color,
                    label=f"{r['method']} ({r['variant']})")
        ax.axhline(0.65, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{cell[0]}, vocab {cell[1]:,}, 2 x {cell[2]}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("held-out AUC (maskable)")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "plateau_map.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="defaults")
    parser.add_argument("--corpora", default=",".join(CORPORA))
    parser.add_argument("--vocabs", default=",".join(map(str, VOCABS)))
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.report_only:
        for corpus in args.corpora.split(","):
            for vocab in map(int, args.vocabs.split(",")):
                paths = prepare(corpus, vocab)
                for size in map(int, args.sizes.split(",")):
                    for method in args.methods.split(","):
                        run_cell(args.variant, VARIANTS[args.variant], corpus, vocab, size,
                                 method, paths, args.steps)
    report(args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
