"""The metric arithmetic shared by the objectives, training and evaluation.

Metrics are float64 scalar tensors holding sums and counts, never means, so that micro-batches
and ranks combine by plain addition (one all-reduce of the stacked values); `finalize_metrics`
divides at the end. The keys:

  loss_sum, num_micro_batches      the loss itself (a mean per micro-batch, as the engine uses it)
  rtd_loss_sum                     BCE summed over the non-padding tokens
  rtd_replaced_total, rtd_replaced_correct, rtd_original_total, rtd_original_correct
                                   non-padding tokens by true class, and the discriminator's
                                   hits among them (logit > 0 means "replaced"); the names are
                                   fast_electra_kernels.rtd_loss's COUNT_NAMES with an rtd_ prefix
  num_slots, mlm_correct, mlm_loss_sum   used prediction slots; generator argmax hits; MLM CE
  gen_entropy_sum, gen_num_replaced      sampling entropy at T; slots whose sample != original
                                   (all but mlm_loss_sum also come from sampling.corrupt)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

_RTD_TOKENS = ("rtd_replaced_total", "rtd_original_total")  # together: the non-padding tokens

# reported rate -> (numerator keys, denominator keys); left out when the denominator sums to 0
_RATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "loss": (("loss_sum",), ("num_micro_batches",)),
    "rtd_loss": (("rtd_loss_sum",), _RTD_TOKENS),
    "rtd_accuracy": (("rtd_replaced_correct", "rtd_original_correct"), _RTD_TOKENS),
    "rtd_accuracy_replaced": (("rtd_replaced_correct",), ("rtd_replaced_total",)),
    "rtd_accuracy_original": (("rtd_original_correct",), ("rtd_original_total",)),
    "rtd_replaced_share": (("rtd_replaced_total",), _RTD_TOKENS),
    "mlm_loss": (("mlm_loss_sum",), ("num_slots",)),
    "mlm_accuracy": (("mlm_correct",), ("num_slots",)),
    "gen_entropy": (("gen_entropy_sum",), ("num_slots",)),
    "replace_rate": (("gen_num_replaced",), ("num_slots",)),
}


def count(x: torch.Tensor) -> torch.Tensor:
    """A boolean or 0/1 tensor's sum as a float64 scalar, detached: a summable count."""
    return x.detach().sum().double()


def loss_metrics(loss: torch.Tensor) -> dict:
    """The loss as a sum over micro-batches, so that the mean over a window is exact."""
    return {"loss_sum": loss.detach().double(),
            "num_micro_batches": torch.ones((), dtype=torch.float64, device=loss.device)}


def sum_metrics(dicts: Iterable[Mapping[str, torch.Tensor | float]]) -> dict[str, float]:
    """Add up the metric sums and counts of several micro-batches (the "loss" entry is skipped).

    One device-to-host copy for all keys, not one per key.
    """
    dicts = list(dicts)
    keys = sorted({k for d in dicts for k in d if k != "loss"})
    if not keys:
        return {}
    device = next((v.device for d in dicts for k, v in d.items()
                   if k != "loss" and isinstance(v, torch.Tensor)), torch.device("cpu"))
    totals = torch.stack([
        sum(torch.as_tensor(d[k], dtype=torch.float64, device=device) for d in dicts if k in d)
        for k in keys])  # [num_keys]
    return dict(zip(keys, totals.tolist()))


def finalize_metrics(dicts: Iterable[Mapping[str, torch.Tensor | float]]) -> dict[str, float]:
    """Rates from summed metrics: {"loss": ..., "rtd_accuracy": ..., "replace_rate": ...}.

    Give it the per-micro-batch dicts of one rank, or dicts already summed across ranks. Counts
    whose name starts with num_ (num_slots, num_micro_batches) are passed through as well.
    """
    total = sum_metrics(dicts)
    out: dict[str, float] = {}
    for name, (numerators, denominators) in _RATES.items():
        if all(k in total for k in numerators + denominators):
            den = sum(total[k] for k in denominators)
            if den > 0:
                out[name] = sum(total[k] for k in numerators) / den
    out.update({k: v for k, v in total.items() if k.startswith("num_")})
    return out




def binary_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC of `scores` [N] for binary `labels` [N] (Mann-Whitney U, ties get average ranks).
    NaN when only one class is present."""
    scores = scores.double().flatten()
    labels = labels.flatten() > 0.5
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores, stable=True)
    sorted_scores = scores[order]
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True,
                                                  return_counts=True)
    ends = torch.cumsum(counts, 0).double()  # 1-based rank of each tie group's last member
    avg_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(scores)
    ranks[order] = avg_rank[inverse]
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def gather_1d(x: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-d tensor over ranks, in rank order (sizes may differ by rank), on CPU."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x.cpu()
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, x.cpu())
    return torch.cat(parts)


def reduce_metrics(dicts: list[dict]) -> dict[str, float]:
    """Sum the metric sums/counts of this rank's micro-batches, add them up over all ranks (one
    all-reduce), and turn them into rates (finalize_metrics)."""
    import torch.distributed as dist

    total = sum_metrics(dicts)
    if dist.is_initialized() and dist.get_world_size() > 1:
        keys = sorted(total)
        device = (torch.device("cuda", torch.cuda.current_device())
                  if dist.get_backend() == "nccl" else torch.device("cpu"))
        vec = torch.tensor([total[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(vec)
        total = dict(zip(keys, vec.tolist()))
    return finalize_metrics([total])
