"""The paper's robustness and stability claims, measured at CPU scale: its Figures 2 and 3.

    .venv/bin/python benchmarks/paper_figures.py --corpus kjv    # every part on one corpus
    .venv/bin/python benchmarks/paper_figures.py --parts lr,seeds  # some parts only (techdocs)
    .venv/bin/python benchmarks/paper_figures.py --report-only   # tables + PNG, both corpora

Fast-ELECTRA's claims (arXiv 2310.07347, section 4.4): it is less sensitive to the auxiliary
model's depth and to the curriculum (Figure 2), and it trains at larger learning rates without
diverging (Figure 3). Every run is the plateau map's `defaults` cell (benchmarks/plateau_map.py:
the `demo` recipe with the recipe defaults, discriminator 2 x 128, seq_len 64, batch 32) on
techdocs or kjv (--corpus) with WordPiece 8,000, cut to STEPS steps, with one change:

  depth       the auxiliary model's layers, 1 / 2 / 3 / 4 (width 32 as the recipe's): electra's
              jointly trained generator (generator.num_layers); fast-electra's frozen one, each
              trained as the map trains its generator (mode=mlm, 1,000 steps)
  curriculum  fast-electra: the paper's schedule from T0 = 1.5 / 2 / 2.5 (tau 0.1), and the
              calibrated T0 (the default) with tau 0.05 / 0.1 / 0.2 / 0.5; electra: the
              generator's loss weight 1 / 10 / 50 / 100 against the discriminator's 50. The loss
              has only train.rtd_weight, so weight g is run as rtd_weight = 50 / g, i.e. the
              loss divided by g: the same under Adam but for its eps and gradient clipping
  lr          optim.lr x1 / x2 / x4 / x8 of the recipe's (warm-up unchanged)
  seeds       the recipe cell (shared by all three: depth 2, default curriculum, weight 1, x1)
              again with seed 1, for the seed-to-seed spread
  lr-seeds    Figure 3's other learning rates again with seed 1
  kjv         the headline point once more on the bundled Bible (the recipe cell, lr x2)

Every run is scored on one judge: held-out AUC over maskable tokens on the corpus's common judge
(the map's 2 x 32 masked LM). The depth runs are also fine-tuned on the downstream yardstick of
benchmarks/pretraining_value.py (does line B follow line A; 500 examples, 10 epochs, fine-tuning
seeds 1 and 2). A run diverged when (divergence()): a logged loss is not finite, the fault guard
skipped a step or stopped the run, or the RTD loss went back above the prior's binary entropy
after having left it. Runs are kept under .plateau/figures/ and reused once finished; set
FE_CPU_HOLD=FILE to wait before each run while FILE exists. Written to
benchmarks/results/paper_figures.{md,csv} and paper_figure2.png, paper_figure3.png.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_name  # noqa: E402
from benchmarks.plateau_map import (CORPORA, RESULTS, SHAPES, WORK, generator_args,  # noqa: E402
                                    prepare, pretrain_args, run_cli, wait_for_cpu)
from benchmarks.pretraining_value import SIZES, finetune_once, task_folders  # noqa: E402
from fast_electra_ds.config import load_config  # noqa: E402
from fast_electra_ds.training.plateau import binary_entropy  # noqa: E402

OUT = WORK / "figures"
VOCAB = 8000
LOG_EVERY = 50  # a train record every 50 steps: Figure 3's curves
STEPS = 800  # the map runs 3,000: cut so that the study fits 60 minutes of 2 CPU cores
SIZE = 128  # the discriminator's width (2 layers)
DEPTHS = (1, 2, 3, 4)
T0S = (1.5, 2.0, 2.5)
TAUS = (0.05, 0.1, 0.2, 0.5)
GEN_WEIGHTS = (1, 10, 50, 100)
LR_FACTORS = (1, 2, 4, 8)
RECIPE_SEED = 1234
SPREAD_SEED = 1
FINETUNE_SEEDS = (1, 2)
SMALL_TASK = SIZES[-1]  # (500 examples, 10 epochs): the yardstick's cheaper size
PARTS = ("lr", "seeds", "curriculum", "depth", "downstream", "lr-seeds")
# "Left the prior" needs the RTD loss 10% under H(share), not the plateau watch's 2%: electra's
# discriminator at this scale sits at ~0.99 H for thousands of steps, and a window's noise
# across H there is no divergence.
LEFT = 0.90
GUARD_STOP = re.compile(r"the loss was not finite for \d+ steps in a row \(up to step (\d+)\)")
CALIBRATED_T0 = re.compile(r"calibrated T0 = ([0-9.]+)")


def recipe() -> tuple[float, float]:
    """The demo recipe's learning rate and discriminator loss weight."""
    cfg = load_config("demo")
    return cfg.optim.lr, cfg.train.rtd_weight


