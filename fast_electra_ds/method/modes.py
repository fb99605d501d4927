"""The training modes as objects: what the engine trains, what stays outside it, and one
micro-batch -> loss. The loop (training/loop.py), the held-out evaluation and the benchmarks use
only this interface; `mode_class(cfg.mode)` is the one place a mode name is looked up, so a new
mode is a new class here and its name in config.MODES.

  fast-electra  the engine holds the discriminator alone; a frozen generator outside it
                (FrozenGenerator: fp16 through DeepSpeed-Inference on GPU) proposes replacements,
                sampled from softmax(logits / T) with T falling from t0 towards 1 (temperature.py)
  electra       the original joint training: generator and discriminator in one engine, shared
                embeddings, loss = L_MLM + rtd_weight * L_RTD, samples at a constant T
  mlm           a masked LM alone, written at the end as a HF masked-LM folder (RUN_DIR/generator)
                that a fast-electra run takes as its frozen generator

A mode is built in two steps because the engine comes in between: `build()` returns the module
the engine trains (after loading whatever stays outside it, in a fixed order: model
initialization draws from torch's global RNG), then `forward(engine, batch, T)` runs one
micro-batch: `engine_inputs` (outside the engine, no gradient) and the engine's forward.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from fast_electra_ds.config import SELF_JUDGE, RunConfig, names_a_folder, resolve_path
from fast_electra_ds.data.masking import MaskedBatch, num_predictions
from fast_electra_ds.method import flops
from fast_electra_ds.method.mlm_head import masked_logits
from fast_electra_ds.method.temperature import calibrate_t0, temperature_at

# The models (transformers) are imported where a mode builds them, not here: checking a config
# (`fast-electra config`, a refused run) asks the mode classes and then needs none of them.
if TYPE_CHECKING:
    from fast_electra_ds.method.frozen_generator import FrozenGenerator


@dataclass
class EvalTargets:
    """What a mode's held-out evaluation scores (training/evaluation.py does the scoring)."""

    discriminator: nn.Module | None  # scored on the judge's replacements (RTD loss, AUC)
    masked_lm: nn.Module | None  # a generator that trains: its MLM accuracy on the eval masks
    own_generator: nn.Module | None  # eval.judge=self: the judge, as it is at each evaluation


