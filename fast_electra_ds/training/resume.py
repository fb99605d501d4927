"""Resuming a run: which checkpoint to load, checked before the engine exists, then loaded.

DeepSpeed's `load_checkpoint` on a folder without `latest` only warns and returns nothing, and
loads whatever fits. So before the engine exists (`plan_resume`), rank 0 picks the tag `latest`
names (checkpoint.py writes it only after the commit), checks it is committed, its files intact
(sizes as recorded), compatible with this run and trained on this data (each dataset's manifest
fingerprint and the blend weights; a change is an error unless checkpoint.allow_data_change), and
broadcasts the plan; every rank then loads it (`resume`), RNG states included. Asking for a
checkpoint that is not there is an error, never a silent fresh start.

A different world size (same global batch) needs DeepSpeed's universal checkpoint format for
ZeRO stages >= 1: rank 0 converts with `deepspeed.checkpoint.ds_to_universal` into
checkpoints/universal/<tag> and the engine loads that with `checkpoint.load_universal`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch.distributed as dist

from fast_electra_ds.config import RunConfig, flatten
from fast_electra_ds.errors import UserError
from fast_electra_ds.method.modes import mode_class
from fast_electra_ds.training.checkpoint import (LATEST, MARKER, UNIVERSAL, TrainState,
                                                 checkpoint_dir, committed_tags, read_marker,
                                                 set_rng_state)

# Run-config keys whose change makes a checkpoint unusable, and keys whose change is allowed
# but worth a warning. Shapes decide whether the tensors fit at all.
_MUST_MATCH = ("mode", "model", "data.seq_len")
_GENERATOR_SHAPE = ("generator.num_layers", "generator.hidden_size", "generator.num_heads",
                    "generator.intermediate_size")
_WARN_IF_CHANGED = ("optim", "train.global_batch_size", "train.steps", "train.budget_minutes",
                    "train.budget_flops", "temperature",
                    "masking", "seed")


@dataclass
class ResumePlan:
    """Which checkpoint every rank loads, decided by rank 0 before the engine is built."""

    load_dir: str
    tag: str
    universal: bool  # load through DeepSpeed's universal format (another world size)
    saved_world_size: int


def _pick(how: str, run_dir: Path) -> tuple[Path, str] | None:
    """(checkpoints folder, tag) to resume from, or None to start fresh. Raises UserError for
    an explicit `resume=PATH` with nothing loadable, or a broken `latest`."""
    explicit = how != "auto"
    where = Path(how) if explicit else run_dir / "checkpoints"
    if explicit and (where / MARKER).is_file():  # a tag folder itself was named
        return where.parent, where.name
    latest = where / LATEST
    if latest.is_file():
        tag = latest.read_text().strip()
        if not (where / tag).is_dir():
            raise UserError(f"{latest} names checkpoint {tag!r}, which does not exist: fix or "
                            f"delete {latest} (the newest committed one is then used), or start "
                            f"with checkpoint.resume=none")
        if not (where / tag / MARKER).is_file():
            raise UserError(f"{latest} names {where / tag}, which was never committed (no "
                            f"{MARKER}; its save was interrupted): delete {latest} to resume from "
                            f"the newest committed checkpoint")
        return where, tag
    tags = committed_tags(where)
    if tags:
        return where, tags[-1]
    if explicit:
        raise UserError(f"checkpoint.resume={how}: no committed checkpoint there (a folder with "
                        f"step*/{MARKER}); point it at a run's checkpoints folder or one of its "
                        f"step folders, or use resume=auto / resume=none")
    return None


def check_compatible(marker: dict[str, Any], cfg: RunConfig, *, vocab_size: int,
                     where: Path, log: Callable[[str], None]) -> None:
    """Errors for what makes the checkpoint unusable (shapes, vocabulary, seq_len, mode);
    warnings for what merely changes the training from here on (LR, batch, schedule)."""
    saved, now = flatten(marker["config"]), flatten(cfg.to_dict())
    # a generator trained in the engine has its shape in the checkpoint; a frozen one does not
    must = list(_MUST_MATCH) + (list(_GENERATOR_SHAPE) if mode_class(cfg.mode).trains_generator
                                else [])
    errors = [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}"
              for k in now if any(k == m or k.startswith(m + ".") for m in must)
              and saved.get(k) != now[k]]
    if marker.get("vocab_size") is not None and marker["vocab_size"] != vocab_size:
        errors.append(f"vocabulary size: checkpoint {marker['vocab_size']}, data now "
                      f"{vocab_size}")
    if errors:
        raise UserError(f"checkpoint {where} does not fit this run:\n  - " + "\n  - ".join(errors)
                        + "\nuse the config it was trained with, another run_dir, or "
                          "checkpoint.resume=none")
    changed = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in now
               if any(k == w or k.startswith(w + ".") for w in _WARN_IF_CHANGED)
               and saved.get(k) != now[k]]
    if changed:
        log("warning: resuming with changed settings (training continues with the new ones): "
            + "; ".join(changed))


def data_record(paths: list[str], weights: list[float] | None) -> dict[str, Any]:
    """What a checkpoint records of the data it was trained on: per dataset folder its manifest's
    fingerprint (sha256 of manifest.json, which prepare-data writes anew on every run) and what a
    message about a change would name; and the blend weights."""
    from fast_electra_ds.data.prepare import MANIFEST

    datasets = []
    for path in paths:
        raw = (Path(path) / MANIFEST).read_bytes()
        manifest = json.loads(raw)
        datasets.append({
            "path": str(Path(path).resolve()),
            "fingerprint": hashlib.sha256(raw).hexdigest()[:16],
            "created_at": manifest.get("created_at"),
            "tokenizer_fingerprint": manifest.get("tokenizer_fingerprint"),
            "num_sequences": {split: stats.get("num_sequences")
                              for split, stats in manifest.get("splits", {}).items()},
        })
    return {"datasets": datasets, "weights": list(weights) if weights else None}


def data_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the data a checkpoint was trained on and this run's (data_record)."""
    changes = []
    if len(saved["datasets"]) != len(now["datasets"]):
        changes.append(f"{len(saved['datasets'])} dataset(s) then, {len(now['datasets'])} now")
    for i, (a, b) in enumerate(zip(saved["datasets"], now["datasets"])):
        if a["fingerprint"] == b["fingerprint"]:
            continue
        what = [f"{key} {a.get(key)!r} -> {b.get(key)!r}"
                for key in ("tokenizer_fingerprint", "num_sequences", "created_at")
                if a.get(key) != b.get(key)] or ["its manifest.json changed"]
        where = a["path"] if a["path"] == b["path"] else f"{a['path']} -> {b['path']}"
        changes.append(f"data.paths[{i}] ({where}): {'; '.join(what)}")
    if saved.get("weights") != now.get("weights"):
        changes.append(f"data.weights {saved.get('weights')} -> {now.get('weights')}")
    return changes


