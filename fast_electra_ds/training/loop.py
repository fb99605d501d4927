"""The pretraining loop, top to bottom.

    text ids (indexed dataset) -> masked batch (Masker) -> generator samples -> discriminator
    -> loss -> DeepSpeed engine step -> metrics / checkpoint

The modes (fast-electra, electra, mlm) share the loop without a branch on the mode: each is an
object (method/modes.py) that builds what the engine trains and turns a micro-batch into the
engine's inputs; the loop only calls that interface.
"""

from __future__ import annotations

import itertools
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fast_electra_ds.config import SELF_JUDGE, RunConfig
from fast_electra_ds.errors import UserError
from fast_electra_ds.data.loader import DataInfo, build_loader, open_datasets
from fast_electra_ds.data.masking import Masker
from fast_electra_ds.data.tokenizer import load_tokenizer
from fast_electra_ds.method.frozen_generator import FrozenGenerator
from fast_electra_ds.method.kernel_switch import resolve_kernels
from fast_electra_ds.method.models import resolve_attention
from fast_electra_ds.method.pretrained import init_from_shapes
from fast_electra_ds.method.modes import Mode, mode_class
from fast_electra_ds.training import checkpoint, evaluation, resume
from fast_electra_ds.training.ds_config import (load_ds_config, precision, resolve_ds_config,
                                                write_resolved, zero_stage)
from fast_electra_ds.training.engine import DistEnv, build_engine, init_distributed
from fast_electra_ds.training.evaluation import EvalSet
from fast_electra_ds.training.faults import FaultGuard
from fast_electra_ds.training.logger import MetricsLogger
from fast_electra_ds.training.plateau import PlateauWatch
from fast_electra_ds.training.progress import Progress
from fast_electra_ds.training.run_lock import RunDirLock
from fast_electra_ds.metrics import reduce_metrics


@dataclass
class PretrainResult:
    eval_metrics: dict[str, float]  # the last evaluation (empty if eval.every=0)
    state: checkpoint.TrainState
    engine: Any  # the DeepSpeed engine (engine.module is the trained objective module)
    frozen_generator: FrozenGenerator | None  # mode=fast-electra only
    stopped_early: bool = False  # a signal or the time limit ended the run before its end


def pretrain(cfg: RunConfig) -> PretrainResult:
    """Run (or resume) the pretraining described by `cfg`, holding run_dir's lock throughout."""
    env = init_distributed(cfg, timeout_minutes=cfg.train.dist_timeout_minutes)
    lock = _lock_run_dir(cfg, env)  # before anything is written to run_dir
    try:
        return _pretrain(cfg, env)
    finally:
        lock.release()


