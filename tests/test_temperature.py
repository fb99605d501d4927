"""Each temperature schedule follows its formula."""

import math

import pytest
import torch

from fast_electra_ds.config import TemperatureConfig
from fast_electra_ds.method.temperature import (calibrate_t0, mean_entropy, temperature,
                                                temperature_at)

STEPS = 1000


@pytest.mark.parametrize("t0, tau", [(2.0, 0.1), (3.0, 0.25), (1.5, 0.05)])
def test_exponential_is_the_papers_formula(t0, tau):
    cfg = TemperatureConfig(schedule="exponential", t0=t0, tau=tau)
    for step in (0, 1, 37, 100, 500, 999, 1000):
        u = step / STEPS
        assert temperature(cfg, step, STEPS) == pytest.approx(1 + (t0 - 1) * math.exp(-u / tau),
                                                              rel=1e-12)
    assert temperature(cfg, 0, STEPS) == pytest.approx(t0)
    # monotonically falling towards 1: the curriculum goes from easy to hard
    values = [temperature(cfg, s, STEPS) for s in range(0, STEPS + 1, 10)]
    assert all(a > b for a, b in zip(values, values[1:])) and values[-1] > 1.0


def test_the_papers_schedule_keeps_its_defaults_and_the_default_is_calibrated():
    cfg = TemperatureConfig(schedule="exponential")
    assert (cfg.t0, cfg.tau) == (2.0, 0.1)
    assert temperature(cfg, 100, 1000) == pytest.approx(1 + math.exp(-1))
    default = TemperatureConfig()
    assert (default.schedule, default.tau, default.start_entropy) == ("calibrated", 0.1, 0.9)


def test_calibrated_is_the_papers_curve_from_the_measured_t0():
    cfg = TemperatureConfig(schedule="calibrated", tau=0.2)
    for u in (0.0, 0.1, 0.5, 1.0):
        assert temperature_at(cfg, u, t0=3.7) == pytest.approx(1 + 2.7 * math.exp(-u / 0.2),
                                                               rel=1e-12)
    with pytest.raises(ValueError, match="calibrated t0"):
        temperature_at(cfg, 0.5)


@pytest.mark.parametrize("sharpness", [1.0, 4.0, 12.0])
@pytest.mark.parametrize("start_entropy", [0.5, 0.9])
def test_calibrated_t0_puts_the_entropy_that_share_of_the_way_to_uniform(sharpness,
                                                                         start_entropy):
    g = torch.Generator().manual_seed(0)
    logits = sharpness * torch.randn(300, 500, generator=g)  # [N, V]
    t0, h1, target = calibrate_t0(logits, start_entropy)
    assert h1 == pytest.approx(mean_entropy(logits, 1.0))
    assert target == pytest.approx(h1 + start_entropy * (math.log(500) - h1))
    # T0 is rounded to 3 decimals: the target lies between the entropies half a unit either side
    assert mean_entropy(logits, t0 - 5e-4) <= target <= mean_entropy(logits, t0 + 5e-4)
    assert t0 > 1.0 and t0 == round(t0, 3)
    # a sharper generator needs a hotter start to reach the same share of the way
    if sharpness > 1:
        assert t0 > calibrate_t0(logits / sharpness, start_entropy)[0]


def test_calibrated_t0_ignores_last_bit_differences_in_the_logits():
    """The generator's logits differ in their last bits between a 1-rank and a 2-rank run (the
    batch shape, the thread count); both must sample at the same T0."""
    g = torch.Generator().manual_seed(1)
    logits = 3.0 * torch.randn(256, 400, generator=g)  # [N, V]
    noisy = logits * (1 + 1e-6 * torch.randn(logits.shape, generator=g))
    assert calibrate_t0(noisy, 0.9)[0] == calibrate_t0(logits, 0.9)[0]