class Mode(ABC):
    """One training mode (module doc). A subclass sets the class attributes and the four
    abstract methods."""

    name: ClassVar[str]
    samples: ClassVar[bool] = True  # draws replacements: has a temperature, uses the kernels
    trains_generator: ClassVar[bool] = False  # a generator inside the engine (checkpointed)
    exports_generator: ClassVar[bool] = False  # writes RUN_DIR/generator when training ends

    def __init__(self, cfg: RunConfig, *, vocab_size: int, special_ids: dict[str, int],
                 device: torch.device, fused: bool = False, attention: str = "sdpa",
                 log: Callable[[str], None] = print):
        """fused: the Triton kernels (kernel_switch.resolve_kernels); attention: every model's
        attention implementation (models.resolve_attention)."""
        self.cfg, self.vocab_size, self.special_ids = cfg, vocab_size, special_ids
        self.device, self.fused, self.attention, self.log = device, fused, attention, log
        self.frozen_generator: FrozenGenerator | None = None
        self.t0: float | None = None  # schedule=calibrated's T0, once `calibrate` measured it

    # ---- what config validation asks the mode ------------------------------------------------

    @classmethod
    def config_problems(cls, cfg: RunConfig, *, check_files: bool) -> list[str]:
        """Settings that only this mode needs or forbids (`validate_config` lists them with the
        config's own problems)."""
        out = []
        # judge=self: a generator that trains corrupts the set at each evaluation (electra)
        if cfg.eval.judge == SELF_JUDGE and not (cls.samples and cls.trains_generator):
            out.append(f"eval.judge=self means mode=electra's own generator; in mode={cls.name} "
                       f"name the judge (or auto)")
        if check_files and cfg.eval.every and names_a_folder(cfg.eval.judge):
            if not Path(cfg.eval.judge).expanduser().is_dir():
                out.append(f"eval.judge: {cfg.eval.judge} is not a directory; point it at a HF "
                           f"masked-LM folder (e.g. the generator of a mode=mlm run), or set "
                           f"eval.every=0")
        return out

    # ---- building ----------------------------------------------------------------------------

    @abstractmethod
    def build(self) -> nn.Module:
        """The module the engine trains; anything outside the engine is loaded here too."""

    def _discriminator(self) -> nn.Module:
        from fast_electra_ds.method.models import build_discriminator

        # the share of tokens replaced, at most: a sampled token can equal the original
        return build_discriminator(self.cfg.model, vocab_size=self.vocab_size,
                                   pad_id=self.special_ids["pad"],
                                   replaced_share=self.cfg.masking.mask_prob,
                                   attn_implementation=self.attention, log=self.log)

    def _generator(self) -> nn.Module:
        from fast_electra_ds.method.models import build_generator

        return build_generator(self.cfg.generator, self.cfg.model, vocab_size=self.vocab_size,
                               pad_id=self.special_ids["pad"], attn_implementation=self.attention,
                               log=self.log)

    def generator_shape(self) -> flops.Encoder:
        return flops.Encoder.generator(self.cfg.generator, self.cfg.model.embedding_size)

    def step_flops(self) -> int:
        """FLOPs of one optimizer step over the global batch, our accounting (flops.py): the
        learning curves' FLOPs axis."""
        return self.cfg.train.global_batch_size * self._sequence_flops()

    @abstractmethod
    def _sequence_flops(self) -> int:
        """FLOPs of one sequence's training step (flops.py's accounting)."""

    def _generator_flops(self) -> int:
        seq_len = self.cfg.data.seq_len
        return flops.generator_flops(self.generator_shape(), seq_len,
                                     num_predictions(seq_len, self.cfg.masking.mask_prob),
                                     self.vocab_size)

    def _discriminator_flops(self) -> int:
        return flops.TRAINED * flops.discriminator_flops(
            flops.Encoder.discriminator(self.cfg.model), self.cfg.data.seq_len)

    # ---- one micro-batch ---------------------------------------------------------------------

    def temperature(self, u: float) -> float:
        """The sampling temperature at the fraction u of training done (training/progress.py);
        1.0 in a mode that draws nothing (the loop's T is then unused)."""
        if not self.samples:
            return 1.0
        return temperature_at(self.cfg.temperature, u, t0=self.t0)

    def schedule_metrics(self, temp: float) -> dict[str, float]:
        """What the loop logs of the sampling schedule at T: the temperature in a mode that
        draws replacements, nothing in one that does not."""
        return {"temperature": temp} if self.samples else {}

    def calibrate(self, first_batches: Callable[[], Iterable[MaskedBatch]]
                  ) -> dict[str, float] | None:
        """Measure what the schedule needs from the run's first batches (the same on every rank
        and on resume; `first_batches` reads them) and return what was measured, for the run's
        log; nothing by default."""
        return None

    @abstractmethod
    def engine_inputs(self, batch: MaskedBatch, temp: float
                      ) -> tuple[dict, dict[str, torch.Tensor]]:
        """(keyword arguments of the engine's forward, metric sums computed outside it)."""

    def forward(self, engine, batch: MaskedBatch, temp: float) -> dict[str, torch.Tensor]:
        """One micro-batch through the engine: {"loss": scalar with graph, **metric sums}."""
        inputs, outside = self.engine_inputs(batch, temp)
        return {**engine(**inputs), **outside}

    # ---- held-out evaluation -----------------------------------------------------------------

    def default_judge(self) -> str | None:
        """eval.judge resolved: a folder (absolute) or hub id, SELF_JUDGE, or None (no
        replacements to score)."""
        judge = self.cfg.eval.judge
        if judge == "auto":
            judge = self.cfg.generator.path
        if judge == SELF_JUDGE:
            return judge
        path = resolve_path(judge).expanduser()
        return str(path.resolve()) if path.is_dir() else judge

    @abstractmethod
    def eval_targets(self, module: nn.Module) -> EvalTargets:
        """What the held-out evaluation scores of `module` (the engine's)."""