@dataclass(frozen=True)
class Run:
    """One pretraining run: a method and what differs from the recipe cell."""

    method: str
    key: str = "recipe"
    """What differs, as in the run's folder name: recipe, depth3, t0-1.5, tau-0.2, genw-10,
    lr-x4."""
    overrides: tuple[str, ...] = ()
    depth: int = 2
    """The auxiliary model's layers (fast-electra: which frozen generator it samples from)."""
    seed: int = RECIPE_SEED
    corpus: str = "techdocs"

    @property
    def dir(self) -> Path:
        return OUT / f"{self.corpus}-{VOCAB}" / f"{self.method}-{self.key}-seed{self.seed}"


def plan(parts: tuple[str, ...], corpus: str = "techdocs") -> list[Run]:
    """The runs of `parts` on `corpus`, the recipe cell first, without repeats, cheapest
    evidence first."""
    lr, rtd_weight = recipe()
    runs = [Run("fast-electra"), Run("electra")]
    for part in parts:
        if part == "lr":
            runs += [Run(m, f"lr-x{k}", (f"optim.lr={lr * k:g}",))
                     for m in ("fast-electra", "electra") for k in LR_FACTORS if k != 1]
        elif part == "seeds":
            runs += [Run(m, seed=SPREAD_SEED) for m in ("fast-electra", "electra")]
        elif part == "lr-seeds":  # where the methods part ways: Figure 3 once more, seed 1
            runs += [Run(m, f"lr-x{k}", (f"optim.lr={lr * k:g}",), seed=SPREAD_SEED)
                     for m in ("fast-electra", "electra") for k in LR_FACTORS if k != 1]
        elif part == "curriculum":
            runs += [Run("fast-electra", f"t0-{t0:g}", ("temperature.schedule=exponential",
                                                        f"temperature.t0={t0:g}",
                                                        "temperature.tau=0.1"))
                     for t0 in T0S]
            runs += [Run("fast-electra", f"tau-{tau:g}", (f"temperature.tau={tau:g}",))
                     for tau in TAUS if tau != 0.1]
            runs += [Run("electra", f"genw-{g}", (f"train.rtd_weight={rtd_weight / g:g}",))
                     for g in GEN_WEIGHTS if g != 1]
        elif part == "depth":
            # the extremes first, so that a study cut short still has the figure's ends
            for d in (1, 4, 3):
                runs += [Run("fast-electra", f"depth{d}", depth=d),
                         Run("electra", f"depth{d}", (f"generator.num_layers={d}",), depth=d)]
    return list(dict.fromkeys(replace(run, corpus=corpus) for run in runs))


# ---- running ------------------------------------------------------------------------------------


def frozen_generator(paths: dict[str, Path], corpus: str, depth: int) -> Path:
    """Fast-ELECTRA's frozen generator with `depth` layers: the map's own at depth 2, else one
    trained the same way (mode=mlm, the same steps) with that many layers."""
    if depth == 2:
        return paths["generator"]
    base = OUT / f"{corpus}-{VOCAB}" / f"mlm-depth{depth}"
    if not (base / "generator").is_dir():
        shutil.rmtree(base, ignore_errors=True)
        run_cli("pretrain", "--config", "demo", f"run_dir={base}",
                *generator_args(paths["data"]), f"generator.num_layers={depth}")
    return base / "generator"


