"""DeepSpeed checkpoints with a commit protocol, failed saves, and the RNG states they carry.

DeepSpeed's own `latest` file is written by rank 0 with a plain open() before the final barrier,
so a crash there leaves it naming a half-written tag. So:

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

DeepSpeed does not save RNG states: each rank's python/numpy/torch(/cuda) states are gathered
into the client_state, so a resumed run continues bit for bit (dropout draws included).

Loading (which checkpoint, is it intact and does it fit this run, another world size) is
resume.py's.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from fast_electra_ds.config import RunConfig
from fast_electra_ds.errors import UserError

MARKER = "COMMITTED.json"
LATEST = "latest"
UNIVERSAL = "universal"


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
