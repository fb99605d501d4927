"""A run's assembly: from a config to a `Run` ready to step (the loop, loop.py, steps it).

The order is part of the result: model initialization draws from torch's global RNG, so what is
built when fixes the initial weights, and a refactor must keep it (tests/test_golden.py).

  1. the checks that need neither run_dir nor a model, before run_dir is touched: the config and
     its mode, the data (manifests, seq_len, sizes), the DeepSpeed JSON, the released
     checkpoints to start from, the kernels and the attention implementation
  2. run_dir's lock (run_lock.py), so a second run on the same run_dir stops before any compute;
     then the resume plan (the checkpoint checked against this run and its data, converted for
     another world size), the models (the frozen generator checked against the data), the
     evaluation set (valid data, the judge), the engine with the checkpoint loaded. A run refused
     here has written nothing but the lock file, which its release takes back (with run_dir,
     where the lock created it)
  3. the first writes (eval_set.json, config.yaml, ds_config.json, the logger's files), the
     schedule's calibration, the data loaders
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fast_electra_ds.config import SELF_JUDGE, RunConfig
from fast_electra_ds.data.loader import DataInfo, build_loader, open_datasets
from fast_electra_ds.data.masking import MaskedBatch, Masker
from fast_electra_ds.data.tokenizer import load_tokenizer
from fast_electra_ds.errors import UserError
from fast_electra_ds.method.kernel_switch import resolve_kernels
from fast_electra_ds.method.models import resolve_attention
from fast_electra_ds.method.modes import Mode, mode_class, validate_config
from fast_electra_ds.method.pretrained import init_from_shapes
from fast_electra_ds.training import evaluation, resume
from fast_electra_ds.training.checkpoint import TrainState
from fast_electra_ds.training.ds_config import (load_ds_config, precision, resolve_ds_config,
                                                write_resolved, zero_stage)
from fast_electra_ds.training.engine import (DistEnv, build_engine, export_generator,
                                             init_distributed)
from fast_electra_ds.training.evaluation import EvalSet
from fast_electra_ds.training.logger import MetricsLogger
from fast_electra_ds.training.plateau import PlateauWatch
from fast_electra_ds.training.progress import Progress
from fast_electra_ds.training.run_lock import RunDirLock


@dataclass
class Run:
    """A run ready to step: what the loop reads."""

    cfg: RunConfig
    env: DistEnv
    mode: Mode  # what stays outside the engine (frozen generator), the schedule, the inputs
    engine: Any  # the DeepSpeed engine (engine.module is the mode's objective module)
    state: TrainState  # step 0, or where the resumed checkpoint left off
    progress: Progress  # how far the run is: the LR decay, the temperature and the end follow it
    logger: MetricsLogger
    train_batches: Iterator[MaskedBatch]  # this rank's micro-batches from consumed_samples on
    eval_set: EvalSet | None  # None with eval.every=0
    watch: PlateauWatch  # says when the discriminator sits on the RTD plateau
    trainable_params: int  # counted before the engine (ZeRO-3 then shards them)
    step_flops: int  # one optimizer step's FLOPs (flops.py): the curves' FLOPs axis
    zero_stage: int
    marker: dict[str, Any]  # what each checkpoint records beyond the state: vocab, data
    data_info: DataInfo

    def finish(self) -> None:
        """What the mode leaves behind when training ends: mode=mlm writes RUN_DIR/generator,
        the masked LM a fast-electra run takes as its frozen generator. Collective."""
        if self.mode.exports_generator:
            out = Path(self.cfg.run_dir) / "generator"
            export_generator(self.engine.module.generator, out, tokenizer=self.data_info.tokenizer,
                             is_main=self.env.is_main)
            self.logger.info(f"generator saved to {out} (use it as generator.path)")


@contextlib.contextmanager
def assemble(cfg: RunConfig) -> Iterator[Run]:
    """The run `cfg` describes, built in the module doc's order; run_dir's lock is held until the
    with-block ends."""
    validate_config(cfg)
    env = init_distributed(cfg, timeout_minutes=cfg.train.dist_timeout_minutes)
    log = _rank0_print(env)

    # ---- data: token ids written by prepare-data; every check before any compute --------------
    _, data_info = open_datasets(cfg.data.paths, "train", seq_len=cfg.data.seq_len)
    ds = resolve_ds_config(load_ds_config(cfg.ds_config), cfg, world_size=env.world_size,
                           device=env.device.type)

    # ---- released checkpoints to start from: checked against the data, their shapes taken ----
    if cfg.model.init_from or cfg.generator.init_from:
        init_from_shapes(cfg, vocab_size=data_info.vocab_size,
                         special_ids=data_info.special_token_ids,
                         vocab=load_tokenizer(data_info.tokenizer).get_vocab(), log=log)

    # ---- how the models will run: the fused sampler / RTD loss (config kernels, for modes that
    # sample) and the attention implementation; neither draws random numbers
    fused = mode_class(cfg.mode).samples and resolve_kernels(cfg.kernels, env.device, log=log)
    attention = resolve_attention(cfg.model.attn_implementation, device=env.device,
                                  half_precision=precision(ds) in ("bf16", "fp16"), log=log)

    lock = _lock_run_dir(cfg, env)  # nothing was written to run_dir before this
    try:
        yield _build(cfg, env, ds, data_info, fused=fused, attention=attention, log=log)
    finally:
        lock.release()


def _build(cfg: RunConfig, env: DistEnv, ds: dict[str, Any], data_info: DataInfo, *,
           fused: bool, attention: str, log: Callable[[str], None]) -> Run:
    """Steps 2 and 3 of the module doc, under run_dir's lock."""
    run_dir = Path(cfg.run_dir)
    vocab_size, special = data_info.vocab_size, data_info.special_token_ids

    # ---- what to resume from: decided and validated before anything is built or written ------
    data_record = resume.data_record(cfg.data.paths, cfg.data.weights)
    plan = resume.plan_resume(cfg, world_size=env.world_size, vocab_size=vocab_size,
                              data=data_record, log=log)

    # ---- models: what the engine trains, and what stays outside it (the mode decides) ---------
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    mode = mode_class(cfg.mode)(cfg, vocab_size=vocab_size, special_ids=special,
                                device=env.device, fused=fused, attention=attention, log=log)
    module = mode.build()
    # counted before the engine exists: under ZeRO-3 each rank then holds only a shard
    trainable_params = sum(p.numel() for p in module.parameters())
    step_flops = mode.step_flops()

    # ---- the held-out yardstick: built once, before training (and any judge checked) ---------
    eval_set = _build_eval_set(cfg, mode, env, data_info, log) if cfg.eval.every else None

    # ---- the engine, with the planned checkpoint loaded --------------------------------------
    if plan is not None and plan.universal:
        ds["checkpoint"] = {**ds.get("checkpoint", {}), "load_universal": True}
    # how far the run is (u of its steps or budget): what the LR decay and the temperature follow
    progress = Progress(cfg, step_flops=step_flops,
                        comm_device=env.device if env.device.type == "cuda" else
                        torch.device("cpu"))
    engine, optimizer_name = build_engine(module, cfg, ds, env, progress=progress)
    state = resume.resume(engine, plan, log=log)
    progress.bind(state)
    if cfg.train.compile:
        engine.compile()  # after the weights are loaded; the first steps pay the compilation
    if state.step == 0:
        torch.manual_seed(cfg.seed + 1 + env.rank)  # dropout differs across ranks

    # ---- the run's first writes to run_dir (the resume plan's conversion aside) ---------------
    if env.is_main:
        if eval_set is not None:
            evaluation.write_record(run_dir, eval_set)
            stats = " ".join(f"{k}={v:.4g}" for k, v in eval_set.judge_stats.items())
            log(f"eval: {eval_set.spec.describe()} {stats}".rstrip())
        cfg.save(run_dir / "config.yaml")
        write_resolved(ds, run_dir / "ds_config.json")
    logger = MetricsLogger(cfg, is_main=env.is_main, start_step=state.step,
                           wandb_id=state.wandb_id)
    state.wandb_id = logger.wandb_id
    logger.info(f"mode={cfg.mode} ranks={env.world_size} device={env.device.type} "
                f"precision={precision(ds)} zero={zero_stage(ds)} optimizer={optimizer_name} "
                f"trainable={trainable_params:,} params "
                f"accumulation={engine.gradient_accumulation_steps()} "
                f"length={progress.describe()}")

    # ---- the data loaders ---------------------------------------------------------------------
    masker = Masker(seq_len=cfg.data.seq_len, vocab_size=vocab_size, mask_id=special["mask"],
                    special_ids=data_info.special_ids,
                    mask_prob=cfg.masking.mask_prob, style=cfg.masking.style, seed=cfg.seed)
    # what the schedule measures (schedule=calibrated): the first 256 training sequences in
    # batches of 16, read from the start whatever the rank, micro-batch or resume, so every
    # rank and every attempt agrees
    calibration = mode.calibrate(lambda: itertools.islice(build_loader(
        cfg.data.paths, split="train", seq_len=cfg.data.seq_len, micro_batch_size=16,
        global_batch_size=16, rank=0, world_size=1, seed=cfg.seed,
        consumed_samples=0, masker=masker, weights=cfg.data.weights or None), 256 // 16))
    if calibration is not None and state.step == 0:  # a resumed run measured the same before
        logger.log(0, calibration, prefix="calibration")
    train_batches = build_loader(
        cfg.data.paths, split="train", seq_len=cfg.data.seq_len,
        micro_batch_size=cfg.train.micro_batch_size,
        global_batch_size=cfg.train.global_batch_size, rank=env.rank,
        world_size=env.world_size, seed=cfg.seed, consumed_samples=state.consumed_samples,
        masker=masker, num_workers=cfg.data.num_workers,
        weights=cfg.data.weights or None)
    # the plateau warning reads the RTD metrics: none in a mode that draws no replacements
    watch = PlateauWatch(warmup_steps=cfg.optim.warmup_steps,
                         patience=cfg.logging.plateau_patience if mode.samples else 0)
    watch.load_state_dict(state.plateau)
    return Run(cfg=cfg, env=env, mode=mode, engine=engine, state=state, progress=progress,
               logger=logger, train_batches=train_batches, eval_set=eval_set, watch=watch,
               trainable_params=trainable_params, step_flops=step_flops,
               zero_stage=zero_stage(ds), marker={"vocab_size": vocab_size, "data": data_record},
               data_info=data_info)


def _lock_run_dir(cfg: RunConfig, env: DistEnv) -> RunDirLock:
    """Rank 0 takes run_dir's lock (run_lock.py); if another run holds it, every rank raises the
    UserError that names that run."""
    lock = RunDirLock(cfg.run_dir)
    error: list[str | None] = [None]
    if env.is_main:
        try:
            lock.acquire()
        except UserError as e:
            error[0] = str(e)
    dist.broadcast_object_list(error, src=0)
    if error[0] is not None:
        raise UserError(error[0])
    return lock


def _build_eval_set(cfg: RunConfig, mode: Mode, env: DistEnv, data_info: DataInfo,
                    log: Callable[[str], None]) -> EvalSet:
    """This rank's shard of the evaluation set that eval.* describes; the judge (if any) is
    loaded, used and dropped here. Writes nothing (`assemble` writes RUN_DIR/eval_set.json)."""
    judge_name = mode.default_judge()
    judge, fingerprint = None, ""
    if judge_name == SELF_JUDGE:
        fingerprint = f"self:{Path(cfg.run_dir).resolve()}"  # equal to no other run's
    elif judge_name is not None:
        judge, fingerprint = evaluation.load_judge(judge_name, data_info, device=env.device,
                                                   logger=log)
    eval_set = evaluation.build_eval_set(
        cfg.data.paths, data_info, judge=judge, judge_name=judge_name or "",
        judge_fingerprint=fingerprint, num_sequences=cfg.eval.num_sequences, seed=cfg.eval.seed,
        mask_prob=cfg.masking.mask_prob, masking_style=cfg.masking.style,
        weights=cfg.data.weights, rank=env.rank, world_size=env.world_size, device=env.device,
        batch_size=cfg.train.micro_batch_size, logger=log)
    del judge
    return eval_set


def _rank0_print(env: DistEnv) -> Callable[[str], None]:
    def log(message: str) -> None:
        if env.is_main:
            print(message, flush=True)

    return log