def execute(run: Run, paths: dict[str, Path], steps: int) -> None:
    """Train `run` unless it finished before; a run the fault guard stopped counts as finished
    (diverged), any other failure ends the script."""
    outcome = run.dir / "outcome.json"
    if outcome.is_file():
        return
    generator = paths["generator"]
    if run.method == "fast-electra":
        generator = frozen_generator(paths, run.corpus, run.depth)
    shutil.rmtree(run.dir, ignore_errors=True)  # a half-finished attempt starts over
    args = pretrain_args(run.method, run.dir, paths, generator, steps,
                         [*SHAPES[SIZE], f"logging.log_every={LOG_EVERY}", f"seed={run.seed}",
                          *run.overrides])
    wait_for_cpu()  # not counted in the run's time
    start = time.time()
    log = run.dir.parent / f"{run.dir.name}.log"
    code = run_cli(*args, log=log, check=False)
    text = log.read_text()
    stop = GUARD_STOP.search(text)
    if code != 0 and stop is None:
        print(text[-4000:], file=sys.stderr)
        raise SystemExit(f"failed: {run}")
    t0 = CALIBRATED_T0.search(text)
    outcome.write_text(json.dumps({
        "returncode": code, "seconds": time.time() - start, "steps": steps,
        "guard_stop_step": int(stop.group(1)) if stop else None,
        "calibrated_t0": float(t0.group(1)) if t0 else None}))
    print(f"{run.corpus} {run.method} {run.key} seed {run.seed}: {time.time() - start:.0f} s"
          + (f", stopped by the fault guard at step {stop.group(1)}" if stop else ""), flush=True)


def downstream(run: Run) -> dict | None:
    """The yardstick's score of `run`'s discriminator (None if it diverged or did not run)."""
    if not (run.dir / "outcome.json").is_file():
        return None
    if json.loads((run.dir / "outcome.json").read_text())["returncode"] != 0:
        return None
    export = run.dir.parent / "export" / run.dir.name
    if not (export / "discriminator").is_dir():
        run_cli("export", "--run", str(run.dir), "--output", str(export))
    size, epochs = SMALL_TASK
    out = run.dir.parent / "finetune" / f"{run.dir.name}-train{size}"
    return finetune_once(export / "discriminator", task_folders(run.corpus)[size], epochs, out,
                         seeds=FINETUNE_SEEDS)


# ---- reading the runs ---------------------------------------------------------------------------


def divergence(records: list[dict], guard_stop_step: int | None = None) -> tuple[int, str] | None:
    """(step, why) of the first sign that a run diverged, from its metrics records in order;
    None if none: a logged loss not finite, steps skipped by the fault guard (each train
    record holds the run's count so far), the RTD loss back above the prior's binary entropy
    H(replaced share of that window) after having been LEFT x H under it, or the guard's stop."""
    left = False
    for r in records:
        if r["split"] not in ("train", "eval"):
            continue
        if any(not math.isfinite(r[k]) for k in ("loss", "rtd_loss") if k in r):
            return r["step"], "loss not finite"
        if r["split"] == "eval":
            continue
        if r.get("skipped_steps", 0) > 0:
            return r["step"], f"{r['skipped_steps']} step(s) skipped by the fault guard"
        prior = binary_entropy(r["rtd_replaced_share"])
        if r["rtd_loss"] < LEFT * prior:
            left = True
        elif left and r["rtd_loss"] > prior:
            return r["step"], "RTD loss back above the prior's"
    if guard_stop_step is not None:
        return guard_stop_step, "stopped by the fault guard (loss not finite)"
    return None


def read(run: Run) -> dict | None:
    """What the report needs of a finished run; None if it has not run."""
    outcome_file = run.dir / "outcome.json"
    if not outcome_file.is_file():
        return None
    outcome = json.loads(outcome_file.read_text())
    records = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval" and "auc_maskable" in r]
    finished = outcome["returncode"] == 0 and bool(evals) and evals[-1]["step"] == outcome["steps"]
    scores = downstream_results(run)
    return {
        "corpus": run.corpus, "method": run.method, "key": run.key, "seed": run.seed,
        "depth": run.depth, "finished": finished,
        "auc_maskable": evals[-1]["auc_maskable"] if finished else None,
        "rtd_loss": train[-1]["rtd_loss"] if train else None,
        "diverged": divergence(records, outcome["guard_stop_step"]),
        "skipped_steps": train[-1].get("skipped_steps", 0) if train else 0,
        "calibrated_t0": outcome["calibrated_t0"], "seconds": outcome["seconds"],
        # the loss over the prior's: 1 is the base rate everywhere (the plateau)
        "over_prior": [r["rtd_loss"] / binary_entropy(r["rtd_replaced_share"]) for r in train],
        "steps": [r["step"] for r in train],
        "prior": statistics.fmean(binary_entropy(r["rtd_replaced_share"]) for r in train)
        if train else None,
        **{f"downstream_seed{s}": scores["per_seed"][str(s)]["accuracy"] if scores else None
           for s in FINETUNE_SEEDS},
        "finetune_seconds": sum(v["train_time_s"] for v in scores["per_seed"].values())
        if scores else None,
    }


