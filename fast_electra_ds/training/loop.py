"""The pretraining loop, top to bottom.

    text ids (indexed dataset) -> masked batch (Masker) -> generator samples -> discriminator
    -> loss -> DeepSpeed engine step -> metrics / checkpoint

Three modes share the loop and differ only in what the engine trains:

  fast-electra  the engine holds the discriminator alone; a frozen generator (fp16 through
                DeepSpeed-Inference on GPU) outside the engine proposes replacements, sampled
                from softmax(logits / T) with T falling from t0 towards 1 (temperature.py).
  electra       the original joint training: generator and discriminator in one engine, shared
                embeddings, loss = L_MLM + rtd_weight * L_RTD, samples at a constant T.
  mlm           a masked LM alone; saved as a HF masked-LM folder (RUN_DIR/generator) that a
                fast-electra run takes as its generator.
"""

from __future__ import annotations

import math
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fast_electra_ds.config import RunConfig, resolve_path
from fast_electra_ds.data.loader import DataInfo, build_loader, open_datasets
from fast_electra_ds.data.masking import MaskedBatch, Masker
from fast_electra_ds.errors import UserError
from fast_electra_ds.method.frozen_generator import FrozenGenerator
from fast_electra_ds.method.kernel_switch import resolve_kernels
from fast_electra_ds.method.models import build_discriminator, build_generator
from fast_electra_ds.method.objectives import ElectraObjective, FastElectraObjective, MLMObjective
from fast_electra_ds.method.sampling import corrupt
from fast_electra_ds.method.temperature import temperature
from fast_electra_ds.training import checkpoint, evaluation
from fast_electra_ds.training.ds_config import (
    load_ds_config,
    precision,
    resolve_ds_config,
    write_resolved,
    zero_stage,
)
from fast_electra_ds.training.engine import DistEnv, build_engine, init_distributed
from fast_electra_ds.training.evaluation import EvalSet
from fast_electra_ds.training.flops import Encoder, run_step_flops
from fast_electra_ds.training.logger import MetricsLogger
from fast_electra_ds.training.metrics import reduce_metrics


@dataclass
class PretrainResult:
    eval_metrics: dict[str, float]  # the last evaluation (empty if eval.every=0)
    state: checkpoint.TrainState
    engine: Any  # the DeepSpeed engine (engine.module is the trained objective module)
    frozen_generator: FrozenGenerator | None  # mode=fast-electra only
    stopped_early: bool = False  # a signal or the time limit ended the run before train.steps


