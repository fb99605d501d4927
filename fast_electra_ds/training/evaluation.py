"""Held-out evaluation on one yardstick: a fixed judge, a fixed corrupted set, every run scored on
exactly the same tokens.

Replaced-token detection is only as hard as the generator that replaced the tokens, so two
discriminators' held-out numbers compare only when one generator corrupted both evaluation sets.
A run's own generator will not do: fast-electra's frozen generator and electra's jointly trained
one (which changes as it learns) are different tests. Instead a *judge*, a fixed masked LM,
corrupts a fixed sample of the valid split once, at T = 1, and every run is scored on those
tokens: any mode, any number of ranks or micro-batch size, and (`fast-electra evaluate`,
downstream/compare.py) finished runs and exported discriminators.

  EvalSpec        what fixes the set: the judge's weights (a digest, not its path), the valid
                  data (digests of its files), the seed, the number of sequences, the masking.
                  Equal specs give equal sets; `key` names a spec in RUN_DIR/eval_set.json.
  build_eval_set  valid split -> its first N sequences in the seed's shuffled order -> masks
                  (seed) -> the judge's samples at T = 1 (seed): this rank's shard, on CPU.
  score_*         a model over the shard -> summed counts, all-reduced -> rates and ROC AUC.

The set is a pure function of the spec: masks and samples are keyed on (seed, sample id, slot), as
in training, so a rank builds only its shard and the union over ranks is the one-rank set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fast_electra_ds.data.loader import DataInfo, MaskingCollate, packed_sequences
from fast_electra_ds.data.masking import MaskedBatch, Masker
from fast_electra_ds.errors import UserError
from fast_electra_ds.method import frozen_generator, mlm_head, sampling
from fast_electra_ds.method.modes import EvalTargets
from fast_electra_ds.method.objectives import mlm_loss, rtd_loss
from fast_electra_ds.metrics import binary_auc, gather_1d, reduce_metrics
from fast_electra_ds.paths import shown

JUDGE_TEMPERATURE = 1.0  # the judge's own distribution: the hardest test it can set
JUDGE_SEED_OFFSET = 7919  # the judge's sampling noise is apart from the masks' (same eval seed)
EVAL_SET_FILE = "eval_set.json"


@dataclass(frozen=True)
class EvalSpec:
    """Everything that decides the evaluation set's tokens."""

    judge: str  # the judge as named (folder or hub id), or "self"; for people, not in `key`
    judge_fingerprint: str  # digest of the judge's weights; "self:<run_dir>" for judge=self
    data: tuple[str, ...]  # digest of each dataset's valid split (.bin and .idx)
    weights: tuple[float, ...]  # blend weights (empty: proportional to size)
    seed: int
    num_sequences: int  # the set's size (at most the valid split's)
    seq_len: int
    mask_prob: float
    masking_style: str

    @property
    def key(self) -> str:
        """A short name of the set: equal for equal sets, whatever the judge's path."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "judge"}
        return hashlib.blake2b(json.dumps(fields, sort_keys=True).encode(),
                               digest_size=8).hexdigest()

    def describe(self) -> str:
        what = (f"judge {shown(self.judge)} at T = {JUDGE_TEMPERATURE:g}"
                if self.judge_fingerprint else "masks only (no judge)")
        return (f"{what}, {self.num_sequences} valid sequences, seed {self.seed} "
                f"(eval set {self.key})")


@dataclass
class EvalSet:
    """One rank's shard of the evaluation set: S = ceil(N / world size) rows on CPU, the same S on
    every rank (so that every rank runs the same number of forward passes, as ZeRO-3 needs)."""

    spec: EvalSpec
    batch: MaskedBatch  # [S, L] / [S, K]: the masked sequences (labels, slots, sample ids)
    keep: torch.Tensor  # [S] bool: False on rows that only pad the shard to S (never counted)
    maskable: torch.Tensor  # [S, L] bool: real tokens other than [CLS]/[SEP]/...: replaceable
    corrupted_ids: torch.Tensor | None  # [S, L] int64 with the judge's samples (None: judge=self)
    rtd_labels: torch.Tensor | None  # [S, L] float32, 1 where the judge's sample differs
    judge_stats: dict[str, float]  # over the whole set: the judge's MLM accuracy, entropy, ...

    def chunks(self, batch_size: int):
        """(rows, MaskedBatch) of at most batch_size rows, in order."""
        for start in range(0, len(self.keep), batch_size):
            rows = slice(start, start + batch_size)
            yield rows, MaskedBatch(**{k: v[rows] for k, v in self.batch.__dict__.items()})

    def record(self) -> dict:
        """What RUN_DIR/eval_set.json holds: the spec, its key and the judge's statistics."""
        return {"key": self.spec.key, **dataclasses.asdict(self.spec),
                "judge_temperature": JUDGE_TEMPERATURE, "judge_stats": self.judge_stats}


# --------------------------------------------------------------------------------------------
# The judge


