"""GLUE fine-tuning with the ELECTRA recipe, several seeds, median reported.

    model folder (e.g. export's OUTPUT/discriminator) -> AutoModelForSequenceClassification
    GLUE TSVs or the hub's nyu-mll/glue (glue.py) -> tokenized once
        -> for each seed: train, evaluate on dev -> results.json

The recipe (Clark et al. 2020, Table 7): AdamW (beta 0.9/0.999, eps 1e-6), linear warmup over the
first 10% of the steps then linear decay to 0, batch 32, max length 128, 3 epochs (10 for RTE and
STS-B), and layer-wise learning-rate decay as ELECTRA's `_get_layer_lrs` (model/optimization.py):
depth L + 2 for the classifier head, i + 1 for encoder layer i (0-based, L layers), 0 for the
embeddings and their projection, and lr * decay^(L + 2 - depth), i.e. the head at the full rate,
the top layer at decay^2, the embeddings at decay^(L + 2). Sentence pairs are encoded as
[CLS] A [SEP] B [SEP] with token type 1 on B, the segment embedding pretraining trains. Weight
decay applies to matrices only, not to biases and LayerNorm. The score of a seed is the dev score
after the last epoch; seeds vary the head's initialization, dropout and the data order, and the
median over seeds is what gets reported.

A plain torch loop, one device: CPU for tiny models and tests, one GPU (bf16 autocast) for real
ones.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fast_electra_ds.downstream.glue import (HUB_DATASET, Examples, Task, compute_metrics,
                                             get_task, read_hub, read_split, task_dir)
from fast_electra_ds.errors import UserError


@dataclass
class FinetuneConfig:
    model: str
    """Folder of a HF model and its tokenizer (e.g. export's OUTPUT/discriminator)."""
    task: str
    """GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte."""
    data_dir: str | None = None
    """The task's GLUE folder (train.tsv and the dev file), or the GLUE root holding it; None: the
    hub dataset nyu-mll/glue, through datasets' cache."""
    seeds: tuple[int, ...] = (1, 2, 3)
    epochs: float | None = None
    """None: the task's ELECTRA default (glue.Task.epochs)."""
    lr: float = 1e-4
    """Peak learning rate (ELECTRA: 3e-4 Small, 1e-4 Base, 5e-5 Large)."""
    batch_size: int = 32
    max_seq_len: int = 128
    layer_decay: float = 0.8
    """Layer-wise LR decay (ELECTRA: 0.8 Small/Base, 0.9 Large)."""
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    output: str | None = None
    """Where results.json goes; None: MODEL/../glue/TASK."""
    device: str = "auto"


def finetune(cfg: FinetuneConfig, *, overwrite: bool = False, log=print) -> dict:
    """Fine-tune `cfg.model` on `cfg.task` once per seed; write and return the results."""
    task = get_task(cfg.task)
    _check(cfg)
    out = Path(cfg.output) if cfg.output else Path(cfg.model).resolve().parent / "glue" / task.name
    results_path = out / "results.json"
    if results_path.exists() and not overwrite:
        raise UserError(f"{results_path} already exists; pass --overwrite to replace it, or "
                        f"choose another --output")
    device = _device(cfg.device)
    if cfg.data_dir is None:
        log(f"{task.name}: reading {HUB_DATASET} ({task.name}) through datasets (no --data-dir)")
        train, dev = read_hub(task)
    else:
        folder = task_dir(cfg.data_dir, task)
        train, dev = read_split(folder, task, "train"), read_split(folder, task, "dev")
    for split, ex in (("train", train), ("dev", dev)):
        if ex.num_skipped:
            log(f"{task.name} {split}: skipped {ex.num_skipped} line(s) with too few columns")
    tokenizer = _tokenizer(cfg.model)
    train_enc = _encode(tokenizer, train, cfg.max_seq_len)
    dev_enc = _encode(tokenizer, dev, cfg.max_seq_len)
    epochs = cfg.epochs if cfg.epochs is not None else task.epochs
    log(f"{task.name}: {len(train_enc[0])} train / {len(dev_enc[0])} dev examples, "
        f"{epochs:g} epochs, "
        f"lr {cfg.lr:g}, layer decay {cfg.layer_decay:g}, batch {cfg.batch_size}, "
        f"seeds {list(cfg.seeds)}, device {device.type}")

    per_seed: dict[str, dict[str, float | None]] = {}
    for seed in cfg.seeds:
        start = time.perf_counter()
        metrics = _run_seed(cfg, task, tokenizer, train_enc, train.labels, dev_enc, dev.labels,
                            seed=seed, epochs=epochs, device=device)
        metrics["train_time_s"] = time.perf_counter() - start
        per_seed[str(seed)] = metrics
        log(f"seed {seed}: " + " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))

    median = {name: _median([m[name] for m in per_seed.values()]) for name in task.metrics}
    results = {
        "task": task.name, "model": str(Path(cfg.model).resolve()),
        "main_metric": task.metrics[0], "median": median, "per_seed": per_seed,
        "num_train": len(train_enc[0]), "num_dev": len(dev_enc[0]),
        "config": {**asdict(cfg), "epochs": epochs, "seeds": list(cfg.seeds),
                   "device": device.type},
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = results_path.with_name(f".{results_path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(results, indent=2, allow_nan=False, default=str) + "\n")
    os.replace(tmp, results_path)
    log(f"{task.name} median over {len(cfg.seeds)} seed(s): "
        + " ".join(f"{k}={_fmt(v)}" for k, v in median.items()) + f"  -> {results_path}")
    return results


def _check(cfg: FinetuneConfig) -> None:
    problems = []
    if not cfg.seeds:
        problems.append("--seeds is empty")
    if cfg.epochs is not None and cfg.epochs <= 0:
        problems.append(f"--epochs must be > 0, got {cfg.epochs}")
    if cfg.lr <= 0:
        problems.append(f"--lr must be > 0, got {cfg.lr}")
    if cfg.batch_size < 1:
        problems.append(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.max_seq_len < 8:
        problems.append(f"--max-seq-len must be >= 8, got {cfg.max_seq_len}")
    if not 0 < cfg.layer_decay <= 1:
        problems.append(f"--layer-decay must be in (0, 1], got {cfg.layer_decay}")
    if not Path(cfg.model).is_dir() or not (Path(cfg.model) / "config.json").is_file():
        problems.append(f"--model {cfg.model} is not a HF model folder (with config.json); "
                        f"export one with `fast-electra export --run RUN_DIR --output DIR` and "
                        f"pass DIR/discriminator")
    if problems:
        raise UserError("; ".join(problems))


def _device(want: str) -> torch.device:
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA GPU is visible; use --device cpu")
    return torch.device(want)


def _tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise UserError(f"--model {model_dir} holds no loadable tokenizer ({e}); `fast-electra "
                        f"export` writes the data's tokenizer next to the model") from None


Encoded = tuple[list[list[int]], list[list[int]]]  # input ids, token type ids per example


def _encode(tokenizer, examples: Examples, max_seq_len: int) -> Encoded:
    """Token ids and token types: a pair is [CLS] A [SEP] B [SEP], types 1 on B [SEP] (zeros
    where the tokenizer has no token types, as RoBERTa's)."""
    columns = list(zip(*examples.texts))  # one list per text column
    enc = tokenizer(*columns, truncation=True, max_length=max_seq_len)
    types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
    return enc["input_ids"], types


def _batches(encoded: Encoded, labels: np.ndarray, batch_size: int, pad_id: int,
             order: np.ndarray):
    """Padded batches in `order`: input_ids / attention_mask / token_type_ids [B, longest in
    batch], labels [B]."""
    ids, types = encoded
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        longest = max(len(ids[i]) for i in idx)
        input_ids = torch.full((len(idx), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), longest), dtype=torch.long)
        token_types = torch.zeros((len(idx), longest), dtype=torch.long)
        for row, i in enumerate(idx):
            input_ids[row, :len(ids[i])] = torch.tensor(ids[i])
            mask[row, :len(ids[i])] = 1
            token_types[row, :len(ids[i])] = torch.tensor(types[i])
        yield input_ids, mask, token_types, torch.from_numpy(labels[idx])


def layerwise_param_groups(model: torch.nn.Module, *, lr: float, layer_decay: float,
                           weight_decay: float) -> list[dict]:
    """AdamW groups with ELECTRA's layer-wise LR decay (`_get_layer_lrs`): with L encoder
    layers, depth 0 for the embeddings (names with "embeddings", the projection included),
    i + 1 for parameters in `...layer.<i>.`, L + 2 for the rest (the classifier head), and
    lr * decay^(L + 2 - depth). Biases and norms get no weight decay."""
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = re.search(r"\.layers?\.(\d+)\.", name)
        if layer:
            depth = int(layer.group(1)) + 1
        elif "embeddings" in name:
            depth = 0
        else:
            depth = num_layers + 2
        no_decay = name.endswith("bias") or "norm" in name.lower()
        key = (lr * layer_decay ** (num_layers + 2 - depth), 0.0 if no_decay else weight_decay)
        groups.setdefault(key, []).append(param)
    return [{"params": params, "lr": group_lr, "weight_decay": wd}
            for (group_lr, wd), params in sorted(groups.items(), key=lambda kv: -kv[0][0])]


def _segments(model: torch.nn.Module, token_type_ids: torch.Tensor) -> dict:
    """{"token_type_ids": ...} for a model with segment embeddings (not RoBERTa's single type,
    not DistilBERT's none)."""
    if getattr(model.config, "type_vocab_size", 0) < 2:
        return {}
    return {"token_type_ids": token_type_ids}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _run_seed(cfg: FinetuneConfig, task: Task, tokenizer, train_enc, train_labels, dev_enc,
              dev_labels, *, seed: int, epochs: float, device: torch.device) -> dict[str, float]:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    _seed_everything(seed)
    num_labels = 1 if task.labels is None else len(task.labels)
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" notice, every seed
    hf_logging.disable_progress_bar()
    model = AutoModelForSequenceClassification.from_pretrained(
        cfg.model, num_labels=num_labels,
        problem_type="regression" if task.labels is None else "single_label_classification")
    model.to(device)
    optimizer = torch.optim.AdamW(
        layerwise_param_groups(model, lr=cfg.lr, layer_decay=cfg.layer_decay,
                               weight_decay=cfg.weight_decay),
        betas=(0.9, 0.999), eps=1e-6)
    steps_per_epoch = math.ceil(len(train_enc[0]) / cfg.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * epochs))
    warmup_steps = math.ceil(cfg.warmup_fraction * total_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (step + 1) / warmup_steps if step < warmup_steps
        else max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps)))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rng = np.random.default_rng(seed)

    model.train()
    step = 0
    while step < total_steps:
        order = rng.permutation(len(train_enc[0]))
        for input_ids, mask, types, labels in _batches(train_enc, train_labels, cfg.batch_size,
                                                       pad_id, order):
            with autocast:
                loss = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                             **_segments(model, types.to(device)),
                             labels=labels.to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step == total_steps:
                break

    model.eval()
    preds = []
    with torch.no_grad(), autocast:
        for input_ids, mask, types, _ in _batches(dev_enc, dev_labels, 2 * cfg.batch_size,
                                                  pad_id, np.arange(len(dev_enc[0]))):
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                           **_segments(model, types.to(device))).logits
            logits = logits.float().cpu()  # [B, num_labels]
            preds.append(logits[:, 0] if task.labels is None else logits.argmax(-1))
    metrics = compute_metrics(task, torch.cat(preds).numpy(), dev_labels)
    # a constant prediction has no correlation (NaN): null in the JSON
    return {k: None if math.isnan(v) else v for k, v in metrics.items()}


def _median(values: list[float | None]) -> float | None:
    """Median over the seeds whose metric is defined; None when none is."""
    defined = [v for v in values if v is not None]
    return float(np.median(defined)) if defined else None


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
