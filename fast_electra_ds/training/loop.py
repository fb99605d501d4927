"""The pretraining loop, top to bottom.

    text ids (indexed dataset) -> masked batch (Masker) -> generator samples -> discriminator
    -> loss -> DeepSpeed engine step -> metrics / checkpoint

Everything before the first step (the checks, the models, the engine, the resumed state, the
loaders) is assembly.py's, which hands the loop a `Run`. The modes (fast-electra, electra, mlm)
share the loop without a branch on the mode: each is an object (method/modes.py) that builds
what the engine trains and turns a micro-batch into the engine's inputs; the loop only calls
that interface.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
from typing import Any

import torch

from fast_electra_ds.config import RunConfig
from fast_electra_ds.method.frozen_generator import FrozenGenerator
from fast_electra_ds.method.modes import Mode
from fast_electra_ds.metrics import reduce_metrics
from fast_electra_ds.training import checkpoint, evaluation
from fast_electra_ds.training.assembly import Run, assemble
from fast_electra_ds.training.engine import DistEnv
from fast_electra_ds.training.evaluation import EvalSet
from fast_electra_ds.training.faults import FaultGuard


@dataclass
class PretrainResult:
    eval_metrics: dict[str, float]  # the last evaluation (empty if eval.every=0)
    state: checkpoint.TrainState
    engine: Any  # the DeepSpeed engine (engine.module is the trained objective module)
    frozen_generator: FrozenGenerator | None  # mode=fast-electra only
    stopped_early: bool = False  # a signal or the time limit ended the run before its end


def pretrain(cfg: RunConfig) -> PretrainResult:
    """Run (or resume) the pretraining described by `cfg`, holding run_dir's lock throughout."""
    with assemble(cfg) as run:
        return train(run)


def train(run: Run) -> PretrainResult:
    """Step `run` to the end of its steps or budget, or until a signal, the time limit or a
    diverged loss stops it; log, evaluate and checkpoint on the way."""
    cfg, env, mode, engine, state, progress, logger = (run.cfg, run.env, run.mode, run.engine,
                                                       run.state, run.progress, run.logger)
    eval_metrics: dict[str, float] = {}
    accumulation = engine.gradient_accumulation_steps()
    guard = FaultGuard(cfg, env, engine.basic_optimizer)
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
            batch = next(run.train_batches).to(env.device, non_blocking=True)
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
            seconds = (time.perf_counter() - window_start) / window_steps
            _log_window(run, window, window_steps, seconds_per_step=seconds, temp=temp, lr=lr,
                        grad_norm=grad_norm, skipped_steps=guard.total_skips)
            window, window_start, window_steps = [], time.perf_counter(), 0
        if run.eval_set is not None and (state.step % cfg.eval.every == 0 or last):
            eval_start = time.perf_counter()
            eval_metrics = evaluate(engine, mode, run.eval_set, device=env.device)
            logger.log(state.step, {**eval_metrics, "train_seconds": state.train_seconds,
                                    "train_flops": state.step * run.step_flops}, prefix="eval")
            window_start += time.perf_counter() - eval_start  # step times leave evaluation out
        if (last or guard.stop or
                (cfg.checkpoint.save_every and state.step % cfg.checkpoint.save_every == 0)):
            path = checkpoint.save(engine, cfg, state, zero_stage=run.zero_stage,
                                   extra_marker=run.marker)
            logger.info(f"checkpoint committed: {path}")
        if guard.stop and not last:
            logger.info(f"stopping at step {state.step} ({guard.stop_reason}); resume with "
                        f"checkpoint.resume=auto")
            break
    guard.close()

    run.finish()
    logger.close()
    return PretrainResult(eval_metrics, state, engine, mode.frozen_generator,
                          stopped_early=guard.stop and not progress.done(state))


def _log_window(run: Run, window: list[dict[str, torch.Tensor]], window_steps: int, *,
                seconds_per_step: float, temp: float, lr: float, grad_norm: float,
                skipped_steps: int) -> None:
    """Log the training metrics of the steps since the last log (rates over the window's
    micro-batches, reduced over the ranks), and what the plateau watch makes of them."""
    cfg, state = run.cfg, run.state
    metrics = reduce_metrics(window)
    metrics.update(run.mode.schedule_metrics(temp))
    metrics.update(
        lr=lr,
        grad_norm=grad_norm if not math.isnan(grad_norm) else _grad_norm(run.engine),
        step_time_s=seconds_per_step,
        tokens_per_s=cfg.train.global_batch_size * cfg.data.seq_len / seconds_per_step,
        peak_mem_gb=_peak_memory_gb(run.env), trainable_params=run.trainable_params,
        skipped_steps=skipped_steps)
    run.logger.log(state.step, metrics)
    alert = run.watch.observe(state.step, state.step - window_steps, metrics)
    if alert is not None:
        run.logger.alert(state.step, "plateau", alert, on=run.watch.warned)
    state.plateau = run.watch.state_dict()


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
