"""Metrics plumbing: AUC, the rank-0 logger's sinks, and the compare table."""

import json

import pytest
import torch
import yaml

from fast_electra_ds.compare import compare
from fast_electra_ds.config import load_config
from fast_electra_ds.errors import UserError
from fast_electra_ds.logger import MetricsLogger
from fast_electra_ds.metrics import binary_auc


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    labels = torch.rand(2000, generator=g) < 0.2
    scores = torch.randn(2000, generator=g) + labels.float()
    scores = torch.round(scores * 4) / 4  # many ties
    assert binary_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert binary_auc(torch.tensor([1.0, 2.0]), torch.tensor([0, 1])) == 1.0
    assert binary_auc(torch.tensor([1.0, 2.0]), torch.tensor([1, 1])) != \
        binary_auc(torch.tensor([1.0, 2.0]), torch.tensor([1, 1]))  # NaN: one class only


def test_logger_writes_jsonl_wandb_offline_and_tensorboard(tmp_path):
    cfg = load_config("tiny", [f"run_dir={tmp_path / 'run'}", "logging.wandb=offline",
                               "logging.tensorboard=true"])
    log = MetricsLogger(cfg, is_main=True)
    log.log(10, {"loss": 1.5, "lr": 1e-3})
    log.log(10, {"auc": 0.9}, prefix="eval")
    run_id = log.wandb_id
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["loss"] == 1.5 and lines[1]["split"] == "eval"
    assert run_id and list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))

    quiet = MetricsLogger(cfg, is_main=False)  # other ranks write nothing
    quiet.log(1, {"loss": 0.0})
    quiet.close()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_compare_table(tmp_path):
    for name, mode, ms in (("a", "fast-electra", 0.03), ("b", "electra", 0.04)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump({"mode": mode}))
        recs = [{"step": s, "split": "train", "step_time_s": ms * (5 if s == 10 else 1),
                 "tokens_per_s": 1000.0, "peak_mem_gb": 0.5, "trainable_params": 123}
                for s in (10, 20, 30)]
        recs.append({"step": 30, "split": "eval", "rtd_loss": 0.3, "rtd_accuracy": 0.9,
                     "auc": 0.8})
        (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, recs)) + "\n")
    out = compare([str(tmp_path / "a"), str(tmp_path / "b")])
    rows = out.splitlines()
    assert rows[0].startswith("| run | mode |") and len(rows) == 4
    assert "| a | fast-electra | 30 | 30 |" in rows[2]  # first interval (start-up) left out
    assert "| b | electra | 30 | 40 |" in rows[3]
    with pytest.raises(UserError, match="not a run directory"):
        compare([str(tmp_path)])
