"""Each temperature schedule follows its formula."""

import math

import pytest

from fast_electra_ds.config import TemperatureConfig
from fast_electra_ds.method.temperature import temperature

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


def test_default_is_t0_2_tau_0_1():
    cfg = TemperatureConfig()
    assert (cfg.schedule, cfg.t0, cfg.tau) == ("exponential", 2.0, 0.1)
    assert temperature(cfg, 100, 1000) == pytest.approx(1 + math.exp(-1))


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
    exp = TemperatureConfig()
    assert temperature(exp, 2 * STEPS, STEPS) == temperature(exp, STEPS, STEPS)
