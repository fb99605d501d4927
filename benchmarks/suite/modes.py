"""The benchmarked modes, each one full training step through a real DeepSpeed engine
(engine.build_engine: deepspeed.initialize with the project's AdamW and the resolved ds_config)
on the same batches, built from the same seed:

  electra       the library's mode (method/modes.py): generator + discriminator trained jointly
  fast-electra  the library's mode: its frozen generator (loaded from the saved folder, as a run
                does) corrupts the batch outside the engine; FastElectraObjective trains the
                discriminator
  disc-only     `DiscOnly`, a mode in the library's sense: no generator, uniform random
                replacements at the masked positions, then FastElectraObjective (the bound
                Fast-ELECTRA approaches)
  peer          electra-pytorch's Electra around mode electra's HF generator and discriminator
                (same shapes, tied embeddings, same engine and optimizer), when it is installed.
                It masks inside its forward, as its design does.

A step is `inputs(batch)` (the engine's keyword arguments: for a library mode its
`engine_inputs`, which for a generator outside the engine is the corruption, timed apart by
measure.py) then `train(inputs)`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.suite.cost_model import FAST, JOINT, NO_GENERATOR, Auxiliary, Role
from benchmarks.suite.workload import SPECIAL_IDS, Spec, make_batches
from fast_electra_ds.config import RunConfig
from fast_electra_ds.data.masking import MaskedBatch
from fast_electra_ds.method import sampling
from fast_electra_ds.method.frozen_generator import FrozenGenerator
from fast_electra_ds.method.modes import EvalTargets, Mode, mode_class
from fast_electra_ds.method.objectives import FastElectraObjective
from fast_electra_ds.training.ds_config import load_ds_config, resolve_ds_config
from fast_electra_ds.training.engine import DistEnv, build_engine

PEER_PACKAGE = "electra-pytorch"
# mode -> its auxiliary model's part in a step, for the cost model
AUXILIARY = {
    "electra": JOINT,
    "fast-electra": FAST,
    "disc-only": NO_GENERATOR,
    "peer": Auxiliary(Role.TRAINED, head_everywhere=True),  # generator logits at every position
}
MODES = tuple(AUXILIARY)


class DiscOnly(Mode):
    """No generator: each masked position takes a token drawn uniformly from the vocabulary,
    then the discriminator trains as in fast-electra."""

    name = "disc-only"
    samples = False  # uniform draws: no temperature, no sampling kernel

    def build(self) -> nn.Module:
        return FastElectraObjective(self._discriminator(), fused=self.fused)

    def _sequence_flops(self) -> int:
        return self._discriminator_flops()

    def engine_inputs(self, batch: MaskedBatch, temp: float
                      ) -> tuple[dict, dict[str, torch.Tensor]]:
        sampled = torch.randint(self.vocab_size, batch.positions.shape,
                                device=batch.positions.device)  # [B, K]
        corrupted, rtd_labels = sampling.replace_at_positions(
            batch.input_ids, batch.positions, batch.weights, sampled)  # [B, L], [B, L]
        return (dict(corrupted_ids=corrupted, attention_mask=batch.attention_mask,
                     rtd_labels=rtd_labels, token_type_ids=batch.token_type_ids), {})

    def eval_targets(self, module: nn.Module) -> EvalTargets:
        return EvalTargets(discriminator=module.discriminator, masked_lm=None, own_generator=None)


@dataclass
class BenchMode:
    """One mode, built and ready to step."""

    name: str
    aux: Auxiliary
    engine: nn.Module  # the DeepSpeed engine
    inputs: Callable[[MaskedBatch], dict]  # batch -> the engine's keyword arguments
    note: str = ""
    frozen_generator: FrozenGenerator | None = None
    step_flops: int | None = None  # our accounting (method/flops.py); None for the peer

    @property
    def corrupts_outside_engine(self) -> bool:
        """Whether `inputs` draws the replacements (a generator that is not trained)."""
        return self.aux.role is not Role.TRAINED

    def train(self, inputs: dict) -> None:
        """The engine's forward, backward and optimizer step."""
        self.engine.backward(self.engine(**inputs)["loss"])
        self.engine.step()

    def step(self, batch: MaskedBatch) -> None:
        """One whole training step."""
        self.train(self.inputs(batch))