def pretrain(cfg: RunConfig) -> PretrainResult:
    """Run (or resume) the pretraining described by `cfg`."""
    env = init_distributed(cfg, timeout_minutes=cfg.train.dist_timeout_minutes)
    run_dir = Path(cfg.run_dir)
    log = _rank0_print(env)

    # ---- data: token ids written by prepare-data; every check before any compute --------------
    _, data_info = open_datasets(cfg.data.paths, "train", seq_len=cfg.data.seq_len)
    ds = resolve_ds_config(load_ds_config(cfg.ds_config), cfg, world_size=env.world_size,
                           device=env.device.type)
    vocab_size, special = data_info.vocab_size, data_info.special_token_ids

    # ---- models: what the engine trains, and (fast-electra) the frozen generator beside it ----
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    frozen: FrozenGenerator | None = None
    # the fused sampler / RTD loss (config kernels); mode=mlm has neither
    fused = cfg.mode != "mlm" and resolve_kernels(cfg.kernels, env.device, log=log)
    if cfg.mode == "fast-electra":
        frozen = FrozenGenerator.load(str(resolve_path(cfg.generator.path)), vocab_size=vocab_size,
                                      special_ids=special, device=env.device,
                                      dtype=cfg.generator.inference_dtype,
                                      kernel_inject=cfg.generator.kernel_inject, fused=fused,
                                      logger=log)
        frozen.check_seq_len(cfg.data.seq_len)
        module = FastElectraObjective(build_discriminator(cfg.model, vocab_size=vocab_size,
                                                          pad_id=special["pad"]), fused=fused)
    elif cfg.mode == "electra":
        disc = build_discriminator(cfg.model, vocab_size=vocab_size, pad_id=special["pad"])
        gen = _build_generator(cfg, vocab_size, special["pad"])
        # (ElectraObjective ties the generator's embeddings to the discriminator's)
        module = ElectraObjective(gen, disc, rtd_weight=cfg.train.rtd_weight, fused=fused)
    else:
        module = MLMObjective(_build_generator(cfg, vocab_size, special["pad"]))

    # counted before the engine exists: under ZeRO-3 each rank then holds only a shard
    trainable_params = sum(p.numel() for p in module.parameters())
    generator_shape = (Encoder.from_hf_config(frozen.hf_model.config) if frozen is not None
                       else Encoder.generator(cfg.generator, cfg.model.embedding_size))
    flops_per_step = run_step_flops(cfg, vocab_size=vocab_size, generator=generator_shape)

    # ---- the held-out yardstick: built once, before training (and any judge checked) ---------
    eval_set = _build_eval_set(cfg, env, data_info, log) if cfg.eval.every else None

    # ---- what to resume from: decided and validated before the engine exists -----------------
    plan = checkpoint.plan_resume(cfg, world_size=env.world_size, vocab_size=vocab_size, log=log)
    if plan is not None and plan.universal:
        ds["checkpoint"] = {**ds.get("checkpoint", {}), "load_universal": True}
    engine, optimizer_name = build_engine(module, cfg, ds, env)
    state = checkpoint.resume(engine, plan, log=log)
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
                f"accumulation={engine.gradient_accumulation_steps()}")

    masker = Masker(seq_len=cfg.data.seq_len, vocab_size=vocab_size, mask_id=special["mask"],
                    special_ids=data_info.special_ids,
                    mask_prob=cfg.masking.mask_prob, style=cfg.masking.style, seed=cfg.seed)
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
    window: list[dict[str, torch.Tensor]] = []
    window_start = time.perf_counter()
    window_steps = 0
    grad_norm = math.nan
    while state.step < cfg.train.steps:
        step_start = time.perf_counter()
        temp = (cfg.temperature.joint_t if cfg.mode == "electra"
                else temperature(cfg.temperature, state.step, cfg.train.steps))
        lr = engine.get_lr()[0]
        last = state.step + 1 == cfg.train.steps
        log_now = (state.step + 1) % cfg.logging.log_every == 0 or last
        step_outputs = []
        for micro_step in range(accumulation):
            batch = next(train_batches).to(env.device, non_blocking=True)
            out = _forward(engine, cfg, frozen, batch, temp)
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
            if cfg.mode != "mlm":  # mlm samples nothing
                metrics["temperature"] = temp
            metrics.update(
                lr=lr,
                grad_norm=grad_norm if not math.isnan(grad_norm) else _grad_norm(engine),
                step_time_s=seconds,
                tokens_per_s=cfg.train.global_batch_size * cfg.data.seq_len / seconds,
                peak_mem_gb=_peak_memory_gb(env), trainable_params=trainable_params,
                skipped_steps=guard.total_skips)
            logger.log(state.step, metrics)
            window, window_start, window_steps = [], time.perf_counter(), 0
        # the learning curves' time axis: training only, not evaluation or checkpoints
        state.train_seconds += time.perf_counter() - step_start
        if eval_set is not None and (state.step % cfg.eval.every == 0 or last):
            eval_start = time.perf_counter()
            eval_metrics = evaluate(engine, cfg, eval_set, device=env.device)
            logger.log(state.step, {**eval_metrics, "train_seconds": state.train_seconds,
                                    "train_flops": state.step * flops_per_step}, prefix="eval")
            window_start += time.perf_counter() - eval_start  # step times leave evaluation out
        if (last or guard.stop or
                (cfg.checkpoint.save_every and state.step % cfg.checkpoint.save_every == 0)):
            path = checkpoint.save(engine, cfg, state, zero_stage=zero_stage(ds),
                                   extra_marker={"vocab_size": vocab_size})
            logger.info(f"checkpoint committed: {path}")
        if guard.stop and not last:
            logger.info(f"stopping at step {state.step} ({guard.stop_reason}); resume with "
                        f"checkpoint.resume=auto")
            break
    guard.close()

    if cfg.mode == "mlm":
        _export_generator(engine, cfg, env, data_info)
        logger.info(f"generator saved to {run_dir / 'generator'} (use it as generator.path)")
    logger.close()
    return PretrainResult(eval_metrics, state, engine, frozen, stopped_early=guard.stop and
                          state.step < cfg.train.steps)