def recorded(record: Path) -> dict[tuple, dict]:
    """The rows of an earlier report's CSV, as read() returns them, by (corpus, method, key,
    seed): the runs themselves live in the working folder and may be gone (a fresh clone), their
    results stay in benchmarks/results."""
    if not record.is_file():
        return {}

    def number(text: str, kind=float):
        return kind(text) if text not in ("", "None") else None

    rows = {}
    for rec in csv.DictReader(open(record)):
        over_prior = ast.literal_eval(rec["over_prior"]) if rec["over_prior"] else []
        row = {
            "corpus": rec["corpus"], "method": rec["method"], "key": rec["key"],
            "seed": int(rec["seed"]), "depth": int(rec["depth"]),
            "finished": rec["finished"] == "True", "auc_maskable": number(rec["auc_maskable"]),
            "rtd_loss": number(rec["rtd_loss"]),
            "diverged": ast.literal_eval(rec["diverged"]) if rec["diverged"] else None,
            "skipped_steps": int(rec["skipped_steps"]),
            "calibrated_t0": number(rec["calibrated_t0"]), "seconds": float(rec["seconds"]),
            "over_prior": over_prior,
            # every run logs every LOG_EVERY steps (execute())
            "steps": ast.literal_eval(rec["steps"]) if rec.get("steps")
            else [LOG_EVERY * (i + 1) for i in range(len(over_prior))],
            "prior": number(rec["prior"]),
            **{f"downstream_seed{s}": number(rec.get(f"downstream_seed{s}", ""))
               for s in FINETUNE_SEEDS},
            "finetune_seconds": number(rec.get("finetune_seconds", "")),
        }
        rows[row["corpus"], row["method"], row["key"], row["seed"]] = row
    return rows


def gather() -> list[dict]:
    """Every planned run's row on both corpora: read from its run folder, else as recorded in
    paper_figures.csv."""
    earlier = recorded(RESULTS / "paper_figures.csv")
    rows = []
    for corpus in CORPORA:
        for run in plan(PARTS, corpus):
            row = read(run) or earlier.get((run.corpus, run.method, run.key, run.seed))
            if row is not None:
                rows.append(row)
    return rows


# ---- the report ---------------------------------------------------------------------------------


def _auc(row: dict | None) -> str:
    if row is None:
        return "not run"
    text = "-" if row["auc_maskable"] is None else f"{row['auc_maskable']:.3f}"
    if row["diverged"]:
        text += f" (diverged at {row['diverged'][0]:,})"
    return text


def _downstream(row: dict | None) -> float | None:
    seeds = [row.get(f"downstream_seed{s}") for s in FINETUNE_SEEDS] if row else [None]
    return None if None in seeds else statistics.fmean(seeds)


def _score(row: dict | None) -> str:
    mean = _downstream(row)
    if mean is None:
        return "not run"
    per_seed = " / ".join(f"{row[f'downstream_seed{s}']:.3f}" for s in FINETUNE_SEEDS)
    return f"{mean:.3f} ({per_seed})"


def figure2_left(by_corpus: dict) -> list[str]:
    lines = ["| corpus | auxiliary depth | electra AUC | electra downstream | fast-electra AUC | "
             "fast-electra downstream |", "|---|---|---|---|---|---|"]
    for corpus, rows in by_corpus.items():
        for d in DEPTHS:
            key = "recipe" if d == 2 else f"depth{d}"
            cells = []
            for m in ("electra", "fast-electra"):
                cells += [_auc(rows.get((m, key))), _score(rows.get((m, key)))]
            lines.append(f"| {corpus} | {d} | " + " | ".join(cells) + " |")
    return lines