def peer_available() -> bool:
    try:
        import electra_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def build_mode(name: str, spec: Spec, env: DistEnv) -> BenchMode:
    """The models, engine and step of one mode (module doc)."""
    cfg = spec.config()
    ds = resolve_ds_config(load_ds_config(cfg.ds_config), cfg, world_size=1,
                           device=env.device.type)
    torch.manual_seed(cfg.seed)  # the same initial weights in every mode
    if name == "peer":
        engine, _ = build_engine(_peer_module(cfg, spec, env), cfg, ds, env)
        note = (f"{PEER_PACKAGE} {importlib.metadata.version(PEER_PACKAGE)}: generator logits "
                f"at every position, masking inside its forward")
        return BenchMode(name, AUXILIARY[name], engine, inputs=lambda b: dict(
            input_ids=b.input_ids, attention_mask=b.attention_mask), note=note)

    mode = _library_mode(name, cfg, spec, env)
    engine, _ = build_engine(mode.build(), cfg, ds, env)
    if cfg.train.compile:  # as training.assembly does (the frozen generator: in mode.build)
        engine.compile()
    # the curriculum's first temperature (joint mode: its constant one), calibrated on the
    # workload's batches where the schedule asks; the cost does not depend on T
    mode.calibrate(lambda: make_batches(spec, env.device))
    temperature = mode.temperature(0.0)

    def inputs(batch: MaskedBatch) -> dict:
        engine_kwargs, _ = mode.engine_inputs(batch, temperature)
        return engine_kwargs

    if mode.frozen_generator is not None:
        note = f"frozen generator on {mode.frozen_generator.runtime}"
    elif isinstance(mode, DiscOnly):
        note = "uniform replacements over the vocabulary"
    else:
        note = ""
    return BenchMode(name, AUXILIARY[name], engine, inputs, note=note,
                     frozen_generator=mode.frozen_generator, step_flops=mode.step_flops())


def _library_mode(name: str, cfg: RunConfig, spec: Spec, env: DistEnv) -> Mode:
    cls = DiscOnly if name == DiscOnly.name else mode_class(name)
    return cls(cfg, vocab_size=spec.vocab_size, special_ids=SPECIAL_IDS, device=env.device,
               log=lambda message: None)


class _Logits(nn.Module):
    """A HF model as electra-pytorch calls it: token ids in, logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.model(input_ids=input_ids, **kwargs).logits


class _PeerObjective(nn.Module):
    """electra-pytorch's Electra returning {"loss": ...}, as our objectives do for the engine."""

    def __init__(self, electra: nn.Module):
        super().__init__()
        self.electra = electra

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        return {"loss": self.electra(input_ids, attention_mask=attention_mask).loss}


def _peer_module(cfg: RunConfig, spec: Spec, env: DistEnv) -> nn.Module:
    """electra-pytorch's Electra around the generator and discriminator mode electra builds
    (embeddings tied), with our masking rate, replacement split, RTD weight and temperature."""
    from electra_pytorch import Electra

    joint = _library_mode("electra", cfg, spec, env).build()
    electra = Electra(_Logits(joint.generator), _Logits(joint.discriminator),
                      num_tokens=spec.vocab_size, mask_token_id=SPECIAL_IDS["mask"],
                      pad_token_id=SPECIAL_IDS["pad"],
                      mask_ignore_token_ids=[SPECIAL_IDS["cls"], SPECIAL_IDS["sep"]],
                      mask_prob=spec.mask_prob, replace_prob=0.85, random_token_prob=0.0,
                      disc_weight=cfg.train.rtd_weight, gen_weight=1.0,
                      temperature=cfg.temperature.joint_t)
    return _PeerObjective(electra)
