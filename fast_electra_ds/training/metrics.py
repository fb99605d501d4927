"""Metric reductions shared by training and evaluation."""

from __future__ import annotations

import torch


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
    all-reduce), and turn them into rates (objectives.finalize_metrics)."""
    import torch.distributed as dist

    from fast_electra_ds.method.objectives import finalize_metrics, sum_metrics

    total = sum_metrics(dicts)
    if dist.is_initialized() and dist.get_world_size() > 1:
        keys = sorted(total)
        device = (torch.device("cuda", torch.cuda.current_device())
                  if dist.get_backend() == "nccl" else torch.device("cpu"))
        vec = torch.tensor([total[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(vec)
        total = dict(zip(keys, vec.tolist()))
    return finalize_metrics([total])
