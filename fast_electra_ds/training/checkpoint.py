"""DeepSpeed checkpoints with a commit protocol, validated resume, and world-size changes.

DeepSpeed's own `latest` file is written by rank 0 with a plain open() before the final barrier,
so a crash there leaves it naming a half-written tag; and `load_checkpoint` on a folder without
`latest` only warns and returns nothing. So:

  save:   every rank writes its shards (save_latest=False) -> barrier -> rank 0 writes
          <tag>/COMMITTED.json (step, consumed samples, config, versions, world size, ZeRO stage,
          every file's size), then `latest`, each by temp file + fsync + rename -> barrier ->
          rank 0 deletes the oldest committed checkpoints beyond keep_last (only ever after a
          newer commit, so there is always one to fall back to).
          A write that fails on any rank (no space, quota, I/O error) is recorded by that rank
          instead of raised inside DeepSpeed's save, whose collectives then still match on every
          rank; the ranks compare notes, rank 0 removes the partial tag, and every rank raises
          CheckpointSaveError naming the file and the cause. `latest` still names the previous
          committed checkpoint, which is what loads.
  load:   before the engine exists (`plan_resume`), rank 0 picks the tag `latest` names, checks
          it is committed, its files intact (sizes as recorded), compatible with this run and
          trained on this data (each dataset's manifest fingerprint and the blend weights; a
          change is an error unless checkpoint.allow_data_change), and broadcasts the plan;
          every rank loads it (`resume`). Asking for a checkpoint that is not there is an
          error, never a silent fresh start.

DeepSpeed does not save RNG states: each rank's python/numpy/torch(/cuda) states are gathered
into the client_state, so a resumed run continues bit for bit (dropout draws included).

A different world size (same global batch) needs DeepSpeed's universal checkpoint format for
ZeRO stages >= 1: rank 0 converts with `deepspeed.checkpoint.ds_to_universal` into
checkpoints/universal/<tag> and the engine loads that with `checkpoint.load_universal`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from fast_electra_ds.config import RunConfig, flatten
from fast_electra_ds.errors import UserError
from fast_electra_ds.method.modes import mode_class

MARKER = "COMMITTED.json"
LATEST = "latest"
UNIVERSAL = "universal"

# Run-config keys whose change makes a checkpoint unusable, and keys whose change is allowed
# but worth a warning. Shapes decide whether the tensors fit at all.
_MUST_MATCH = ("mode", "model", "data.seq_len")
_GENERATOR_SHAPE = ("generator.num_layers", "generator.hidden_size", "generator.num_heads",
                    "generator.intermediate_size")
_WARN_IF_CHANGED = ("optim", "train.global_batch_size", "train.steps", "train.budget_minutes",
                    "train.budget_flops", "temperature",
                    "masking", "seed")


@dataclass
class TrainState:
    """What the loop needs beyond the engine to continue exactly."""

    step: int = 0
    consumed_samples: int = 0
    wandb_id: str | None = None
    train_seconds: float = 0.0  # wall-clock spent in training steps (not evaluation, saving)
    plateau: dict = field(default_factory=dict)  # the PlateauWatch's state (plateau.py)


class CheckpointSaveError(UserError):
    """A checkpoint could not be written; the previous committed one is what loads."""


@dataclass
class ResumePlan:
    """Which checkpoint every rank loads, decided by rank 0 before the engine is built."""

    load_dir: str
    tag: str
    universal: bool  # load through DeepSpeed's universal format (another world size)
    saved_world_size: int


def config_hash(cfg: RunConfig) -> str:
    d = cfg.to_dict()
    d.pop("run_dir")
    d.pop("checkpoint")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str) -> None:
    """Replace `path` by `text` all at once: temp file, fsync, rename, fsync of the folder."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _tag(step: int) -> str:
    return f"step{step:09d}"


def checkpoint_dir(cfg: RunConfig) -> Path:
    return Path(cfg.run_dir) / "checkpoints"