class FaultGuard:
    """Per-step decisions that every rank must take together, in one all-reduce per step:

      skip  the loss was not finite on some rank in some micro-batch: no rank applies the
            update (the optimizer's step is a no-op, DeepSpeed's bookkeeping runs as usual),
            so the weights stay finite; max_consecutive_skips in a row end the run.
      stop  SIGTERM / SIGUSR1 arrived on some rank, or train.time_limit_minutes passed: the
            loop saves a committed checkpoint and returns.
    """

    def __init__(self, cfg: RunConfig, env: DistEnv, optimizer):
        self.cfg, self.optimizer = cfg, optimizer
        self.comm_device = env.device if env.device.type == "cuda" else torch.device("cpu")
        self.nonfinite = torch.zeros((), device=env.device)
        self.skip = self.stop = False
        self.stop_reason = ""
        self.consecutive_skips = self.total_skips = 0
        self._signal: str | None = None
        self._deadline = (time.monotonic() + 60 * cfg.train.time_limit_minutes
                          if cfg.train.time_limit_minutes else math.inf)
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread (e.g. called from a notebook worker)
                pass

    def _on_signal(self, signum, frame) -> None:
        self._signal = signal.Signals(signum).name

    def observe(self, loss: torch.Tensor) -> None:
        """Note a micro-batch's loss; stays on the device (no host sync here)."""
        self.nonfinite = torch.maximum(self.nonfinite, (~torch.isfinite(loss.detach())).float())

    def decide(self) -> None:
        flags = torch.stack([self.nonfinite.to(self.comm_device),
                             torch.tensor(float(self._signal is not None
                                                or time.monotonic() > self._deadline),
                                          device=self.comm_device)])
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        self.skip, stop = bool(flags[0] > 0), bool(flags[1] > 0)
        if stop and not self.stop:
            self.stop_reason = (f"{self._signal} received" if self._signal
                                else "train.time_limit_minutes reached" if
                                time.monotonic() > self._deadline else "another rank stopped")
        self.stop = self.stop or stop
        self.optimizer.skip_next_step = self.skip
        self.nonfinite.zero_()
        if self.skip:
            self.consecutive_skips += 1
            self.total_skips += 1
        else:
            self.consecutive_skips = 0

    def raise_if_diverged(self, step: int) -> None:
        if self.consecutive_skips >= self.cfg.train.max_consecutive_skips:
            raise UserError(
                f"the loss was not finite for {self.consecutive_skips} steps in a row (up to "
                f"step {step}); stopping. No update was applied in those steps, so the last "
                f"committed checkpoint holds finite weights. Lower optim.lr, raise "
                f"optim.warmup_steps, or check the data; then resume.")

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _build_generator(cfg: RunConfig, vocab_size: int, pad_id: int):
    return build_generator(cfg.generator, embedding_size=cfg.model.embedding_size,
                           max_position_embeddings=cfg.model.max_position_embeddings,
                           vocab_size=vocab_size, pad_id=pad_id,
                           hidden_dropout=cfg.model.hidden_dropout,
                           attention_dropout=cfg.model.attention_dropout)


