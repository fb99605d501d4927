"""DeepSpeed checkpoints with a commit protocol, and resume.

DeepSpeed's own `latest` file is written by rank 0 with a plain open() before the final barrier,
so a crash there leaves it naming a half-written tag; and `load_checkpoint` on a folder without
`latest` only warns and returns nothing. So:

  save:   every rank writes its shards (save_latest=False) -> barrier -> rank 0 writes
          <tag>/COMMITTED.json (step, consumed samples, config hash, versions, world size, ZeRO
          stage), then `latest` by temp file + fsync + rename -> barrier -> rank 0 deletes the
          oldest committed checkpoints beyond keep_last (only ever after a newer commit).
  load:   rank 0 picks the tag `latest` names if it is committed, else the newest committed tag,
          and broadcasts it; every rank loads it. Asking for a checkpoint that is not there is an
          error, never a silent fresh start.

DeepSpeed does not save RNG states: each rank's python/numpy/torch(/cuda) states are gathered
into the client_state so a resumed run continues bit for bit (dropout draws included).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from fast_electra_ds.config import RunConfig
from fast_electra_ds.errors import UserError

MARKER = "COMMITTED.json"
LATEST = "latest"


@dataclass
class TrainState:
    """What the loop needs beyond the engine to continue exactly."""

    step: int = 0
    consumed_samples: int = 0
    wandb_id: str | None = None


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


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _tag(step: int) -> str:
    return f"step{step:09d}"


def committed_tags(ckpt_dir: Path) -> list[str]:
    """Committed checkpoint tags, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p.parent.name for p in ckpt_dir.glob(f"step*/{MARKER}"))


def save(engine, cfg: RunConfig, state: TrainState, *, zero_stage: int) -> Path:
    """Save and commit a checkpoint of `engine` at `state.step`. Collective: all ranks call it."""
    ckpt_dir = Path(cfg.run_dir) / "checkpoints"
    tag = _tag(state.step)
    rngs: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(rngs, rng_state())
    client_state = {"step": state.step, "consumed_samples": state.consumed_samples,
                    "wandb_id": state.wandb_id, "rng_states": rngs,
                    "world_size": dist.get_world_size(),
                    # lets `ds_to_universal` convert this checkpoint for another world size
                    "universal_checkpoint_info": {}}
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    dist.barrier()
    if dist.get_rank() == 0:
        import deepspeed

        marker = {"tag": tag, "step": state.step, "consumed_samples": state.consumed_samples,
                  "config_hash": config_hash(cfg), "world_size": dist.get_world_size(),
                  "zero_stage": zero_stage, "mode": cfg.mode,
                  "versions": {"torch": torch.__version__, "deepspeed": deepspeed.__version__}}
        _atomic_write(ckpt_dir / tag / MARKER, json.dumps(marker, indent=2) + "\n")
        _atomic_write(ckpt_dir / LATEST, tag)
        tags = committed_tags(ckpt_dir)
        for old in tags[:-cfg.checkpoint.keep_last]:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)
    dist.barrier()
    return ckpt_dir / tag


def _choose_tag(ckpt_dir: Path) -> str | None:
    """The tag `latest` names if it is committed, else the newest committed one, else None."""
    latest = ckpt_dir / LATEST
    if latest.is_file():
        tag = latest.read_text().strip()
        if (ckpt_dir / tag / MARKER).is_file():
            return tag
    tags = committed_tags(ckpt_dir)
    return tags[-1] if tags else None


def resume(engine, cfg: RunConfig, log=print) -> TrainState:
    """Restore engine, optimizer, LR schedule, step, consumed samples and RNG per
    `cfg.checkpoint.resume`. Collective. Returns a fresh TrainState when starting from scratch."""
    how = cfg.checkpoint.resume
    if how == "none":
        log("resume=none: starting fresh")
        return TrainState()
    explicit = how != "auto"
    ckpt_dir = Path(how) if explicit else Path(cfg.run_dir) / "checkpoints"
    if explicit and (ckpt_dir / MARKER).is_file():  # a tag folder itself was named
        ckpt_dir, chosen = ckpt_dir.parent, ckpt_dir.name
    else:
        chosen = None
    pick = [chosen or (_choose_tag(ckpt_dir) if dist.get_rank() == 0 else None)]
    dist.broadcast_object_list(pick, src=0)
    tag = pick[0]
    if tag is None:
        if explicit:
            raise UserError(f"resume={how}: no committed checkpoint there (a folder with "
                            f"step*/{MARKER}); point resume at a run's checkpoints folder, or "
                            f"use resume=auto / resume=none")
        log(f"resume=auto: no committed checkpoint in {ckpt_dir}, starting fresh")
        return TrainState()
    marker = json.loads((ckpt_dir / tag / MARKER).read_text())
    if marker.get("mode") != cfg.mode:
        raise UserError(f"checkpoint {ckpt_dir / tag} was written by mode={marker.get('mode')}, "
                        f"this run is mode={cfg.mode}; use another run_dir or resume=none")
    path, client = engine.load_checkpoint(str(ckpt_dir), tag=tag, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if path is None or client is None:
        raise UserError(f"DeepSpeed could not load checkpoint {ckpt_dir / tag}; its files may be "
                        f"incomplete. Delete that folder to fall back to the previous one.")
    rngs = client["rng_states"]
    if len(rngs) == dist.get_world_size():
        set_rng_state(rngs[dist.get_rank()])
    else:
        log(f"checkpoint was written by {len(rngs)} ranks, this run has "
            f"{dist.get_world_size()}: RNG states not restored (dropout draws will differ)")
    log(f"resumed from {ckpt_dir / tag} (step {client['step']}, "
        f"{client['consumed_samples']} samples consumed)")
    return TrainState(step=client["step"], consumed_samples=client["consumed_samples"],
                      wandb_id=client.get("wandb_id"))