def committed_tags(ckpt_dir: Path) -> list[str]:
    """Committed checkpoint tags, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p.parent.name for p in ckpt_dir.glob(f"step*/{MARKER}"))


def read_marker(ckpt_dir: Path, tag: str) -> dict[str, Any]:
    return json.loads((ckpt_dir / tag / MARKER).read_text())


# --------------------------------------------------------------------------------------------
# Save


def save(engine, cfg: RunConfig, state: TrainState, *, zero_stage: int,
         extra_marker: dict[str, Any] | None = None) -> Path:
    """Save and commit a checkpoint of `engine` at `state.step`. Collective: all ranks call it.
    Raises CheckpointSaveError on every rank if a write failed on any (module doc)."""
    ckpt_dir = checkpoint_dir(cfg)
    tag = _tag(state.step)
    rngs: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(rngs, rng_state())
    client_state = {"step": state.step, "consumed_samples": state.consumed_samples,
                    "wandb_id": state.wandb_id, "train_seconds": state.train_seconds,
                    "plateau": state.plateau, "rng_states": rngs,
                    "world_size": dist.get_world_size(),
                    # lets `ds_to_universal` convert this checkpoint for another world size
                    "universal_checkpoint_info": {}}
    writer = _RecordingWriter.around(engine)
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    # DeepSpeed's save ends in a barrier: every rank's shards are on disk (fsynced by
    # torch.save's close), or its writer recorded why not
    failures: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(failures, writer.take_error())
    outcome: list[str | None] = [None]
    if dist.get_rank() == 0:
        failure = next(((rank, e) for rank, e in enumerate(failures) if e), None)
        if failure is None:
            try:
                _commit(engine, cfg, state, ckpt_dir, tag, zero_stage, extra_marker)
            except OSError as e:
                failure = (0, str(e))
        if failure is not None:
            outcome[0] = _abandon(ckpt_dir, tag, *failure)
    dist.broadcast_object_list(outcome, src=0)  # and a barrier: the commit is done
    if outcome[0] is not None:
        raise CheckpointSaveError(outcome[0])
    return ckpt_dir / tag


def _commit(engine, cfg: RunConfig, state: TrainState, ckpt_dir: Path, tag: str,
            zero_stage: int, extra_marker: dict[str, Any] | None) -> None:
    """Rank 0: fsync the shards, write COMMITTED.json, point `latest` at it, prune old tags."""
    import deepspeed

    tag_dir = ckpt_dir / tag
    for f in tag_dir.iterdir():  # torch.save closes but does not fsync
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tag_dir)
    marker = {"tag": tag, "step": state.step, "consumed_samples": state.consumed_samples,
              "config_hash": config_hash(cfg), "config": cfg.to_dict(),
              "world_size": dist.get_world_size(), "zero_stage": zero_stage,
              "versions": {"torch": torch.__version__, "deepspeed": deepspeed.__version__},
              "files": {f.name: f.stat().st_size for f in sorted(tag_dir.iterdir())},
              **(extra_marker or {})}
    atomic_write(tag_dir / MARKER, json.dumps(marker, indent=2) + "\n")
    atomic_write(ckpt_dir / LATEST, tag)
    for old in committed_tags(ckpt_dir)[:-cfg.checkpoint.keep_last]:
        shutil.rmtree(ckpt_dir / old, ignore_errors=True)
        shutil.rmtree(ckpt_dir / UNIVERSAL / old, ignore_errors=True)


def _abandon(ckpt_dir: Path, tag: str, rank: int, error: str) -> str:
    """Rank 0, after a failed save: remove the partial tag (a tag without COMMITTED.json never
    loads anyway, but it holds disk space) and say what happened and what loads now."""
    tag_dir = ckpt_dir / tag
    shutil.rmtree(tag_dir, ignore_errors=True)
    (ckpt_dir / f".{LATEST}.tmp").unlink(missing_ok=True)
    removed = ("its partial files were removed" if not tag_dir.exists() else
               f"its partial files in {tag_dir} could not all be removed (delete them; they are "
               f"never loaded, having no {MARKER})")
    latest = ckpt_dir / LATEST
    previous = latest.read_text().strip() if latest.is_file() else None
    loads = (f"the previous committed checkpoint {ckpt_dir / previous} is the one "
             f"checkpoint.resume=auto loads" if previous else
             "there is no earlier committed checkpoint: a new run would start fresh")
    return (f"saving checkpoint {tag_dir} failed on rank {rank}: {error}. The run stops here; "
            f"{removed}; {loads}. Free space or fix the filesystem, then resume")


class _RecordingWriter:
    """Wraps DeepSpeed's checkpoint engine so that a failed write is recorded, not raised: a rank
    raising inside `save_checkpoint` would leave the others waiting in its collectives. After a
    failure this rank writes nothing more of that checkpoint."""

    def __init__(self, inner):
        self.inner = inner
        self.error: str | None = None

    @classmethod
    def around(cls, engine) -> _RecordingWriter:
        if not isinstance(engine.checkpoint_engine, cls):
            engine.checkpoint_engine = cls(engine.checkpoint_engine)
        return engine.checkpoint_engine

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def save(self, state_dict, path: str):
        if self.error is not None:
            return None
        try:
            return self.inner.save(state_dict, path)
        except OSError as e:  # ENOSPC, EDQUOT, EIO, EFBIG...
            self.error = f"writing {path}: {e}"
            return None

    def take_error(self) -> str | None:
        error, self.error = self.error, None
        return error


# --------------------------------------------------------------------------------------------
# Resume


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