class FastElectra(Mode):
    name = "fast-electra"

    @classmethod
    def config_problems(cls, cfg: RunConfig, *, check_files: bool) -> list[str]:
        out = super().config_problems(cfg, check_files=check_files)
        g = cfg.generator
        if not g.path:
            out.append("mode=fast-electra needs generator.path: a HF masked-LM folder or hub id "
                       "(train one with mode=mlm)")
        elif check_files and names_a_folder(g.path) and not Path(g.path).expanduser().is_dir():
            out.append(f"generator.path: {g.path} is not a directory; train a generator first "
                       f"(mode=mlm writes RUN_DIR/generator) or point to a HF masked-LM folder")
        if g.init_from:
            out.append("generator.init_from starts a generator that trains (mode=electra/mlm); "
                       "mode=fast-electra's generator is frozen: name it with generator.path")
        return out

    def build(self) -> nn.Module:
        from fast_electra_ds.method.frozen_generator import FrozenGenerator
        from fast_electra_ds.method.objectives import FastElectraObjective

        cfg = self.cfg
        self.frozen_generator = FrozenGenerator.load(
            str(resolve_path(cfg.generator.path)), vocab_size=self.vocab_size,
            special_ids=self.special_ids, device=self.device,
            dtype=cfg.generator.inference_dtype, kernel_inject=cfg.generator.kernel_inject,
            fused=self.fused, attn_implementation=self.attention, logger=self.log)
        self.frozen_generator.check_seq_len(cfg.data.seq_len)
        if cfg.train.compile:
            self.frozen_generator.compile()
        return FastElectraObjective(self._discriminator(), fused=self.fused)

    def calibrate(self, first_batches: Callable[[], Iterable[MaskedBatch]]
                  ) -> dict[str, float] | None:
        """schedule=calibrated: T0 from the frozen generator's logits at the masked positions of
        the first batches (temperature.calibrate_t0)."""
        t = self.cfg.temperature
        if t.schedule != "calibrated":
            return None
        rows = []
        with torch.no_grad():
            for batch in first_batches():
                batch = batch.to(self.device)
                logits = masked_logits(self.frozen_generator.model, batch.masked_ids,
                                       batch.attention_mask, batch.positions,
                                       batch.token_type_ids)  # [B, K, V]
                rows.append(logits[batch.weights > 0].float())  # [used slots, V]
        self.t0, h1, target = calibrate_t0(torch.cat(rows), t.start_entropy)
        slots = sum(len(r) for r in rows)
        self.log(f"temperature: calibrated T0 = {self.t0:.3f}: the generator's entropy at the "
                 f"masked positions of {slots:,} slots is {h1:.3f} nats at "
                 f"T = 1 and {target:.3f} at T0, {t.start_entropy:g} of the way to the uniform "
                 f"distribution's {math.log(self.vocab_size):.3f}")
        return {"t0": self.t0, "entropy_at_1": h1, "entropy_at_t0": target, "slots": slots}

    def generator_shape(self) -> flops.Encoder:
        if self.frozen_generator is None:  # before build(): the config's shape
            return super().generator_shape()
        return flops.Encoder.from_hf_config(self.frozen_generator.hf_model.config)

    def _sequence_flops(self) -> int:
        return self._discriminator_flops() + flops.FROZEN * self._generator_flops()

    def engine_inputs(self, batch: MaskedBatch, temp: float
                      ) -> tuple[dict, dict[str, torch.Tensor]]:
        corrupted, rtd_labels, gen_metrics = self.frozen_generator.corrupt(
            batch, temperature=temp, seed=self.cfg.seed)
        return (dict(corrupted_ids=corrupted, attention_mask=batch.attention_mask,
                     rtd_labels=rtd_labels, token_type_ids=batch.token_type_ids), gen_metrics)

    def eval_targets(self, module: nn.Module) -> EvalTargets:
        return EvalTargets(discriminator=module.discriminator, masked_lm=None, own_generator=None)