def load_judge(path_or_hub_id: str, data_info: DataInfo, *, device: torch.device,
               logger: Callable[[str], None] = print) -> tuple[nn.Module, str]:
    """The judge in fp32 on `device` (fp32 everywhere, so that a GPU run and a CPU run draw the
    same samples up to near-ties), checked against the data like a generator, and the digest of
    its weights."""
    model, source = frozen_generator.load_masked_lm(path_or_hub_id, vocab_size=data_info.vocab_size,
                                       special_ids=data_info.special_token_ids, logger=logger,
                                       what="eval.judge")
    return model.to(device), weights_digest(model)


def weights_digest(model: nn.Module) -> str:
    """A digest of a model's tensors by name: the same weights give the same digest wherever the
    files live and whatever format they were saved in."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def split_digest(dataset: str | Path, split: str = "valid") -> str:
    """A digest of one prepared dataset's split files (the token ids and their index)."""
    h = hashlib.blake2b(digest_size=16)
    for suffix in (".idx", ".bin"):
        with open(Path(dataset) / f"{split}{suffix}", "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Building the set


def build_eval_set(paths: Sequence[str], data_info: DataInfo, *, judge: nn.Module | None,
                   judge_name: str, judge_fingerprint: str, num_sequences: int, seed: int,
                   mask_prob: float, masking_style: str, weights: Sequence[float] = (),
                   rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
                   batch_size: int = 64, logger: Callable[[str], None] = print) -> EvalSet:
    """This rank's shard of the evaluation set. `judge` None: the masks only (mode=mlm, or
    judge=self, whose samples are drawn at each evaluation)."""
    device = torch.device(device)
    dataset = packed_sequences(list(paths), split="valid", seq_len=data_info.seq_len, seed=seed,
                               weights=list(weights) or None)
    available = sum(len(reader) for reader in dataset.readers)
    n = min(num_sequences, available)
    if n < num_sequences:
        logger(f"eval: the valid split holds {available} sequences, fewer than "
               f"eval.num_sequences={num_sequences}; the set uses all {available}")
    if n < world_size:
        raise UserError(f"the evaluation set has {n} sequences, fewer than the {world_size} "
                        f"ranks: hold out more data (prepare-data --valid-fraction) or set "
                        f"eval.every=0")
    spec = EvalSpec(judge=judge_name, judge_fingerprint=judge_fingerprint,
                    data=tuple(split_digest(p) for p in paths), weights=tuple(weights), seed=seed,
                    num_sequences=n, seq_len=data_info.seq_len, mask_prob=mask_prob,
                    masking_style=masking_style)

    # this rank's rows of [0, n), padded to the same count on every rank with its last row
    per_rank = math.ceil(n / world_size)
    first = min(rank * per_rank, n)
    ids = np.arange(first, min(first + per_rank, n), dtype=np.int64)
    keep = torch.zeros(per_rank, dtype=torch.bool)
    keep[:len(ids)] = True
    pad_with = ids[-1] if len(ids) else n - 1
    ids = np.concatenate([ids, np.full(per_rank - len(ids), pad_with, dtype=np.int64)])

    masker = Masker(seq_len=data_info.seq_len, vocab_size=data_info.vocab_size,
                    mask_id=data_info.special_token_ids["mask"],
                    special_ids=data_info.special_ids, mask_prob=mask_prob,
                    style=masking_style, seed=seed)
    batch = MaskingCollate(masker)(dataset.__getitems__(ids.tolist()))  # [S, ...]
    batch.weights[~keep] = 0.0  # padding rows have no slots: no statistic ever counts them
    special = torch.tensor(data_info.special_ids)
    maskable = batch.attention_mask.bool() & ~torch.isin(batch.input_ids, special)
    eval_set = EvalSet(spec, batch, keep, maskable, None, None, judge_stats={})
    if judge is None:
        return eval_set

    corrupted, labels, sums = [], [], []
    with torch.no_grad():
        for _, chunk in eval_set.chunks(batch_size):
            ids_, labels_, stats = sampling.corrupt(judge, chunk.to(device),
                                               temperature=JUDGE_TEMPERATURE,
                                               seed=seed + JUDGE_SEED_OFFSET)
            corrupted.append(ids_.cpu())
            labels.append(labels_.cpu())
            sums.append(stats)
    eval_set.corrupted_ids = torch.cat(corrupted)  # [S, L]
    eval_set.rtd_labels = torch.cat(labels)  # [S, L]
    totals = reduce_metrics(sums)  # over every rank's shard
    eval_set.judge_stats = {f"judge_{k}": totals[k]
                            for k in ("mlm_accuracy", "gen_entropy", "replace_rate")}
    return eval_set


# --------------------------------------------------------------------------------------------
# Scoring


def score_targets(targets: EvalTargets, eval_set: EvalSet, *, device: torch.device | str,
                  batch_size: int, eval_seed: int) -> dict[str, float]:
    """What a mode evaluates (modes.EvalTargets): a trained generator's MLM accuracy on the set's
    masks, then its discriminator on the judge's replacements - or, for judge=self, on those of
    its own generator as it is now."""
    metrics: dict[str, float] = {}
    if targets.masked_lm is not None:
        metrics.update(score_masked_lm(targets.masked_lm, eval_set, device=device,
                                       batch_size=batch_size))
    if targets.discriminator is not None:
        corrupt_fn = None
        if eval_set.corrupted_ids is None:  # judge=self
            def corrupt_fn(batch: MaskedBatch):
                return sampling.corrupt(targets.own_generator, batch,
                                        temperature=JUDGE_TEMPERATURE,
                                        seed=eval_seed + JUDGE_SEED_OFFSET)[:2]
        metrics.update(score_discriminator(targets.discriminator, eval_set, device=device,
                                           batch_size=batch_size, corrupt_fn=corrupt_fn))
    return metrics


@torch.no_grad()
def score_discriminator(discriminator: nn.Module, eval_set: EvalSet, *,
                        device: torch.device | str, batch_size: int,
                        corrupt_fn: Callable[[MaskedBatch], tuple[torch.Tensor, torch.Tensor]]
                        | None = None) -> dict[str, float]:
    """Replaced-token detection on the set: rtd_loss, rtd_accuracy, rtd_accuracy_replaced (the
    recall of replaced tokens), rtd_accuracy_original, rtd_replaced_share, and ROC AUC of the
    logits over all real tokens (`auc`), over the replaceable ones (`auc_maskable`: without
    [CLS]/[SEP], which are never replaced and so give any model a head start that grows as
    sequences get shorter) and over the selected positions only (`auc_selected`: replaced
    against sampled-as-the-original). Collective over ranks when a process group runs.

    discriminator: (input_ids, attention_mask, token_type_ids) -> .logits [B, L] (an
    ElectraForPreTraining).
    corrupt_fn: for judge=self, the batch -> (corrupted_ids, rtd_labels) of the run's generator.
    """
    device = torch.device(device)
    sums = []
    where = {"auc": [], "auc_maskable": [], "auc_selected": []}  # name -> [(scores, labels)]
    for rows, chunk in eval_set.chunks(batch_size):
        chunk = chunk.to(device)
        if corrupt_fn is None:
            corrupted = eval_set.corrupted_ids[rows].to(device)  # [b, L]
            labels = eval_set.rtd_labels[rows].to(device)  # [b, L]
        else:
            corrupted, labels = corrupt_fn(chunk)
        logits = discriminator(input_ids=corrupted, attention_mask=chunk.attention_mask,
                               token_type_ids=chunk.token_type_ids).logits.float()  # [b, L]
        counted = chunk.attention_mask * eval_set.keep[rows].to(device)[:, None]  # [b, L]
        _, counts = rtd_loss(logits, labels, counted)
        sums.append(counts)
        kept = eval_set.keep[rows].to(device)[:, None]  # [b, 1]
        for name, tokens in (("auc", counted.bool()),
                             ("auc_maskable", eval_set.maskable[rows].to(device) & kept),
                             ("auc_selected", _selected(chunk))):  # each [b, L] bool
            where[name].append((logits[tokens].cpu(), labels[tokens].cpu()))
    metrics = reduce_metrics(sums)
    for name, parts in where.items():
        metrics[name] = binary_auc(gather_1d(torch.cat([p[0] for p in parts])),
                                   gather_1d(torch.cat([p[1] for p in parts])))
    return metrics


@torch.no_grad()
def score_masked_lm(model: nn.Module, eval_set: EvalSet, *, device: torch.device | str,
                    batch_size: int) -> dict[str, float]:
    """A masked LM on the set's masks: mlm_loss and mlm_accuracy over the used slots."""
    device = torch.device(device)
    sums = []
    for _, chunk in eval_set.chunks(batch_size):
        chunk = chunk.to(device)
        logits = mlm_head.masked_logits(model, chunk.masked_ids, chunk.attention_mask,
                                   chunk.positions, chunk.token_type_ids)  # [b, K, V]
        sums.append(mlm_loss(logits, chunk.labels, chunk.weights)[1])
    return reduce_metrics(sums)


def _selected(batch: MaskedBatch) -> torch.Tensor:
    """[B, L] bool: the positions of the used slots. (Unused slots point at position 0, [CLS],
    which is never selected, so their False cannot overwrite a used slot's True.)"""
    selected = torch.zeros_like(batch.attention_mask, dtype=torch.bool)
    return selected.scatter_(1, batch.positions, batch.weights > 0)


# --------------------------------------------------------------------------------------------
# The record in a run directory


def write_record(run_dir: str | Path, eval_set: EvalSet) -> None:
    path = Path(run_dir) / EVAL_SET_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(eval_set.record(), indent=2) + "\n")
    tmp.replace(path)


def read_record(run_dir: str | Path) -> Mapping | None:
    """RUN_DIR/eval_set.json, or None for a run that never evaluated (or predates the file)."""
    path = Path(run_dir) / EVAL_SET_FILE
    return json.loads(path.read_text()) if path.is_file() else None
