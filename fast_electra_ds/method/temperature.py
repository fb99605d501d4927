"""The sampling-temperature curriculum.

Fast-ELECTRA samples replacements from softmax(logits / T). A high T flattens the frozen
generator's distribution (replacements are easy to spot); T falls towards 1 (the generator's own
distribution, the hardest) as training goes on. u = step / total_steps is the fraction done.

  exponential  T = 1 + (t0 - 1) * exp(-u / tau)            the paper's schedule (t0=2, tau=0.1)
  calibrated   the same curve from T0 = calibrate_t0(...): the temperature at which the frozen
               generator's replacements, on the run's first batches, have the entropy
               H(1) + start_entropy * (log V - H(1)), i.e. that share of the way from its own
               distribution to the uniform one, whatever the generator's strength
  linear       T = t_end + (t0 - t_end) * (1 - u)
  polynomial   T = t_end + (t0 - t_end) * (1 - u) ** power
  step         t0 -> t_end in num_stages equal, constant stages
  constant     T = t0                                      (original ELECTRA: t0 = 1)
"""

from __future__ import annotations

import math

import torch

from fast_electra_ds.config import TemperatureConfig


def temperature(cfg: TemperatureConfig, step: int, total_steps: int) -> float:
    """T at optimizer step `step` (0-based) of `total_steps`."""
    return temperature_at(cfg, step / total_steps)


def temperature_at(cfg: TemperatureConfig, u: float, t0: float | None = None) -> float:
    """T at the fraction u of training done (steps, or a budget: training/progress.py).
    t0: schedule=calibrated's start, from `calibrate_t0`."""
    u = min(max(u, 0.0), 1.0)
    if cfg.schedule == "exponential":
        return 1.0 + (cfg.t0 - 1.0) * math.exp(-u / cfg.tau)
    if cfg.schedule == "calibrated":
        if t0 is None:
            raise ValueError("schedule=calibrated needs the calibrated t0 (calibrate_t0)")
        return 1.0 + (t0 - 1.0) * math.exp(-u / cfg.tau)
    if cfg.schedule == "linear":
        return cfg.t_end + (cfg.t0 - cfg.t_end) * (1.0 - u)
    if cfg.schedule == "polynomial":
        return cfg.t_end + (cfg.t0 - cfg.t_end) * (1.0 - u) ** cfg.power
    if cfg.schedule == "step":
        stage = min(int(u * cfg.num_stages), cfg.num_stages - 1)
        return cfg.t0 + (cfg.t_end - cfg.t0) * stage / (cfg.num_stages - 1)
    if cfg.schedule == "constant":
        return cfg.t0
    raise ValueError(f"unknown temperature schedule {cfg.schedule!r}")


def mean_entropy(logits: torch.Tensor, temperature: float) -> float:
    """Mean entropy (nats) of softmax(logits / T) over the rows of `logits` [N, V]."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # [N, V]
    return float(-(logp.exp() * logp).sum(-1).mean())


def calibrate_t0(logits: torch.Tensor, start_entropy: float, *, t_max: float = 1000.0
                 ) -> tuple[float, float, float]:
    """The temperature T0 >= 1 at which the mean entropy of softmax(logits / T0) is
    H(1) + start_entropy * (log V - H(1)); logits [N, V] of a generator at masked positions.
    Returns (T0, H(1), the target). Entropy grows with T (towards log V), so bisection on log T
    finds it; 40 halvings of [1, t_max] leave T0 within 1e-10 relative, and T0 is then rounded
    to 3 decimals: the generator's logits differ in their last bits with the batch shape and
    the thread count, and every rank, world size and resume of a run must sample at the same T.
    The bisection stops as soon as its whole bracket rounds to one T0: the 40 halvings could
    only end inside it, so the answer is theirs, after ~19 entropies instead of 42 (each a
    softmax over the calibration logits, most of a small run's start-up)."""
    h1 = mean_entropy(logits, 1.0)
    target = h1 + start_entropy * (math.log(logits.shape[-1]) - h1)
    if target - h1 < 1e-6:  # already (nearly) uniform: no hotter start exists
        return 1.0, h1, target
    lo, hi = 0.0, math.log(t_max)
    if mean_entropy(logits, t_max) < target:
        return t_max, h1, target
    for _ in range(40):
        if round(math.exp(lo), 3) == round(math.exp(hi), 3):  # monotone: decided
            break
        mid = (lo + hi) / 2
        if mean_entropy(logits, math.exp(mid)) < target:
            lo = mid
        else:
            hi = mid
    return max(1.0, round(math.exp(hi), 3)), h1, target
