"""Metrics plumbing: AUC, the rank-0 logger's sinks, and the compare table."""

import json

import pytest
import torch
import yaml

from fast_electra_ds.config import load_config
from fast_electra_ds.downstream.compare import compare
from fast_electra_ds.errors import UserError
from fast_electra_ds.training.logger import MetricsLogger
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


def _tensorboard_steps(log_dir) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [e.step for e in events.Scalars("train/loss")]


def test_a_resumed_run_continues_one_history(tmp_path):
    """An attempt logged steps 1-6 (train) and an evaluation at 4, then died; the run resumes
    from its step-4 checkpoint: the log keeps 1-4 (and the evaluation), the rest goes aside,
    tensorboard hides steps > 4, and wandb logs to a new run that names the old one."""
    run = tmp_path / "run"
    cfg = load_config("tiny", [f"run_dir={run}", "logging.wandb=offline",
                               "logging.tensorboard=true"])
    first = MetricsLogger(cfg, is_main=True)
    for step in range(1, 7):
        first.log(step, {"loss": float(step)})
        if step == 4:
            first.log(step, {"auc": 0.6}, prefix="eval")
    first_id = first.wandb_id
    first.close()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "split": "tr')  # the crash cut the last line short

    second = MetricsLogger(cfg, is_main=True, start_step=4, wandb_id=first_id)
    for step in range(5, 9):
        second.log(step, {"loss": 10.0 * step})
    second_id = second.wandb_id
    continues = dict(second._wandb.config["continues"])
    second.close()

    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [
        (1, "train"), (2, "train"), (3, "train"), (4, "train"), (4, "eval"),
        (5, "train"), (6, "train"), (7, "train"), (8, "train")]
    assert [r["loss"] for r in records if r["step"] > 4] == [50.0, 60.0, 70.0, 80.0]
    aside = (run / "metrics.discarded-after-step4.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in aside[:2]] == [5.0, 6.0] and len(aside) == 3
    assert _tensorboard_steps(run / "tensorboard") == list(range(1, 9))
    assert second_id != first_id
    assert list((run / "wandb").glob(f"offline-run-*-{second_id}"))
    assert continues == {"wandb_run": first_id, "from_step": 4}

    # a clean resume (nothing logged past the checkpoint) keeps the wandb run, moves nothing
    third = MetricsLogger(cfg, is_main=True, start_step=8, wandb_id=second_id)
    assert third.wandb_id == second_id and not third.discarded
    third.close()
    assert not (run / "metrics.discarded-after-step8.jsonl").exists()


def _fake_run(root, name, mode, step_s, *, eval_set_key=None, judge="gen", auc=0.8):
    """A run directory with the files compare reads: config, metrics, eval-set record."""
    run = root / name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"mode": mode}))
    recs = [{"step": s, "split": "train", "step_time_s": step_s * (5 if s == 10 else 1),
             "tokens_per_s": 1000.0, "peak_mem_gb": 0.5, "trainable_params": 123}
            for s in (10, 20, 30)]
    recs += [{"step": s, "split": "eval", "rtd_loss": 0.3, "rtd_accuracy": 0.9,
              "rtd_accuracy_replaced": 0.4, "auc": auc - (30 - s) / 100,
              "train_seconds": s * step_s, "train_flops": s * 1e12} for s in (20, 30)]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, recs)) + "\n")
    if eval_set_key is not None:
        (run / "eval_set.json").write_text(json.dumps({
            "key": eval_set_key, "judge": judge, "judge_temperature": 1.0, "num_sequences": 100,
            "seed": 0, "judge_stats": {"judge_mlm_accuracy": 0.3, "judge_gen_entropy": 4.0}}))
    return run


def test_compare_one_evaluation_set_makes_one_table_with_its_judge(tmp_path):
    a = _fake_run(tmp_path, "a", "fast-electra", 0.03, eval_set_key="k1", judge="/gens/g1")
    b = _fake_run(tmp_path, "b", "electra", 0.04, eval_set_key="k1", judge="/elsewhere/g1")
    plot = tmp_path / "curves.png"
    out = compare([str(a), str(b)], plot=str(plot))
    lines = out.splitlines()
    assert lines[0].startswith("Held-out: judge /gens/g1 at T = 1 on 100 held-out sequences")
    assert "eval set k1" in lines[0] and "MLM accuracy 0.300" in lines[0]
    assert lines[2].startswith("| run | mode |") and "| AUC |" in lines[2]
    assert "replaced recall" in lines[2]
    assert "| a | fast-electra | 30 | 30 |" in lines[4]  # first interval (start-up) left out
    assert "| b | electra | 30 | 40 |" in lines[5]
    assert "| 0.4 | - | 0.8 |" in lines[4]  # recall, original acc (absent), AUC
    assert plot.stat().st_size > 10_000 and "Learning curves: " + str(plot) in out
    with pytest.raises(UserError, match="not a run directory"):
        compare([str(tmp_path)])


def test_compare_refuses_to_put_different_evaluation_sets_side_by_side(tmp_path):
    a = _fake_run(tmp_path, "a", "fast-electra", 0.03, eval_set_key="k1", judge="g1")
    b = _fake_run(tmp_path, "b", "electra", 0.04, eval_set_key="k2", judge="self")
    c = _fake_run(tmp_path, "c", "electra", 0.04)  # an older run: no eval_set.json
    out = compare([str(a), str(b), str(c)], plot=str(tmp_path / "p.png"))
    assert "scored on 3 different evaluation sets" in out and "do not compare" in out
    assert "Held-out, judge g1" in out and "Held-out, judge self" in out
    assert "Held-out, no evaluation set recorded" in out
    # the training table has no held-out column; each held-out table has its own runs only
    train_table = out.split("\n\n")[0]
    assert "AUC" not in train_table and train_table.count("\n") == 4
    assert "left out, scored on other sets: b, c" in out