def figure2_right(by_corpus: dict) -> list[str]:
    fe, el = "fast-electra", "electra"

    def calibrated(rows):
        t0 = (rows.get((fe, "recipe")) or {}).get("calibrated_t0")
        return f" (T0 {t0:.2f})" if t0 else ""

    lines = ["| fast-electra T0 (tau 0.1) | " + " | ".join(f"{t:g}" for t in T0S)
             + " | calibrated |", "|---|---|---|---|---|"]
    lines += [f"| {corpus} | " + " | ".join(_auc(rows.get((fe, f"t0-{t:g}"))) for t in T0S)
              + f" | {_auc(rows.get((fe, 'recipe')))}{calibrated(rows)} |"
              for corpus, rows in by_corpus.items()]
    lines += ["", "| fast-electra tau (calibrated T0) | " + " | ".join(f"{t:g}" for t in TAUS)
              + " |", "|---|---|---|---|---|"]
    lines += [f"| {corpus} | " + " | ".join(
        _auc(rows.get((fe, "recipe" if t == 0.1 else f"tau-{t:g}"))) for t in TAUS) + " |"
        for corpus, rows in by_corpus.items()]
    lines += ["", "| electra generator weight (discriminator 50) | "
              + " | ".join(str(g) for g in GEN_WEIGHTS) + " |", "|---|---|---|---|---|"]
    lines += [f"| {corpus} | " + " | ".join(
        _auc(rows.get((el, "recipe" if g == 1 else f"genw-{g}"))) for g in GEN_WEIGHTS) + " |"
        for corpus, rows in by_corpus.items()]
    return lines


def figure3(by_corpus: dict, second: dict | None = None) -> list[str]:
    """The table of Figure 3; `second`: the rows of seed SPREAD_SEED, by corpus like by_corpus,
    for a column of their own."""
    lr, _ = recipe()
    second = second or {}
    lines = ["| corpus | method | lr | RTD loss / H(share), lowest window | ... last window | "
             f"skipped steps | diverged | AUC | AUC, seed {SPREAD_SEED} |",
             "|---|---|---|---|---|---|---|---|---|"]
    for corpus, rows in by_corpus.items():
        for m in ("electra", "fast-electra"):
            for k in LR_FACTORS:
                key = "recipe" if k == 1 else f"lr-x{k}"
                r = rows.get((m, key))
                head = f"| {corpus} | {m} | x{k} ({lr * k:g}) |"
                if r is None:
                    lines.append(f"{head} not run | | | | | |")
                    continue
                why = (f"at step {r['diverged'][0]:,}: {r['diverged'][1]}" if r["diverged"]
                       else "no")
                other = second.get(corpus, {}).get((m, key))
                lines.append(f"{head} {min(r['over_prior']):.3f} | {r['over_prior'][-1]:.3f} | "
                             f"{r['skipped_steps']} | {why} | {_auc(r)} | "
                             f"{_auc(other) if other else '-'} |")
    return lines


def spread_lines(by_corpus: dict, second: dict) -> list[str]:
    """The recipe cell's AUC at both seeds (by_corpus: seed RECIPE_SEED's rows, second:
    SPREAD_SEED's, as figure3 takes them)."""
    lines = [f"| corpus | method | AUC, seed {RECIPE_SEED} | AUC, seed {SPREAD_SEED} | spread |",
             "|---|---|---|---|---|"]
    for corpus, rows in by_corpus.items():
        for m in ("electra", "fast-electra"):
            aucs = [(r or {}).get("auc_maskable") for r in
                    (rows.get((m, "recipe")), second.get(corpus, {}).get((m, "recipe")))]
            if None not in aucs:
                lines.append(f"| {corpus} | {m} | {aucs[0]:.3f} | {aucs[1]:.3f} | "
                             f"{abs(aucs[0] - aucs[1]):.3f} |")
    return lines