def _pretrain(cfg: RunConfig, env: DistEnv) -> PretrainResult:
    run_dir = Path(cfg.run_dir)
    log = _rank0_print(env)

    # ---- data: token ids written by prepare-data; every check before any compute --------------
    _, data_info = open_datasets(cfg.data.paths, "train", seq_len=cfg.data.seq_len)
    ds = resolve_ds_config(load_ds_config(cfg.ds_config), cfg, world_size=env.world_size,
                           device=env.device.type)
    vocab_size, special = data_info.vocab_size, data_info.special_token_ids

    # ---- released checkpoints to start from: checked against the data, their shapes taken ----
    if cfg.model.init_from or cfg.generator.init_from:
        init_from_shapes(cfg, vocab_size=vocab_size, special_ids=special,
                         vocab=load_tokenizer(data_info.tokenizer).get_vocab(), log=log)

    # ---- what to resume from: decided and validated before anything is built or written ------
    data_record = resume.data_record(cfg.data.paths, cfg.data.weights)
    plan = resume.plan_resume(cfg, world_size=env.world_size, vocab_size=vocab_size,
                              data=data_record, log=log)

    # ---- models: what the engine trains, and what stays outside it (the mode decides) ---------
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    mode_cls = mode_class(cfg.mode)
    # the fused sampler / RTD loss (config kernels), for modes that sample
    fused = mode_cls.samples and resolve_kernels(cfg.kernels, env.device, log=log)
    attention = resolve_attention(cfg.model.attn_implementation, device=env.device,
                                  half_precision=precision(ds) in ("bf16", "fp16"), log=log)
    mode = mode_cls(cfg, vocab_size=vocab_size, special_ids=special, device=env.device,
                    fused=fused, attention=attention, log=log)
    module = mode.build()

    # counted before the engine exists: under ZeRO-3 each rank then holds only a shard
    trainable_params = sum(p.numel() for p in module.parameters())
    flops_per_step = mode.step_flops()

    # ---- the held-out yardstick: built once, before training (and any judge checked) ---------
    eval_set = _build_eval_set(cfg, mode, env, data_info, log) if cfg.eval.every else None

    if plan is not None and plan.universal:
        ds["checkpoint"] = {**ds.get("checkpoint", {}), "load_universal": True}
    # how far the run is (u of its steps or budget): what the LR decay and the temperature follow
    progress = Progress(cfg, step_flops=flops_per_step,
                        comm_device=env.device if env.device.type == "cuda" else
                        torch.device("cpu"))
    engine, optimizer_name = build_engine(module, cfg, ds, env, progress=progress)
    state = resume.resume(engine, plan, log=log)
    progress.bind(state)
    if cfg.train.compile:
        engine.compile()  # after the weights are loaded; the first steps pay the compilation
    if state.step == 0:
        torch.manual_seed(cfg.seed + 1 + env.rank)  # dropout differs across ranks
    if env.is_main:
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

    masker = Masker(seq_len=cfg.data.seq_len, vocab_size=vocab_size, mask_id=special["mask"],
                    special_ids=data_info.special_ids,
                    mask_prob=cfg.masking.mask_prob, style=cfg.masking.style, seed=cfg.seed)
    # what the schedule measures (schedule=calibrated): the first 256 training sequences in
    # batches of 16, read from the start whatever the rank, micro-batch or resume, so every
    # rank and every attempt agrees
    mode.calibrate(lambda: itertools.islice(build_loader(
        cfg.data.paths, split="train", seq_len=cfg.data.seq_len, micro_batch_size=16,
        global_batch_size=16, rank=0, world_size=1, seed=cfg.seed,
        consumed_samples=0, masker=masker, weights=cfg.data.weights or None), 256 // 16))
    train_batches = build_loader(
        cfg.data.paths, split="train", seq_len=cfg.data.seq_len,
        micro_batch_size=cfg.train.micro_batch_size,
        global_batch_size=cfg.train.global_batch_size, rank=env.rank,
        world_size=env.world_size, seed=cfg.seed, consumed_samples=state.consumed_samples,
        masker=masker, num_workers=cfg.data.num_workers,
        weights=cfg.data.weights or None)

    # ---- the loop -----------------------------------------------------------------------------
    eval_metrics: dict[str, float] = {}
    accumulation = engine.gradient_accumulation_steps()
    guard = FaultGuard(cfg, env, engine.basic_optimizer)
    # says when the discriminator sits on the RTD plateau (reads the logged windows only)
    watch = PlateauWatch(warmup_steps=cfg.optim.warmup_steps,
                         patience=cfg.logging.plateau_patience if mode.samples else 0)
    watch.load_state_dict(state.plateau)
    window: list[dict[str, torch.Tensor]] = []
    window_start = time.perf_counter()
    window_steps = 0
    grad_norm = math.nan
    while not progress.done(state):
        step_start = time.perf_counter()
        temp = mode.temperature(progress.fraction(state))
        lr = engine.get_lr()[0]
        last = progress.next_step_is_last(state)  # a minutes budget: known after the step
        log_now = (state.step + 1) % cfg.logging.log_every == 0 or last
        step_outputs = []
        for micro_step in range(accumulation):
            batch = next(train_batches).to(env.device, non_blocking=True)
            out = mode.forward(engine, batch, temp)
            guard.observe(out["loss"])
            engine.backward(out["loss"])
            if micro_step == accumulation - 1:
                # all ranks agree, before the update, whether to apply it and whether to stop
                guard.decide()
                if log_now and not guard.skip:
                    grad_norm = _grad_norm_before_step(engine)
            engine.step()  # DeepSpeed steps the optimizer at the accumulation boundary only
            step_outputs.append({k: v.detach() for k, v in out.items()})
        state.step += 1
        state.consumed_samples += cfg.train.global_batch_size
        # the learning curves' time axis (training only, not evaluation or checkpoints) and a
        # minutes budget's clock, the same on every rank
        state.train_seconds += time.perf_counter() - step_start
        progress.agree(state)
        if progress.done(state) and not last:
            last = log_now = True
        logger.advance()
        if guard.skip:
            logger.info(f"step {state.step}: loss not finite on some rank; every rank skipped "
                        f"the update ({guard.consecutive_skips} in a row, "
                        f"{guard.total_skips} in all)")
            guard.raise_if_diverged(state.step)
        else:
            window.extend(step_outputs)
            window_steps += 1

        if log_now and window_steps:
            metrics = reduce_metrics(window)
            seconds = (time.perf_counter() - window_start) / window_steps
            if mode.samples:
                metrics["temperature"] = temp
            metrics.update(
                lr=lr,
                grad_norm=grad_norm if not math.isnan(grad_norm) else _grad_norm(engine),
                step_time_s=seconds,
                tokens_per_s=cfg.train.global_batch_size * cfg.data.seq_len / seconds,
                peak_mem_gb=_peak_memory_gb(env), trainable_params=trainable_params,
                skipped_steps=guard.total_skips)
            logger.log(state.step, metrics)
            alert = watch.observe(state.step, state.step - window_steps, metrics)
            if alert is not None:
                logger.alert(state.step, "plateau", alert, on=watch.warned)
            state.plateau = watch.state_dict()
            window, window_start, window_steps = [], time.perf_counter(), 0
        if eval_set is not None and (state.step % cfg.eval.every == 0 or last):
            eval_start = time.perf_counter()
            eval_metrics = evaluate(engine, mode, eval_set, device=env.device)
            logger.log(state.step, {**eval_metrics, "train_seconds": state.train_seconds,
                                    "train_flops": state.step * flops_per_step}, prefix="eval")
            window_start += time.perf_counter() - eval_start  # step times leave evaluation out
        if (last or guard.stop or
                (cfg.checkpoint.save_every and state.step % cfg.checkpoint.save_every == 0)):
            path = checkpoint.save(engine, cfg, state, zero_stage=zero_stage(ds),
                                   extra_marker={"vocab_size": vocab_size, "data": data_record})
            logger.info(f"checkpoint committed: {path}")
        if guard.stop and not last:
            logger.info(f"stopping at step {state.step} ({guard.stop_reason}); resume with "
                        f"checkpoint.resume=auto")
            break
    guard.close()

    if mode.exports_generator:
        _export_generator(engine, cfg, env, data_info)
        logger.info(f"generator saved to {run_dir / 'generator'} (use it as generator.path)")
    logger.close()
    return PretrainResult(eval_metrics, state, engine, mode.frozen_generator,
                          stopped_early=guard.stop and not progress.done(state))


def _lock_run_dir(cfg: RunConfig, env: DistEnv) -> RunDirLock:
    """Rank 0 takes run_dir's lock (run_lock.py); if another run holds it, every rank raises the
    UserError that names that run, before any compute."""
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
                    log) -> EvalSet:
    """This rank's shard of the evaluation set that eval.* describes; the judge (if any) is
    loaded, used and dropped here. Rank 0 writes RUN_DIR/eval_set.json."""
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
    if env.is_main:
        Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
        evaluation.write_record(cfg.run_dir, eval_set)
        stats = " ".join(f"{k}={v:.4g}" for k, v in eval_set.judge_stats.items())
        log(f"eval: {eval_set.spec.describe()} {stats}".rstrip())
    return eval_set


@torch.no_grad()
def evaluate(engine, mode: Mode, eval_set: EvalSet, *, device: torch.device) -> dict[str, float]:
    """Held-out metrics on the evaluation set: what the mode's eval_targets name, scored by
    evaluation.score_targets. Collective: every rank scores its shard."""
    engine.eval()
    metrics = evaluation.score_targets(mode.eval_targets(engine.module), eval_set, device=device,
                                       batch_size=mode.cfg.train.micro_batch_size,
                                       eval_seed=mode.cfg.eval.seed)
    engine.train()
    return metrics


def _export_generator(engine, cfg: RunConfig, env: DistEnv, data_info: DataInfo) -> None:
    """mode=mlm: write RUN_DIR/generator, a HF masked-LM folder with the data's tokenizer."""
    import deepspeed

    out = Path(cfg.run_dir) / "generator"
    model = engine.module.generator
    # Under ZeRO-3 each rank holds a shard: gather the full weights (a no-op below stage 3).
    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        if env.is_main:
            model.save_pretrained(out, safe_serialization=True)
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(data_info.tokenizer).save_pretrained(out)
    dist.barrier()


def _grad_norm_before_step(engine) -> float:
    """The global gradient norm (before clipping) where DeepSpeed does not track it: ZeRO-0
    without a mixed-precision optimizer, whose gradients are complete and already all-reduced
    on every rank at this point. NaN where DeepSpeed will report it after the step."""
    if engine.zero_optimization_stage() > 0 or engine.bfloat16_enabled() or engine.fp16_enabled():
        return math.nan
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    if not grads:
        return math.nan
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float())
                                                       for g in grads])))


def _grad_norm(engine) -> float:
    """The norm DeepSpeed computed in its last step (ZeRO and mixed-precision optimizers)."""
    norm = engine.get_global_grad_norm()
    return math.nan if norm is None else float(norm)


def _peak_memory_gb(env: DistEnv) -> float:
    """Peak GPU memory allocated by torch, or on CPU the peak resident set of this process."""
    if env.device.type == "cuda":
        return torch.cuda.max_memory_allocated(env.device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def _rank0_print(env: DistEnv):
    def log(message: str) -> None:
        if env.is_main:
            print(message, flush=True)

    return log