class Electra(Mode):
    name = "electra"
    trains_generator = True

    @classmethod
    def config_problems(cls, cfg: RunConfig, *, check_files: bool) -> list[str]:
        out = super().config_problems(cfg, check_files=check_files)
        if cfg.generator.hidden_size > cfg.model.hidden_size:
            out.append(f"mode=electra: generator.hidden_size={cfg.generator.hidden_size} should "
                       f"not exceed model.hidden_size={cfg.model.hidden_size} (ELECTRA uses 1/4 "
                       f"to 1/3)")
        return out

    def build(self) -> nn.Module:
        from fast_electra_ds.method.objectives import ElectraObjective

        disc = self._discriminator()
        gen = self._generator()
        # (ElectraObjective ties the generator's embeddings to the discriminator's)
        return ElectraObjective(gen, disc, rtd_weight=self.cfg.train.rtd_weight, fused=self.fused)

    def _sequence_flops(self) -> int:
        return self._discriminator_flops() + flops.TRAINED * self._generator_flops()

    def temperature(self, u: float) -> float:
        return self.cfg.temperature.joint_t  # ELECTRA samples at a constant T

    def engine_inputs(self, batch: MaskedBatch, temp: float
                      ) -> tuple[dict, dict[str, torch.Tensor]]:
        return (dict(input_ids=batch.input_ids, masked_ids=batch.masked_ids,
                     attention_mask=batch.attention_mask, token_type_ids=batch.token_type_ids,
                     positions=batch.positions, labels=batch.labels, weights=batch.weights,
                     sample_ids=batch.sample_ids, temperature=temp, seed=self.cfg.seed), {})

    def default_judge(self) -> str | None:
        g = self.cfg.generator.path
        if self.cfg.eval.judge == "auto" and not (g and resolve_path(g).is_dir()):
            self.log(f"eval: eval.judge=auto and generator.path={g!r} is no folder, so this "
                     f"electra run is judged by its own generator (self): its held-out numbers "
                     f"compare with no other run's. Name a judge (eval.judge=FOLDER, e.g. a "
                     f"fast-electra run's generator) to compare.")
            return SELF_JUDGE
        return super().default_judge()

    def eval_targets(self, module: nn.Module) -> EvalTargets:
        return EvalTargets(discriminator=module.discriminator, masked_lm=module.generator,
                           own_generator=module.generator)


class MaskedLM(Mode):
    name = "mlm"
    samples = False
    trains_generator = True
    exports_generator = True

    @classmethod
    def config_problems(cls, cfg: RunConfig, *, check_files: bool) -> list[str]:
        # no replacements to judge: eval.judge is not read, so its folder is not checked
        out = super().config_problems(cfg, check_files=False)
        if cfg.model.init_from:
            out.append("model.init_from starts a discriminator, which mode=mlm does not train; "
                       "to continue a masked LM use generator.init_from")
        return out

    def build(self) -> nn.Module:
        from fast_electra_ds.method.objectives import MLMObjective

        return MLMObjective(self._generator())

    def _sequence_flops(self) -> int:
        return flops.TRAINED * self._generator_flops()

    def engine_inputs(self, batch: MaskedBatch, temp: float
                      ) -> tuple[dict, dict[str, torch.Tensor]]:
        return (dict(masked_ids=batch.masked_ids, attention_mask=batch.attention_mask,
                     token_type_ids=batch.token_type_ids, positions=batch.positions,
                     labels=batch.labels, weights=batch.weights), {})

    def default_judge(self) -> str | None:
        return None

    def eval_targets(self, module: nn.Module) -> EvalTargets:
        return EvalTargets(discriminator=None, masked_lm=module.generator, own_generator=None)


MODES: dict[str, type[Mode]] = {cls.name: cls for cls in (FastElectra, Electra, MaskedLM)}


def mode_class(name: str) -> type[Mode]:
    """The class of mode `name` (a config.MODES entry)."""
    return MODES[name]


def validate_config(cfg: RunConfig, *, check_files: bool = True) -> None:
    """The whole check of a run config before any work, one UserError listing every problem: the
    config's own (RunConfig.validate: ranges, files) and its mode's (Mode.config_problems)."""
    cfg.validate(check_files=check_files,
                 more=mode_class(cfg.mode).config_problems(cfg, check_files=check_files))