def report(steps: int) -> None:
    all_rows = gather()
    if not all_rows:
        raise SystemExit("no finished runs under .plateau/figures nor in paper_figures.csv: run "
                         "the study first")
    by_corpus = {c: {(r["method"], r["key"]): r for r in all_rows
                     if r["corpus"] == c and r["seed"] == RECIPE_SEED} for c in CORPORA}
    by_corpus = {c: rows for c, rows in by_corpus.items() if rows}
    second = {c: {(r["method"], r["key"]): r for r in all_rows
                  if r["corpus"] == c and r["seed"] == SPREAD_SEED} for c in CORPORA}
    lr, rtd_weight = recipe()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "paper_figures.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(all_rows[0]))
        writer.writeheader()
        writer.writerows(all_rows)
    compute = {c: sum(r["seconds"] for r in all_rows if r["corpus"] == c) / 60 for c in by_corpus}
    finetune = sum(r["finetune_seconds"] or 0 for r in all_rows) / 60
    untimed = sum(1 for r in all_rows
                  if r["finetune_seconds"] is None and _downstream(r) is not None)
    lines = [
        "# The paper's Figures 2 and 3 at CPU scale: sensitivity and stability",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} given to "
        f"this script, torch threads {torch.get_num_threads()}; each run OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; one run at a time.",
        "Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/paper_figures.py --corpus C` "
        "for C in " + ", ".join(CORPORA) + " (module doc: the cells and how each run is "
        "scored); `--report-only` rebuilds this report from the runs, or from "
        "paper_figures.csv for runs no longer on disk.",
        "",
        f"Every run: the plateau map's `defaults` cell (demo recipe, discriminator 2 x 128, "
        f"32 x 64 tokens a step, lr {lr:g}, recipe defaults) cut to {steps:,} steps (the map "
        f"runs 3,000), vocabulary {VOCAB:,}, seed {RECIPE_SEED} unless said. AUC: "
        f"held-out AUC over maskable tokens at step {steps:,}, on the corpus's common judge (the "
        f"map's 2 x 32 masked LM). \"diverged\": a loss not finite, a step skipped or a stop by "
        f"the fault guard, or the RTD loss back above the prior's binary entropy H(replaced "
        f"share) after having been {LEFT:g} x H under it. Compute (wall, each run start to "
        f"end): pretraining " + ", ".join(f"{c} {m:.0f} min" for c, m in compute.items())
        + f"; fine-tuning {finetune:.0f} min"
        + (f" ({untimed} earlier scores without a recorded time)" if untimed else "") + ".",
        "",
        "## Seed-to-seed spread (the recipe cell, shared by every figure)",
        "",
        *spread_lines(by_corpus, second),
        "",
        "## Figure 2, left: the auxiliary model's depth",
        "",
        "Auxiliary models 1-4 layers of width 32 (depth 2 is the recipe's). Downstream: the "
        f"yardstick of benchmarks/pretraining_value.py with {SMALL_TASK[0]} training examples, "
        f"{SMALL_TASK[1]} epochs; dev accuracy, mean of fine-tuning seeds "
        f"{', '.join(map(str, FINETUNE_SEEDS))} (each in brackets; chance is 0.500).",
        "",
        *figure2_left(by_corpus),
        "",
        "## Figure 2, right: the curriculum",
        "",
        f"Fast-electra: T0 of the paper's schedule T = 1 + (T0 - 1) exp(-u / tau), u the fraction "
        f"of training done; the default calibrates T0 on the generator. Electra (no "
        f"temperature): its generator's loss weight g against the discriminator's "
        f"{rtd_weight:g}, run as train.rtd_weight = {rtd_weight:g} / g. Cells: held-out AUC.",
        "",
        *figure2_right(by_corpus),
        "",
        "## Figure 3: learning rate x1 / x2 / x4 / x8",
        "",
        *figure3(by_corpus, second),
        "",
        "Figures: paper_figure2.png (Figure 2), paper_figure3.png (Figure 3), a row per corpus.",
    ]
    (RESULTS / "paper_figures.md").write_text("\n".join(lines) + "\n")
    _plot(by_corpus)
    print("\n".join(lines))


def downstream_results(run: Run) -> dict | None:
    """The yardstick's results of `run` if they were computed (never computes them)."""
    size, _ = SMALL_TASK
    results = run.dir.parent / "finetune" / f"{run.dir.name}-train{size}" / "results.json"
    return json.loads(results.read_text()) if results.is_file() else None