def _forty_halvings(logits: torch.Tensor, start_entropy: float) -> float:
    """calibrate_t0 as it was first written: all 40 halvings of [1, 1000] in log T."""
    h1 = mean_entropy(logits, 1.0)
    target = h1 + start_entropy * (math.log(logits.shape[-1]) - h1)
    lo, hi = 0.0, math.log(1000.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_entropy(logits, math.exp(mid)) < target else (lo, mid)
    return max(1.0, round(math.exp(hi), 3))


def test_calibration_stops_early_with_the_answer_of_all_forty_halvings(monkeypatch):
    """The bisection stops once its bracket rounds to one T0: the same T0 as the full 40 halvings
    (runs and golden files depend on it to the last decimal), in well under the 42 entropies,
    including nearly uniform targets (start_entropy 0.99), where float32 noise makes the entropy
    non-monotone at the last bits."""
    from fast_electra_ds.method import temperature as module
    calls = []
    monkeypatch.setattr(module, "mean_entropy",
                        lambda *a: calls.append(1) or mean_entropy(*a))
    g = torch.Generator().manual_seed(3)
    for sharpness in (0.3, 4.0, 40.0):
        for start_entropy in (0.1, 0.5, 0.9, 0.99):
            logits = sharpness * torch.randn(64, 200, generator=g)  # [N, V]
            logits[:8, :5] += 10  # some peaked rows
            calls.clear()
            assert module.calibrate_t0(logits, start_entropy)[0] == \
                _forty_halvings(logits, start_entropy)
            assert len(calls) <= 24  # 2 + 40 before


def test_calibration_of_a_uniform_generator_starts_at_1():
    t0, h1, target = calibrate_t0(torch.zeros(10, 64), 0.9)
    assert h1 == pytest.approx(math.log(64)) and t0 == pytest.approx(1.0)


def test_linear_and_polynomial():
    lin = TemperatureConfig(schedule="linear", t0=3.0, t_end=1.0)
    poly = TemperatureConfig(schedule="polynomial", t0=3.0, t_end=1.0, power=2.0)
    for step in (0, 250, 500, 1000):
        u = step / STEPS
        assert temperature(lin, step, STEPS) == pytest.approx(1 + 2 * (1 - u))
        assert temperature(poly, step, STEPS) == pytest.approx(1 + 2 * (1 - u) ** 2)


def test_step_schedule_has_equal_constant_stages():
    cfg = TemperatureConfig(schedule="step", t0=2.5, t_end=1.0, num_stages=4)
    assert [temperature(cfg, s, STEPS) for s in (0, 249, 250, 499, 500, 750, 1000)] == \
        pytest.approx([2.5, 2.5, 2.0, 2.0, 1.5, 1.0, 1.0])


def test_constant_and_clamping():
    cfg = TemperatureConfig(schedule="constant", t0=1.0)
    assert {temperature(cfg, s, STEPS) for s in (0, 500, 1000)} == {1.0}
    exp = TemperatureConfig(schedule="exponential")
    assert temperature(exp, 2 * STEPS, STEPS) == temperature(exp, STEPS, STEPS)


def test_a_run_calibrates_t0_on_its_first_batches_and_starts_there(tmp_path, tiny_dataset,
                                                                   tiny_generator, capsys):
    import json
    import re

    from fast_electra_ds.config import load_config
    from fast_electra_ds.training import loop

    runs = {}
    for name, batch in (("a", 16), ("b", 8)):  # another micro-batch: the same first sequences
        cfg = load_config("tiny", [f"run_dir={tmp_path / name}", f"data.paths={tiny_dataset}",
                                   "device=cpu", f"generator.path={tiny_generator}",
                                   "eval.every=0", "logging.log_every=1", "train.steps=2",
                                   f"train.global_batch_size={batch}",
                                   f"train.micro_batch_size={batch}"])
        cfg.validate()
        loop.pretrain(cfg)
        t0 = float(re.search(r"calibrated T0 = ([0-9.]+)", capsys.readouterr().out).group(1))
        records = [json.loads(line)
                   for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        # what was measured is kept with the run, before its first step
        assert records[0]["split"] == "calibration" and records[0]["t0"] == t0
        assert records[0]["entropy_at_t0"] > records[0]["entropy_at_1"] > 0
        first = records[1]
        assert first["split"] == "train" and first["step"] == 1
        assert first["temperature"] == pytest.approx(t0, abs=5e-4)  # u = 0 at step 1
        runs[name] = t0
    assert runs["a"] == runs["b"] and runs["a"] > 1.0
