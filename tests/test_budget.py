"""A compute budget instead of a step count: train.budget_flops and train.budget_minutes.

The LR decay and the temperature follow u, the fraction of the budget spent; the run stops with a
committed checkpoint when it is spent; a resumed run continues the same curve; every rank stops
after the same step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fast_electra_ds.config import load_config
from fast_electra_ds.downstream.compare import compare
from fast_electra_ds.errors import UserError
from fast_electra_ds.method.temperature import temperature_at
from fast_electra_ds.training import checkpoint, loop


def _cfg(run_dir: Path, dataset: Path, generator: Path, *overrides: str):
    cfg = load_config("tiny", [f"run_dir={run_dir}", f"data.paths={dataset}", "device=cpu",
                               f"generator.path={generator}", "train.global_batch_size=8",
                               "train.micro_batch_size=8", "logging.log_every=1",
                               "logging.wandb=disabled", "optim.warmup_steps=2",
                               "temperature.schedule=exponential", "temperature.t0=3.0",
                               "eval.num_sequences=16", *overrides])
    cfg.validate()
    return cfg


def _records(run_dir: Path, split: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


@pytest.fixture(scope="module")
def step_flops(tmp_path_factory, tiny_dataset, tiny_generator) -> int:
    run = tmp_path_factory.mktemp("flops") / "run"
    loop.pretrain(_cfg(run, tiny_dataset, tiny_generator, "train.steps=1", "eval.every=1"))
    return _records(run, "eval")[0]["train_flops"]


def test_a_flops_budget_sets_the_length_the_lr_and_the_temperature(tmp_path, tiny_dataset,
                                                                   tiny_generator, step_flops):
    budget = 5.5 * step_flops  # ends after step 6, the first that spends it
    run = tmp_path / "budget"
    cfg = _cfg(run, tiny_dataset, tiny_generator, "train.steps=0",
               f"train.budget_flops={budget}", "eval.every=3")
    result = loop.pretrain(cfg)
    train = _records(run, "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6] and result.state.step == 6
    assert (run / "checkpoints" / "latest").read_text() == "step000000006"  # committed at the end
    assert [r["step"] for r in _records(run, "eval")] == [3, 6]
    for r in train:
        u = (r["step"] - 1) * step_flops / budget  # the fraction spent before that step
        assert r["temperature"] == pytest.approx(temperature_at(cfg.temperature, u))
    # warmup in steps, then linear to 0 as the budget is spent: the LR of step s follows u
    # after step s - 1 (LambdaLR evaluates its factor as each step ends)
    lrs = [r["lr"] for r in train]
    expected = [cfg.optim.lr * max(0.0, min(s / 2, 1 - (s - 1) * step_flops / budget))
                for s in range(1, 7)]
    assert lrs == pytest.approx(expected)


def test_a_resumed_budget_run_continues_the_same_curve(tmp_path, tiny_dataset, tiny_generator,
                                                       step_flops, monkeypatch):
    extra = ["train.steps=0", f"train.budget_flops={5.5 * step_flops}", "eval.every=0",
             "checkpoint.save_every=2"]
    whole = tmp_path / "whole"
    loop.pretrain(_cfg(whole, tiny_dataset, tiny_generator, *extra))

    crashed = tmp_path / "crashed"
    real_save = checkpoint.save

    def crash_after_step_4(engine, cfg, state, **kw):
        path = real_save(engine, cfg, state, **kw)
        if state.step == 4:
            raise RuntimeError("crash after step 4's checkpoint")
        return path

    monkeypatch.setattr(checkpoint, "save", crash_after_step_4)
    with pytest.raises(RuntimeError, match="crash after step 4"):
        loop.pretrain(_cfg(crashed, tiny_dataset, tiny_generator, *extra))
    monkeypatch.setattr(checkpoint, "save", real_save)
    loop.pretrain(_cfg(crashed, tiny_dataset, tiny_generator, *extra))
    keys = ("step", "loss", "lr", "temperature")
    assert [[r[k] for k in keys] for r in _records(crashed, "train")] == \
        [[r[k] for k in keys] for r in _records(whole, "train")]


def test_a_minutes_budget_stops_when_spent(tmp_path, tiny_dataset, tiny_generator):
    run = tmp_path / "minutes"
    result = loop.pretrain(_cfg(run, tiny_dataset, tiny_generator, "train.steps=0",
                                "train.budget_minutes=0.03", "eval.every=100000"))
    seconds = result.state.train_seconds
    assert seconds >= 1.8  # 0.03 minutes, spent: it stopped at the first step past it...
    marker = checkpoint.read_marker(run / "checkpoints", f"step{result.state.step:09d}")
    assert marker["step"] == result.state.step  # ...with a committed checkpoint
    temps = [r["temperature"] for r in _records(run, "train")]
    assert temps[0] == pytest.approx(3.0) and all(a > b for a, b in zip(temps, temps[1:]))
    # ...and not much past it: one step is far shorter than the budget here
    assert seconds < 1.8 + max(r["step_time_s"] for r in _records(run, "train")) + 0.5

    # compare puts it beside a step-counted run, on the same axes
    # (both evaluated once, at their last step, on the same set)
    steps_run = tmp_path / "steps"
    loop.pretrain(_cfg(steps_run, tiny_dataset, tiny_generator, "train.steps=3",
                       "eval.every=100000"))
    text = compare([str(run), str(steps_run)], plot=str(tmp_path / "curves.png"))
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines()
            if line.startswith(("| minutes", "| steps"))}
    assert rows["minutes"][2] == str(result.state.step) and rows["steps"][2] == "3"
    assert float(rows["minutes"][7]) == pytest.approx(seconds, abs=0.01)  # train time (s)
    assert (tmp_path / "curves.png").stat().st_size > 10_000


@pytest.mark.parametrize("overrides, message", [
    (["train.budget_minutes=10"], "train.budget_minutes is set together with train.steps="),
    (["train.steps=0", "train.budget_minutes=10", "train.budget_flops=1e15"], "both set"),
    (["train.steps=0"], "train.steps must be >= 1 (or 0 with train.budget_minutes"),
    (["train.steps=0", "train.budget_flops=-1"], "must be >= 0"),
])
def test_bad_budgets_are_refused(tmp_path, tiny_dataset, tiny_generator, overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        _cfg(tmp_path / "r", tiny_dataset, tiny_generator, *overrides)


def test_every_rank_stops_after_the_same_step(tmp_path, tiny_dataset, tiny_generator):
    """2 ranks over gloo: each measures its own step times, the budget's clock is the slowest
    rank's, so both stop after the same step, and that step's checkpoint is committed."""
    from test_faults import _common, _run

    run = tmp_path / "two"
    _run(_common(tiny_dataset, tiny_generator, run, "train.steps=0",
                 "train.budget_minutes=0.02", "checkpoint.save_every=0"))
    results = [json.loads((run / f"fault_result_rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0]["step"] == results[1]["step"] > 1
    assert (run / "checkpoints" / "latest").read_text() == f"step{results[0]['step']:09d}"
