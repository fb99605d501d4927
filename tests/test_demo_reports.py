"""The demo's result writers (benchmarks/demo_curves.py) on synthetic runs: tables at equal steps
and equal wall-clock, and the finding computed from the numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fast_electra_ds.config import load_config

REPO = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("demo_curves",
                                                  REPO / "benchmarks" / "demo_curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(mode: str, seconds_per_step: float, aucs: list[float]) -> dict:
    cfg = load_config("demo", [f"mode={mode}"]).to_dict()
    evals = [{"step": 500 * (i + 1), "auc": a, "auc_maskable": a - 0.01,
              "rtd_accuracy_replaced": 0.1, "train_seconds": 500 * (i + 1) * seconds_per_step,
              "train_flops": 500 * (i + 1) * (3e9 if mode == "fast-electra" else 4e9)}
             for i, a in enumerate(aucs)]
    calibration = {"t0": 2.427, "entropy_at_1": 5.0, "entropy_at_t0": 6.5, "slots": 500}
    return {"name": mode, "config": cfg, "train": [], "evals": evals, "eval_set": None,
            "calibration": calibration if mode == "fast-electra" else None}


def test_report_compares_at_equal_steps_and_equal_wall_clock():
    demo_curves = _module()
    fast = _run("fast-electra", 0.04, [0.55, 0.60, 0.65, 0.70])
    joint = _run("electra", 0.05, [0.55, 0.56, 0.57, 0.58])
    record = {"key": "k", "judge": "g", "judge_temperature": 1.0, "num_sequences": 10,
              "seed": 0, "judge_stats": {}}
    text = demo_curves.report([fast, joint], record, [])
    assert "At equal steps (2,000) fast-electra's held-out AUC is 0.700 against electra's " \
           "0.580" in text
    assert "for 0.75x the FLOPs and 0.80x the training wall-clock" in text
    # equal wall-clock ends at fast-electra's last evaluation (80 s): electra is at step 1,600
    assert "At equal training wall-clock (80 s, where fast-electra has done 2,000 steps and " \
           "electra 1,600), fast-electra is at 0.700 and electra at 0.572" in text
    assert "| 2,000 | 0.7 | 0.58 |" in text
    # the schedule as it ran: the T0 the run measured, not the config's unused t0
    assert "T0 calibrated on the generator (2.427: start_entropy 0.9), tau = 0.1" in text
    assert "RTD head bias prior" in text


def test_report_needs_one_evaluation_set(tmp_path):
    demo_curves = _module()
    for name in ("fast-electra", "electra"):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(f"mode: {name}\n")
        (run / "metrics.jsonl").write_text("")
    assert demo_curves.main(["--demo-dir", str(tmp_path), "--output", str(tmp_path)]) == 2
    with pytest.raises(FileNotFoundError):
        (tmp_path / "demo_curves.md").read_text()
