"""The plateau watch: the test on RTD metrics, the warning's timing, and its place in a run's
logs (metrics.jsonl, tensorboard, the console) - on a run built to stall and on one that leaves
the plateau."""

from __future__ import annotations

import json
import math

import pytest

from fast_electra_ds.training.plateau import (MARGIN, MAX_RECALL, PlateauWatch, binary_entropy,
                                              on_plateau)

SHARE = 0.13


def _window(loss_over_prior: float = 1.0, recall: float = 0.0, share: float = SHARE) -> dict:
    return {"rtd_loss": loss_over_prior * binary_entropy(share), "rtd_replaced_share": share,
            "rtd_accuracy_replaced": recall}


def test_binary_entropy_is_the_loss_of_the_base_rate():
    p = 0.13
    assert binary_entropy(p) == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)))
    assert binary_entropy(0.5) == pytest.approx(math.log(2))
    assert binary_entropy(0.0) == binary_entropy(1.0) == 0.0


@pytest.mark.parametrize("loss_over_prior, recall, stuck", [
    (1.0, 0.0, True),  # the base rate everywhere
    (1.05, 0.0, True),  # worse than the base rate (e.g. a head not yet at the prior)
    (1 - MARGIN / 2, MAX_RECALL / 2, True),
    (1 - 2 * MARGIN, 0.0, False),  # learning: the loss is clearly below the prior's
    (1.0, 2 * MAX_RECALL, False),  # calls some replaced tokens replaced
])
def test_on_plateau(loss_over_prior, recall, stuck):
    assert on_plateau(_window(loss_over_prior, recall)) is stuck


def test_on_plateau_needs_the_rtd_metrics():
    assert not on_plateau({"mlm_loss": 3.0})
    assert not on_plateau({**_window(), "rtd_loss": math.nan})


def test_watch_warns_once_after_patience_past_warmup_and_says_when_the_run_leaves():
    watch = PlateauWatch(warmup_steps=100, patience=300)
    messages = {}
    for step in range(50, 1001, 50):  # windows of 50 steps, stuck until step 800
        metrics = _window() if step <= 800 else _window(loss_over_prior=0.8, recall=0.2)
        message = watch.observe(step, step - 50, metrics)
        if message is not None:
            messages[step] = message
    # the stretch counts from the end of warm-up (100), so it is 300 steps long at step 400
    assert list(messages) == [400, 850]
    assert "plateau for 300 steps (since step 100)" in messages[400]
    assert f"{binary_entropy(SHARE):.4f}" in messages[400] and "optim.warmup_steps" in messages[400]
    assert messages[850].startswith("the discriminator left") and "from step 100 to 800" in \
        messages[850]


def test_a_warned_run_at_the_edge_of_the_margin_is_not_said_to_leave():
    """The demo's electra run: warned at step 1,100, recall 0 throughout, its training loss
    drifted to 2.2% under H(r) by step 3,900; that is noise at the margin, not learning."""
    watch = PlateauWatch(warmup_steps=0, patience=200)
    assert watch.observe(100, 0, _window()) is None
    assert watch.observe(300, 100, _window()) is not None  # warned
    assert watch.observe(400, 300, _window(loss_over_prior=1 - 1.1 * MARGIN)) is None
    assert watch.warned  # the warning stands
    left = watch.observe(500, 400, _window(loss_over_prior=1 - 2.5 * MARGIN))
    assert left is not None and left.startswith("the discriminator left")
    watch = PlateauWatch(warmup_steps=0, patience=200)
    watch.observe(100, 0, _window())
    assert watch.observe(300, 100, _window()) is not None
    assert watch.observe(400, 300, _window(recall=2 * MAX_RECALL)).startswith(
        "the discriminator left")


def test_watch_restarts_the_stretch_when_a_window_learns_and_keeps_its_state_across_resume():
    watch = PlateauWatch(warmup_steps=0, patience=200)
    assert watch.observe(100, 0, _window()) is None
    assert watch.observe(200, 100, _window(loss_over_prior=0.9)) is None  # one window learns
    assert watch.observe(300, 200, _window()) is None  # a new stretch from 200
    resumed = PlateauWatch(warmup_steps=0, patience=200)
    resumed.load_state_dict(watch.state_dict())
    assert resumed.observe(400, 300, _window()) is not None  # 200 steps since 200
    assert PlateauWatch(warmup_steps=0, patience=0).observe(10**6, 0, _window()) is None


