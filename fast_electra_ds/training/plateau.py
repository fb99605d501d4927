"""Is the discriminator stuck on the replaced-token-detection plateau?

On the plateau a discriminator predicts the base rate everywhere: its RTD loss is the binary
entropy H(r) of the share r of replaced tokens (the loss of the best constant prediction) and it
calls no token replaced (recall 0). Every run starts there; one that is still there long after
warm-up is learning nothing, and its encoder is being worn down to a constant (README, "The
plateau"). `on_plateau` is the test, on training windows and on held-out metrics alike;
`PlateauWatch` applies it to the logged training windows (no extra compute) and says when a run
has sat there for `patience` steps, and when it leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A window is on the plateau when its RTD loss is within MARGIN (relative) of H(r) and it calls
# at most MAX_RECALL of the replaced tokens replaced. A run that has started to learn is well
# past either: the demo's fast-electra run is 5% under H(r) by step 300.
MARGIN = 0.02
MAX_RECALL = 0.01
# A run that was warned about leaves only when it is clearly off: recall above MAX_RECALL or the
# loss LEAVE_MARGIN under H(r). Without this gap a run at the edge of MARGIN flips in and out
# (the demo's electra run, recall 0 throughout, crossed 2% under H(r) at step 3,900 by noise).
LEAVE_MARGIN = 2 * MARGIN

ADVICE = ("try: a longer optim.warmup_steps or a lower optim.lr; model.head_bias_init=prior (the "
          "default); an easier start for the curriculum (temperature.schedule=calibrated, the "
          "default, or a higher temperature.t0); a stronger generator (README, 'The plateau')")


def binary_entropy(p: float) -> float:
    """H(p) in nats: the RTD loss of predicting the base rate p everywhere."""
    if not 0.0 < p < 1.0:
        return 0.0
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def on_plateau(metrics: dict[str, float]) -> bool:
    """Whether RTD metrics (rtd_loss, rtd_replaced_share, rtd_accuracy_replaced; training or
    held-out) are those of a discriminator that predicts the base rate everywhere."""
    needed = ("rtd_loss", "rtd_replaced_share", "rtd_accuracy_replaced")
    if not all(k in metrics and math.isfinite(metrics[k]) for k in needed):
        return False
    prior = binary_entropy(metrics["rtd_replaced_share"])
    return (metrics["rtd_accuracy_replaced"] <= MAX_RECALL
            and metrics["rtd_loss"] >= (1 - MARGIN) * prior)


def clearly_off_plateau(metrics: dict[str, float]) -> bool:
    """Whether RTD metrics show a discriminator that has learned something: it calls more than
    MAX_RECALL of the replaced tokens replaced, or its loss is LEAVE_MARGIN under H(r)."""
    if not all(k in metrics and math.isfinite(metrics[k])
               for k in ("rtd_loss", "rtd_replaced_share", "rtd_accuracy_replaced")):
        return False
    prior = binary_entropy(metrics["rtd_replaced_share"])
    return (metrics["rtd_accuracy_replaced"] > MAX_RECALL
            or metrics["rtd_loss"] < (1 - LEAVE_MARGIN) * prior)


@dataclass
class PlateauWatch:
    """Follows the logged training windows of a run with a discriminator.

    `observe` returns a message when the run has been on the plateau for `patience` steps after
    warm-up (once per stretch), and when a run it warned about leaves the plateau (clearly:
    `clearly_off_plateau`); else None.
    State (`since`, `warned`) goes into the checkpoint, so a resumed run keeps counting.
    """

    warmup_steps: int
    patience: int  # 0: never warn
    since: int | None = None  # the first step of the current stretch on the plateau
    warned: bool = False  # the current stretch has been warned about

    def observe(self, step: int, window_start: int, metrics: dict[str, float]) -> str | None:
        """`metrics`: the rates of training steps window_start + 1 .. step."""
        if not self.patience or "rtd_loss" not in metrics:
            return None
        if self.warned and not clearly_off_plateau(metrics):
            return None  # still stuck, or at the edge: the warning stands
        if step <= self.warmup_steps or not on_plateau(metrics):
            message = None
            if self.warned:
                message = (f"the discriminator left the replaced-token-detection plateau "
                           f"(on it from step {self.since} to {window_start}): replaced recall "
                           f"{metrics.get('rtd_accuracy_replaced', math.nan):.3f}, RTD loss "
                           f"{metrics.get('rtd_loss', math.nan):.4f}")
            self.since, self.warned = None, False
            return message
        if self.since is None:
            self.since = max(window_start, self.warmup_steps)
        if self.warned or step - self.since < self.patience:
            return None
        self.warned = True
        share = metrics["rtd_replaced_share"]
        return (f"the discriminator has been on the replaced-token-detection plateau for "
                f"{step - self.since:,} steps (since step {self.since:,}): it predicts the base "
                f"rate everywhere - RTD loss {metrics['rtd_loss']:.4f} against "
                f"{binary_entropy(share):.4f}, the binary entropy of the replaced share "
                f"{share:.3f}; replaced recall {metrics['rtd_accuracy_replaced']:.4f}. It is "
                f"learning nothing, and an encoder kept there collapses; {ADVICE}")

    def state_dict(self) -> dict:
        return {"since": self.since, "warned": self.warned}

    def load_state_dict(self, state: dict) -> None:
        self.since, self.warned = state.get("since"), bool(state.get("warned", False))
