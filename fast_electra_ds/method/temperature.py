"""The sampling-temperature curriculum.

Fast-ELECTRA samples replacements from softmax(logits / T). A high T flattens the frozen
generator's distribution (replacements are easy to spot); T falls towards 1 (the generator's own
distribution, the hardest) as training goes on. u = step / total_steps is the fraction done.

  exponential  T = 1 + (t0 - 1) * exp(-u / tau)            the paper's schedule (t0=2, tau=0.1)
  linear       T = t_end + (t0 - t_end) * (1 - u)
  polynomial   T = t_end + (t0 - t_end) * (1 - u) ** power
  step         t0 -> t_end in num_stages equal, constant stages
  constant     T = t0                                      (original ELECTRA: t0 = 1)
"""

from __future__ import annotations

import math

from fast_electra_ds.config import TemperatureConfig


def temperature(cfg: TemperatureConfig, step: int, total_steps: int) -> float:
    """T at optimizer step `step` (0-based) of `total_steps`."""
    return temperature_at(cfg, step / total_steps)


def temperature_at(cfg: TemperatureConfig, u: float) -> float:
    """T at the fraction u of training done (steps, or a budget: training/progress.py)."""
    u = min(max(u, 0.0), 1.0)
    if cfg.schedule == "exponential":
        return 1.0 + (cfg.t0 - 1.0) * math.exp(-u / cfg.tau)
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