def _plot(by_corpus: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"electra": ("C0", "o", "--"), "fast-electra": ("C3", "s", "-")}
    fig, grid = plt.subplots(len(by_corpus), 3, figsize=(15, 4 * len(by_corpus)), squeeze=False)
    for axes, (corpus, rows) in zip(grid, by_corpus.items()):
        def points(method, keys):
            got = [(i, rows[(method, k)]) for i, k in enumerate(keys) if (method, k) in rows]
            return [(i, r["auc_maskable"]) for i, r in got if r["auc_maskable"] is not None]

        depth_keys = ["recipe" if d == 2 else f"depth{d}" for d in DEPTHS]
        for m, (color, marker, ls) in styles.items():
            xy = points(m, depth_keys)
            if xy:
                axes[0].plot([DEPTHS[i] for i, _ in xy], [a for _, a in xy], ls, color=color,
                             marker=marker, label=m)
            acc = [(DEPTHS[i], _downstream(rows.get((m, k)))) for i, k in enumerate(depth_keys)]
            acc = [(d, a) for d, a in acc if a is not None]
            if acc:
                axes[1].plot(*zip(*acc), ls, color=color, marker=marker, label=m)
        axes[0].set(xlabel="auxiliary model depth (layers)", ylabel="held-out AUC (maskable)",
                    title=f"{corpus} - Figure 2 left: AUC vs auxiliary depth")
        axes[1].set(xlabel="auxiliary model depth (layers)", ylabel="downstream dev accuracy",
                    title=f"{corpus} - ... downstream ({SMALL_TASK[0]} examples)")
        axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
        series = [
            ("fast-electra, tau (calibrated T0)", "fast-electra",
             ["recipe" if t == 0.1 else f"tau-{t:g}" for t in TAUS], [f"{t:g}" for t in TAUS],
             "-"),
            ("fast-electra, T0 (tau 0.1)", "fast-electra",
             [*(f"t0-{t:g}" for t in T0S), "recipe"], [*(f"{t:g}" for t in T0S), "cal."], "-."),
            ("electra, generator weight", "electra",
             ["recipe" if g == 1 else f"genw-{g}" for g in GEN_WEIGHTS],
             [str(g) for g in GEN_WEIGHTS], "--"),
        ]
        for label, m, keys, ticks, ls in series:
            xy = points(m, keys)
            if xy:
                line, = axes[2].plot([i for i, _ in xy], [a for _, a in xy], ls,
                                     color=styles[m][0], marker=styles[m][1],
                                     label=f"{label}: " + " / ".join(ticks))
                if ls == "-.":
                    line.set_alpha(0.6)
        axes[2].set(xlabel="setting (1st .. 4th value, as in the legend)",
                    ylabel="held-out AUC (maskable)",
                    title=f"{corpus} - Figure 2 right: the curriculum")
        axes[2].set_xticks(range(4))
        for ax in axes:
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:  # a panel with no finished run yet has none
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "paper_figure2.png", dpi=110)
    plt.close(fig)

    lr, _ = recipe()
    fig, grid = plt.subplots(len(by_corpus), 2, figsize=(12, 4 * len(by_corpus)), sharey=True,
                             squeeze=False)
    for axes, (corpus, rows) in zip(grid, by_corpus.items()):
        for ax, m in zip(axes, ("electra", "fast-electra")):
            for j, k in enumerate(LR_FACTORS):
                r = rows.get((m, "recipe" if k == 1 else f"lr-x{k}"))
                if r is None or not r["steps"]:
                    continue
                # over the prior's entropy, not raw: electra's replaced share (so its base-rate
                # loss) falls as its generator learns, and a raw curve falling with it looks
                # like learning when it is the base rate
                steps = r["steps"]
                ax.plot(steps, r["over_prior"], color=f"C{j}", label=f"lr x{k} ({lr * k:g})")
                if r["diverged"]:
                    at = min(range(len(steps)), key=lambda i: abs(steps[i] - r["diverged"][0]))
                    ax.plot([steps[at]], [r["over_prior"][at]], "x", color=f"C{j}", ms=12,
                            mew=3)
            ax.axhline(1.0, color="grey", lw=0.8, ls=":")
            ax.set(title=f"{corpus}: {m} (x: diverged; dotted: the base rate)", xlabel="step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0].set_ylabel("training RTD loss / H(replaced share)")
    fig.tight_layout()
    fig.savefig(RESULTS / "paper_figure3.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"which of {', '.join(PARTS)} to run (the recipe cell always)")
    parser.add_argument("--corpus", choices=CORPORA, default="techdocs",
                        help="the development corpus to run the parts on")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    parts = tuple(args.parts.split(","))
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if not args.report_only:
        prepared: dict[str, dict[str, Path]] = {}
        for part in parts:  # in the order given: each part's evidence complete before the next
            for run in plan((part,), args.corpus):
                if run.corpus not in prepared:
                    # the map's independent judge is not used here: skip its cost
                    prepared[run.corpus] = prepare(run.corpus, VOCAB, independent_judge=False)
                execute(run, prepared[run.corpus], args.steps)
            if part == "downstream":
                for run in plan(("depth",), args.corpus):
                    downstream(run)
    report(args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