def _forward(engine, cfg: RunConfig, frozen: FrozenGenerator | None, batch: MaskedBatch,
             temp: float) -> dict[str, torch.Tensor]:
    """One micro-batch through the engine; returns the loss and metric sums."""
    if cfg.mode == "fast-electra":
        corrupted, rtd_labels, gen_metrics = frozen.corrupt(batch, temperature=temp,
                                                            seed=cfg.seed)
        out = engine(corrupted_ids=corrupted, attention_mask=batch.attention_mask,
                     rtd_labels=rtd_labels, token_type_ids=batch.token_type_ids)
        return {**out, **gen_metrics}
    if cfg.mode == "electra":
        return engine(input_ids=batch.input_ids, masked_ids=batch.masked_ids,
                      attention_mask=batch.attention_mask, token_type_ids=batch.token_type_ids,
                      positions=batch.positions, labels=batch.labels, weights=batch.weights,
                      sample_ids=batch.sample_ids, temperature=temp, seed=cfg.seed)
    return engine(masked_ids=batch.masked_ids, attention_mask=batch.attention_mask,
                  token_type_ids=batch.token_type_ids, positions=batch.positions,
                  labels=batch.labels, weights=batch.weights)


def _build_eval_set(cfg: RunConfig, env: DistEnv, data_info: DataInfo, log) -> EvalSet:
    """This rank's shard of the evaluation set that eval.* describes; the judge (if any) is
    loaded, used and dropped here. Rank 0 writes RUN_DIR/eval_set.json."""
    judge_name = _judge_name(cfg, log)
    judge, fingerprint = None, ""
    if judge_name == evaluation.SELF:
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


def _judge_name(cfg: RunConfig, log) -> str | None:
    """eval.judge resolved: a folder or hub id, SELF, or None (mode=mlm needs no judge)."""
    if cfg.mode == "mlm":
        return None
    judge = cfg.eval.judge
    if judge == "auto":
        if cfg.mode == "electra":
            if not (cfg.generator.path and resolve_path(cfg.generator.path).is_dir()):
                log(f"eval: eval.judge=auto and generator.path={cfg.generator.path!r} is no "
                    f"folder, so this electra run is judged by its own generator (self): its "
                    f"held-out numbers compare with no other run's. Name a judge "
                    f"(eval.judge=FOLDER, e.g. a fast-electra run's generator) to compare.")
                return evaluation.SELF
        judge = cfg.generator.path
    if judge == evaluation.SELF:
        return judge
    path = resolve_path(judge).expanduser()
    return str(path.resolve()) if path.is_dir() else judge  # a folder, absolute; or a hub id


@torch.no_grad()
def evaluate(engine, cfg: RunConfig, eval_set: EvalSet, *, device: torch.device
             ) -> dict[str, float]:
    """Held-out metrics on the evaluation set: replaced-token detection against the judge's
    replacements (evaluation.score_discriminator), and the MLM accuracy of a trained generator
    on the same masks. Collective: every rank scores its shard."""
    engine.eval()
    module = engine.module
    batch_size = cfg.train.micro_batch_size
    metrics: dict[str, float] = {}
    if cfg.mode != "fast-electra":  # a generator that trains: how well it predicts
        metrics.update(evaluation.score_masked_lm(module.generator, eval_set, device=device,
                                                  batch_size=batch_size))
    if cfg.mode != "mlm":
        corrupt_fn = None
        if eval_set.corrupted_ids is None:  # judge=self: this run's generator, as it is now
            def corrupt_fn(batch: MaskedBatch):
                return corrupt(module.generator, batch, temperature=evaluation.JUDGE_TEMPERATURE,
                               seed=cfg.eval.seed + evaluation.JUDGE_SEED_OFFSET)[:2]
        metrics.update(evaluation.score_discriminator(module.discriminator, eval_set,
                                                      device=device, batch_size=batch_size,
                                                      corrupt_fn=corrupt_fn))
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