def check_data(marker: dict[str, Any], cfg: RunConfig, data: dict[str, Any],
               log: Callable[[str], None]) -> None:
    """An error if the checkpoint was trained on other data, unless checkpoint.allow_data_change
    (then a warning). The data order continues by consumed-sample count, which on other data
    means other batches."""
    if "data" not in marker:
        log("warning: this checkpoint does not record its data (written by an older version): "
            "not checked against data.paths")
        return
    changes = data_changes(marker["data"], data)
    if not changes:
        return
    listed = "\n  - " + "\n  - ".join(changes)
    if cfg.checkpoint.allow_data_change:
        log("warning: resuming on other data than the checkpoint was trained on "
            f"(checkpoint.allow_data_change=true):{listed}")
        return
    raise UserError(f"the checkpoint was trained on other data than data.paths now holds:{listed}"
                    "\nprepare-data writes a new manifest each time it runs, so re-prepared data "
                    "counts as changed. Point data.paths at the data the run started with, or set "
                    "checkpoint.allow_data_change=true to continue on this data (the sample "
                    "order then continues by count, over other sequences)")


def check_files(ckpt_dir: Path, tag: str, marker: dict[str, Any]) -> None:
    """Every file the commit recorded is there with its recorded size (a copy cut short by a
    full disk or an interrupted transfer is caught here, naming the file)."""
    for name, size in marker.get("files", {}).items():
        path = ckpt_dir / tag / name
        if not path.is_file():
            raise UserError(f"checkpoint file {path} is missing; restore it, or delete "
                            f"{ckpt_dir / tag} to fall back to the previous checkpoint")
        if path.stat().st_size != size:
            raise UserError(f"checkpoint file {path} is {path.stat().st_size} bytes but was "
                            f"committed with {size} (truncated or corrupted); restore it, or "
                            f"delete {ckpt_dir / tag} to fall back to the previous checkpoint")