# ---- in a run ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uniform_generator(tmp_path_factory, tiny_dataset):
    """A masked-LM folder whose logits are 0 for every token (word embeddings, which the output
    layer shares, and the output bias all zero): its samples are uniform over the vocabulary."""
    import torch
    from transformers import AutoTokenizer

    from fast_electra_ds.config import GeneratorConfig, load_config
    from fast_electra_ds.data.loader import open_datasets
    from fast_electra_ds.method.models import build_generator

    _, info = open_datasets([str(tiny_dataset)], "train", seq_len=64)
    tiny = load_config("tiny", [])
    model = build_generator(GeneratorConfig(**vars(tiny.generator)), tiny.model,
                            vocab_size=info.vocab_size, pad_id=info.special_token_ids["pad"])
    with torch.no_grad():
        model.get_input_embeddings().weight.zero_()
        model.generator_lm_head.bias.zero_()
    out = tmp_path_factory.mktemp("uniform") / "generator"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(info.tokenizer).save_pretrained(out)
    return out


def _run(tmp_path, tiny_dataset, generator, *overrides: str):
    from fast_electra_ds.config import load_config
    from fast_electra_ds.training import loop

    run_dir = tmp_path / "run"
    cfg = load_config("tiny", [f"run_dir={run_dir}", f"data.paths={tiny_dataset}", "device=cpu",
                               f"generator.path={generator}", "eval.every=0",
                               "logging.log_every=10", "logging.tensorboard=true",
                               "optim.warmup_steps=10", "logging.plateau_patience=60",
                               "train.global_batch_size=16", "train.micro_batch_size=16",
                               *overrides])
    cfg.validate()
    loop.pretrain(cfg)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return run_dir, [r for r in records if r["split"] == "alert"]


def _tensorboard_scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def test_a_run_built_to_stall_is_warned_about(tmp_path, tiny_dataset, tiny_generator, capsys):
    # a learning rate that moves nothing: the prior-initialized head predicts the base rate
    run_dir, alerts = _run(tmp_path, tiny_dataset, tiny_generator, "optim.lr=1e-9",
                           "train.steps=100")
    assert [(a["kind"], a["on"], a["step"]) for a in alerts] == [("plateau", True, 70)]
    assert "plateau for 60 steps (since step 10)" in alerts[0]["message"]
    assert "WARNING (step 70): the discriminator has been on the replaced-token-detection " \
           "plateau" in capsys.readouterr().out
    assert _tensorboard_scalars(run_dir, "alert/plateau") == [(70, 1.0)]

    # compare and evaluate flag it
    from fast_electra_ds.cli import main

    assert main(["compare", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "stuck (warned at step 70)" in out and "On the replaced-token-detection plateau" in out
    assert main(["evaluate", "--judge", str(tiny_generator), "--data", str(tiny_dataset),
                 "--num-sequences", "64", "--batch-size", "16", str(run_dir),
                 "--output", str(tmp_path / "e.json")]) == 0
    assert "On the replaced-token-detection plateau" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["rows"][0]["plateau"] == "yes"


def test_a_run_that_learns_gets_no_warning(tmp_path, tiny_dataset, uniform_generator,
                                           capsys):
    # replacements drawn uniformly from the vocabulary are the easiest there are: the
    # discriminator leaves the plateau within the patience
    run_dir, alerts = _run(tmp_path, tiny_dataset, uniform_generator, "train.steps=150",
                           "optim.lr=2e-3")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["split"] == "train"][-1]
    assert last["rtd_accuracy_replaced"] > 0.1  # it did learn
    assert alerts == [] and _tensorboard_scalars(run_dir, "alert/plateau") == []
    from fast_electra_ds.cli import main

    capsys.readouterr()
    assert main(["compare", str(run_dir)]) == 0
    assert "plateau (predicting" not in capsys.readouterr().out
