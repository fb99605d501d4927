"""benchmarks/paper_figures.py's pure logic: when a run counts as diverged (from its metrics
records), which runs the study plans, and the Figure 3 table built from finished runs. No
training: records are written by hand."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import paper_figures as pf
from fast_electra_ds.training.plateau import binary_entropy

SHARE = 0.13
PRIOR = binary_entropy(SHARE)


def _train(step: int, over_prior: float, skipped: int = 0, loss: float = 1.0) -> dict:
    return {"step": step, "split": "train", "loss": loss, "rtd_loss": over_prior * PRIOR,
            "rtd_replaced_share": SHARE, "skipped_steps": skipped}


def test_a_run_that_learns_or_stays_on_the_plateau_did_not_diverge():
    learns = [_train(s, f) for s, f in ((50, 1.0), (100, 0.95), (150, 0.85), (200, 0.8))]
    assert pf.divergence(learns) is None
    # hovering at the prior (electra's discriminator at this scale) is no divergence, even when a
    # window's noise crosses H: it never left by LEFT
    stuck = [_train(s, f) for s, f in ((50, 1.0), (100, 0.97), (150, 1.01), (200, 0.99))]
    assert pf.divergence(stuck) is None


def test_back_above_the_prior_after_leaving_it_is_divergence():
    records = [_train(50, 1.0), _train(100, 0.8), _train(150, 0.95), _train(200, 1.02)]
    assert pf.divergence(records) == (200, "RTD loss back above the prior's")
    # the prior is each window's own: the same loss is under H of a larger replaced share
    records[-1]["rtd_replaced_share"] = 0.3
    assert pf.divergence(records) is None


def test_non_finite_loss_skipped_steps_and_the_guard_stop_are_divergence():
    assert pf.divergence([_train(50, 1.0), _train(100, 1.0, loss=math.nan)]) == (
        100, "loss not finite")
    evals = [_train(50, 0.8), {"step": 50, "split": "eval", "rtd_loss": math.inf}]
    assert pf.divergence(evals) == (50, "loss not finite")
    assert pf.divergence([_train(50, 1.0), _train(100, 0.9, skipped=2)]) == (
        100, "2 step(s) skipped by the fault guard")
    assert pf.divergence([_train(50, 1.0)], guard_stop_step=73) == (
        73, "stopped by the fault guard (loss not finite)")
    # the first sign counts; alerts and other records are not losses
    records = [{"step": 10, "split": "alert", "on": True}, _train(50, 0.8), _train(100, 1.1),
               _train(150, 1.0, skipped=1)]
    assert pf.divergence(records, guard_stop_step=160)[0] == 100


def test_the_guard_message_is_recognized():
    # the text of fast_electra_ds.training.faults.FaultGuard.raise_if_diverged
    text = ("error: the loss was not finite for 5 steps in a row (up to step 412); stopping. "
            "No update was applied in those steps")
    assert pf.GUARD_STOP.search(text).group(1) == "412"


def test_plan_shares_the_recipe_cell_and_maps_the_settings_to_overrides():
    runs = pf.plan(pf.PARTS)
    assert len(runs) == len(set(runs))
    assert runs[:2] == [pf.Run("fast-electra"), pf.Run("electra")]
    keys = {(r.corpus, r.method, r.key, r.seed): r for r in runs}
    lr, rtd_weight = pf.recipe()
    assert keys["techdocs", "electra", "lr-x8", pf.RECIPE_SEED].overrides == (
        f"optim.lr={lr * 8:g}",)
    # generator weight g against the discriminator's 50 is the loss divided by g
    assert keys["techdocs", "electra", "genw-100", pf.RECIPE_SEED].overrides == (
        f"train.rtd_weight={rtd_weight / 100:g}",)
    assert keys["techdocs", "fast-electra", "depth3", pf.RECIPE_SEED].depth == 3
    # the recipe cell is every figure's middle point, so it is not planned again as one
    assert not {"lr-x1", "depth2", "genw-1", "tau-0.1"} & {r.key for r in runs}
    assert ("techdocs", "electra", "recipe", pf.SPREAD_SEED) in keys
    # Figure 3 once more with the second seed: the same overrides
    assert keys["techdocs", "fast-electra", "lr-x4", pf.SPREAD_SEED].overrides == (
        f"optim.lr={lr * 4:g}",)


def test_figure3_table_from_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(pf, "OUT", tmp_path)
    for run, records, code, stop in (
            (pf.Run("electra"), [_train(50, 1.0), _train(100, 0.99)], 0, None),
            (pf.Run("electra", "lr-x8"), [_train(50, 0.8), _train(100, 1.05)], 1, 120)):
        run.dir.mkdir(parents=True)
        evals = [{"step": 100, "split": "eval", "auc_maskable": 0.6}] if code == 0 else []
        (run.dir / "metrics.jsonl").write_text(
            "\n".join(json.dumps(r) for r in records + evals) + "\n")
        (run.dir / "outcome.json").write_text(json.dumps(
            {"returncode": code, "seconds": 1.0, "steps": 100, "guard_stop_step": stop,
             "calibrated_t0": None}))
    rows = {(r["method"], r["key"]): r for r in map(pf.read, pf.plan(("lr",))) if r}
    lines = pf.figure3({"techdocs": rows})
    assert len(lines) == 2 + 2 * len(pf.LR_FACTORS)
    electra = [line for line in lines if line.startswith("| techdocs | electra |")]
    assert electra[0].startswith(
        f"| techdocs | electra | x1 ({pf.recipe()[0]:g}) | 0.990 | 0.990 | 0 | no | 0.600 | - |")
    assert "at step 100: RTD loss back above the prior's" in electra[-1]
    assert electra[-1].endswith("| - (diverged at 100) | - |")
    assert all("not run" in line for line in electra[1:-1])
    assert rows["electra", "recipe"]["prior"] == pytest.approx(PRIOR)


def test_plan_runs_the_same_cells_on_either_corpus():
    techdocs, kjv = pf.plan(pf.PARTS, "techdocs"), pf.plan(pf.PARTS, "kjv")
    assert {r.corpus for r in kjv} == {"kjv"}
    assert [(r.method, r.key, r.overrides, r.depth, r.seed) for r in kjv] == [
        (r.method, r.key, r.overrides, r.depth, r.seed) for r in techdocs]


def test_the_report_reads_runs_gone_from_disk_back_from_its_csv(tmp_path, monkeypatch):
    """A fresh clone has the results but not the runs: rows written to paper_figures.csv read
    back as read() returned them, so --report-only rebuilds the same tables."""
    monkeypatch.setattr(pf, "OUT", tmp_path / "runs")
    run = pf.Run("electra", "lr-x8")
    run.dir.mkdir(parents=True)
    records = [_train(50, 0.8), _train(100, 1.05)]
    (run.dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records + [
        {"step": 100, "split": "eval", "auc_maskable": 0.55}]) + "\n")
    (run.dir / "outcome.json").write_text(json.dumps(
        {"returncode": 0, "seconds": 2.5, "steps": 100, "guard_stop_step": None,
         "calibrated_t0": 2.1}))
    row = pf.read(run)
    assert row["diverged"] == (100, "RTD loss back above the prior's")
    old_style = dict(row, steps=None)  # an earlier CSV had no steps column: LOG_EVERY apart
    for i, written in enumerate((row, old_style)):
        record = tmp_path / f"paper_figures{i}.csv"
        with open(record, "w", newline="") as f:
            writer = pf.csv.DictWriter(f, fieldnames=list(written))
            writer.writeheader()
            writer.writerow({k: "" if v is None else v for k, v in written.items()})
        back = pf.recorded(record)[("techdocs", "electra", "lr-x8", pf.RECIPE_SEED)]
        assert back == dict(row, steps=[pf.LOG_EVERY, 2 * pf.LOG_EVERY])  # repr: exact
    assert pf.recorded(tmp_path / "missing.csv") == {}
