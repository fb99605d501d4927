"""The config switch `kernels` between the fused Triton kernels and the torch references.

The kernels live in kernels/fast_electra_kernels (an import package of their own); this is the one
module of fast_electra_ds that imports it. `resolve_kernels` turns kernels = auto | on | off into
one bool at startup and logs the path that runs; the training code then calls `sample` and
`rtd_loss` below when that bool is true, and its plain-torch code when it is false:

  sample    generator.corrupt (the frozen generator of mode=fast-electra; `corrupt` with
            fused=True): Gumbel-max draw, entropy and argmax streamed over the vocabulary, so the
            generator's [B, K, V] logits are never built
  rtd_loss  objectives.FastElectraObjective / ElectraObjective forward: the discriminator's
            H -> 1 projection, masked BCE, accuracy counts and gradients in one pass over its
            hidden states, so its [B, L] logits are never built

Both paths compute the same function: the kernels differ from the references by fp32 summation
order only (kernels/README.md, tests/test_fused_training.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from fast_electra_kernels import SampleOutput, fused_rtd_loss, fused_sample
from fast_electra_kernels._dispatch import interpreting

from fast_electra_ds.errors import UserError


def resolve_kernels(setting: str, device: torch.device | str, *,
                    log: Callable[[str], None] = print) -> bool:
    """True when training runs the fused kernels; `setting` is RunConfig.kernels.

    auto picks them on CUDA when Triton imports and they pass a start-up check, else the
    references; on raises UserError where they cannot run; off never uses them. The start-up
    check runs both kernels once on tiny inputs (no random numbers drawn: the model's
    initialization must not depend on this switch), so a Triton that imports but cannot compile
    (no C compiler, an unsupported GPU) fails here, not in the middle of a step.
    """
    device = torch.device(device)
    if setting == "off":
        log("kernels: torch references (kernels=off)")
        return False
    if setting not in ("auto", "on"):
        raise UserError(f"kernels={setting!r}: expected auto, on or off")
    if device.type != "cuda":
        if setting == "auto":
            log(f"kernels: torch references (kernels=auto uses the fused Triton kernels on CUDA "
                f"only; this run is on {device.type})")
            return False
        if device.type != "cpu" or not interpreting():
            raise UserError(f"kernels=on needs a CUDA device; on {device.type} the Triton kernels "
                            f"run only on CPU under TRITON_INTERPRET=1 (slow, meant for tests). "
                            f"Use kernels=auto or kernels=off")
    try:
        importlib.import_module("triton")
    except ImportError as e:
        return _unavailable(setting, f"Triton does not import ({e})", log)
    try:
        _startup_check(device)
    except Exception as e:  # noqa: BLE001 -- any failure of the kernels means: not usable here
        return _unavailable(setting, f"the kernels failed a start-up check on {device} "
                                     f"({type(e).__name__}: {e})", log)
    log(f"kernels: fused Triton sampler and RTD loss on {device.type}"
        + (" (TRITON_INTERPRET=1: interpreted)" if interpreting() else ""))
    return True


def _unavailable(setting: str, why: str, log: Callable[[str], None]) -> bool:
    if setting == "on":
        raise UserError(f"kernels=on: {why}. Install a Triton that matches torch (pip install "
                        f"triton), or use kernels=auto or kernels=off")
    log(f"kernels: torch references (kernels=auto: {why})")
    return False


def _startup_check(device: torch.device) -> None:
    """Both kernels once on tiny deterministic inputs, the RTD loss with its backward."""
    h = torch.linspace(-1, 1, 2 * 8, device=device).reshape(2, 8)  # [M, H]
    W = torch.linspace(-1, 1, 24 * 8, device=device).reshape(24, 8)  # [V, H]
    out = sample(h, W, torch.zeros(24, device=device), temperature=1.0, seed=0,
                 rows=torch.arange(2, device=device))
    x = torch.linspace(-1, 1, 4 * 8, device=device).reshape(4, 8).requires_grad_()  # [N, H]
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0], device=device)
    loss, _ = rtd_loss(x, torch.ones(8, device=device), torch.zeros(1, device=device), labels,
                       torch.ones(4, device=device))
    loss.backward()
    if not (0 <= int(out.tokens.min()) and int(out.tokens.max()) < 24
            and torch.isfinite(loss) and torch.isfinite(x.grad).all()):
        raise RuntimeError("wrong results on a probe input")


def sample(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, *, temperature: float,
           seed: int, rows: torch.Tensor) -> SampleOutput:
    """The fused sampler (fast_electra_kernels.fused_sample), Triton forced: h [M, E], W [V, E],
    b [V], rows [M] -> tokens, lse, expected_logit, argmax (each [M]) and .entropy."""
    return fused_sample(h, W, b, temperature=temperature, seed=seed, rows=rows, use_triton=True)


def rtd_loss(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, labels: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The fused RTD loss (fast_electra_kernels.fused_rtd_loss), Triton forced: x [..., H],
    w [H], b [1], labels / mask [...] -> (mean BCE over real tokens, counts replaced_correct /
    replaced_total / original_correct / original_total)."""
    return fused_rtd_loss(x, w, b, labels, mask, use_triton=True)