def plan_resume(cfg: RunConfig, *, world_size: int, vocab_size: int, data: dict[str, Any],
                log: Callable[[str], None]) -> ResumePlan | None:
    """Decide, on rank 0, what to resume from; validate it; convert it to DeepSpeed's universal
    format when the world size changed under ZeRO >= 1. Collective; None = start fresh."""
    if cfg.checkpoint.resume == "none":
        log("checkpoint.resume=none: starting fresh")
        return None
    result: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            result[0] = _plan_on_rank0(cfg, world_size, vocab_size, data, log)
        except UserError as e:  # every rank must learn of it, or the others hang
            result[0] = e
    dist.broadcast_object_list(result, src=0)
    if isinstance(result[0], UserError):
        raise result[0]
    if result[0] is None:
        log(f"checkpoint.resume=auto: no committed checkpoint in {checkpoint_dir(cfg)}, "
            f"starting fresh")
    return result[0]


def _plan_on_rank0(cfg: RunConfig, world_size: int, vocab_size: int, data: dict[str, Any],
                   log: Callable[[str], None]) -> ResumePlan | None:
    picked = _pick(cfg.checkpoint.resume, Path(cfg.run_dir))
    if picked is None:
        return None
    ckpt_dir, tag = picked
    marker = read_marker(ckpt_dir, tag)
    check_files(ckpt_dir, tag, marker)
    check_compatible(marker, cfg, vocab_size=vocab_size, where=ckpt_dir / tag, log=log)
    check_data(marker, cfg, data, log)
    saved_world = marker["world_size"]
    universal = saved_world != world_size and marker["zero_stage"] >= 1
    if marker["config"]["train"]["global_batch_size"] != cfg.train.global_batch_size \
            and saved_world != world_size:
        log("warning: the world size and the global batch size both changed; the data order "
            "continues from the consumed-sample count, but the batches differ from the "
            "original run's")
    load_dir = ckpt_dir
    if universal:
        load_dir = ckpt_dir / UNIVERSAL
        if not (load_dir / tag).is_dir():
            log(f"checkpoint {ckpt_dir / tag} was written by {saved_world} ranks, this run has "
                f"{world_size}: converting it to DeepSpeed's universal format in "
                f"{load_dir / tag}")
            convert_to_universal(ckpt_dir / tag, load_dir / tag)
    return ResumePlan(load_dir=str(load_dir), tag=tag, universal=universal,
                      saved_world_size=saved_world)


def convert_to_universal(src: Path, dst: Path) -> None:
    """`python -m deepspeed.checkpoint.ds_to_universal`, into a temp folder renamed on success."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
           str(src), "--output_folder", str(tmp), "--num_extract_workers", "1",
           "--num_merge_workers", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"converting {src} to a universal checkpoint failed; run it by hand to "
                        f"see why:\n  {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    os.replace(tmp, dst)


def resume(engine, plan: ResumePlan | None, log: Callable[[str], None]) -> TrainState:
    """Load the planned checkpoint into `engine` on every rank; restore step, consumed samples,
    wandb id and (same world size only) this rank's RNG states. Collective."""
    if plan is None:
        return TrainState()
    path, client = engine.load_checkpoint(plan.load_dir, tag=plan.tag,
                                          load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if path is None or client is None:
        raise UserError(f"DeepSpeed could not load checkpoint {plan.load_dir}/{plan.tag}; "
                        f"delete that folder to fall back to the previous one")
    rngs = client["rng_states"]
    if len(rngs) == dist.get_world_size():
        set_rng_state(rngs[dist.get_rank()])
    else:
        log(f"checkpoint was written by {len(rngs)} ranks, this run has "
            f"{dist.get_world_size()}: data order continues exactly, RNG states (dropout) "
            f"start anew")
    log(f"resumed from {plan.load_dir}/{plan.tag} (step {client['step']}, "
        f"{client['consumed_samples']} samples consumed)")
    return TrainState(step=client["step"], consumed_samples=client["consumed_samples"],
                      wandb_id=client.get("wandb_id"),
                      train_seconds=client.get("train_seconds", 0.0),
                      plateau=client.get("plateau", {}))
