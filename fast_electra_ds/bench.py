"""`fast-electra bench`: what Fast-ELECTRA saves per training step, computed and measured.

    fast-electra bench [--quick | --smoke] [--device cpu|cuda] [--config small] [--threads N]
                       [--output DIR]

Written to DIR/bench_<device>[_<suite>].md, .csv and _*.png: a headline, the benchmark's targets
(met or missed, by how much and why; never asserted), then

  1. compute  FLOPs per sequence of the main and auxiliary models (flops.py), joint ELECTRA vs
              Fast-ELECTRA: the paper's table beside its accounting reproduced and beside ours, at
              the paper's base and large shapes and at every bundled recipe; and FlopCounterMode's
              count of one real training step of each mode at the timed shape beside the analytic.
  2. memory   analytic (weights, gradients, optimizer state, activations), and measured: each
              mode trains a few steps in a fresh process (so peaks do not mix); on CPU its peak
              resident set (VmHWM, reset after the imports by writing 5 to /proc/self/clear_refs)
              minus its resident set after the imports, on GPU torch.cuda.max_memory_allocated.
  3. time     step time and tokens/s of every mode, measured side by side in this one process:
              repetitions that run each mode for a few steps in turn (order rotated), medians.

The modes, each one full training step through a real DeepSpeed engine (engine.build_engine:
deepspeed.initialize with the project's AdamW and the resolved ds_config) on the same batches:

  electra       objectives.ElectraObjective: generator + discriminator trained jointly
  fast-electra  generator.FrozenGenerator (loaded from a save_pretrained folder, as a run does)
                corrupts the batch; objectives.FastElectraObjective trains the discriminator
  disc-only     no generator: uniform random replacements at the masked positions, then
                FastElectraObjective (the bound Fast-ELECTRA approaches)
  peer          electra-pytorch's Electra around the same HF generator and discriminator (same
                shapes, tied embeddings, same engine and optimizer), when it is installed

Batches are synthetic token ids of full length (no padding), masked by masking.Masker before the
clock starts: in training the loader masks (in its workers when data.num_workers > 0), not the
step. The peer masks inside its forward, as its design does.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fast_electra_ds.config import RunConfig, list_recipes, load_config
from fast_electra_ds.data.masking import MaskedBatch, Masker, num_predictions
from fast_electra_ds.training import flops

# Synthetic vocabulary layout: ids 0-4 are the special tokens, the rest ordinary.
SPECIAL_IDS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
NUM_SPECIAL = len(SPECIAL_IDS)
ELECTRA_VOCAB = 30522  # BERT / ELECTRA uncased WordPiece, for shapes without data
NUM_BATCHES = 4  # distinct batches cycled through, so no step sees the previous one's input
PEER_PACKAGE = "electra-pytorch"
MODES = ("electra", "fast-electra", "disc-only", "peer")
GB = 1e9
# On a CPU the steps run on one intra-op thread: on a shared machine torch's OpenMP threads
# spin-wait for a descheduled peer, and 2-thread steps of the same work took 4-15 s where one
# thread took 1.4-3 s; the comparison between modes is what counts, not the machine's best time.
CPU_THREADS = 1
TARGETS = {"compute_base": 0.70, "compute_large": 0.76, "aux_memory": 0.04,
           "time_fast_joint": 0.75, "time_fast_disc": 1.20, "time_electra_peer": 1.0}


@dataclass(frozen=True)
class Suite:
    """How much to measure. batch / seq_len None: the recipe's micro-batch and seq_len."""

    name: str
    recipe: str
    batch: int | None
    seq_len: int | None
    vocab_size: int
    reps: int  # timing repetitions (each runs every mode steps_per_rep steps)
    steps_per_rep: int
    warmup_steps: int  # per mode, before the clock
    memory_steps: int  # training steps of each memory child process
    memory_rounds: int  # fresh processes per mode (medians over them)


SUITES = {
    "smoke": Suite("smoke", "tiny", batch=2, seq_len=32, vocab_size=1000, reps=2,
                   steps_per_rep=1, warmup_steps=1, memory_steps=1, memory_rounds=1),
    "quick": Suite("quick", "small", batch=8, seq_len=128, vocab_size=ELECTRA_VOCAB, reps=12,
                   steps_per_rep=1, warmup_steps=1, memory_steps=3, memory_rounds=3),
    "full": Suite("full", "small", batch=None, seq_len=None, vocab_size=ELECTRA_VOCAB, reps=9,
                  steps_per_rep=3, warmup_steps=2, memory_steps=5, memory_rounds=3),
}


@dataclass(frozen=True)
class Spec:
    """The timed shape (a recipe with the suite's batch and sequence length) and threads."""

    recipe: str
    batch: int
    seq_len: int
    vocab_size: int
    device: str
    threads: int  # torch intra-op threads; 0 = torch's default

    def config(self) -> RunConfig:
        # cpu: fp32 ZeRO-0 (DeepSpeed refuses fp16 there); cuda: the recipe's own ds_config
        overrides = [f"data.seq_len={self.seq_len}", f"train.micro_batch_size={self.batch}",
                     f"train.global_batch_size={self.batch}", f"device={self.device}",
                     "optim.warmup_steps=1", "data.num_workers=0"]
        if self.device == "cpu":
            overrides.append("ds_config=ds_configs/cpu_fp32.json")
        cfg = load_config(self.recipe, overrides)
        cfg.validate(check_files=False)
        return cfg

    def encoders(self) -> tuple[flops.Encoder, flops.Encoder]:
        cfg = self.config()
        return (flops.Encoder.discriminator(cfg.model),
                flops.Encoder.generator(cfg.generator, cfg.model.embedding_size))

    def describe(self) -> str:
        disc, gen = self.encoders()
        return (f"`{self.recipe}` recipe: discriminator {disc.describe()}, generator "
                f"{gen.describe()}; micro-batch {self.batch} x seq_len {self.seq_len}, "
                f"{num_predictions(self.seq_len, flops.MASK_PROB)} masked positions per "
                f"sequence, vocabulary {self.vocab_size:,} (synthetic ids)")


def suite_spec(suite: Suite, recipe: str | None, device: str,
               threads: int | None = None) -> Spec:
    """threads None: CPU_THREADS on a CPU, torch's default on a GPU."""
    cfg = load_config(recipe or suite.recipe)
    if threads is None:
        threads = CPU_THREADS if device == "cpu" else 0
    return Spec(recipe=recipe or suite.recipe, batch=suite.batch or cfg.train.micro_batch_size,
                seq_len=suite.seq_len or cfg.data.seq_len, vocab_size=suite.vocab_size,
                device=device, threads=threads)


def set_threads(spec: Spec) -> None:
    if spec.threads:
        torch.set_num_threads(spec.threads)


def peer_available() -> bool:
    try:
        import electra_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Building the modes


def make_batches(spec: Spec, device: torch.device) -> list[MaskedBatch]:
    """NUM_BATCHES masked batches of full-length sequences [CLS] w_1 ... w_{L-2} [SEP]."""
    masker = Masker(seq_len=spec.seq_len, vocab_size=spec.vocab_size, mask_id=SPECIAL_IDS["mask"],
                    special_ids=list(SPECIAL_IDS.values()), mask_prob=flops.MASK_PROB, seed=0)
    gen = torch.Generator().manual_seed(0)
    batches = []
    for i in range(NUM_BATCHES):
        ids = torch.randint(NUM_SPECIAL, spec.vocab_size, (spec.batch, spec.seq_len),
                            generator=gen)  # [B, L]
        ids[:, 0], ids[:, -1] = SPECIAL_IDS["cls"], SPECIAL_IDS["sep"]
        sample_ids = torch.arange(i * spec.batch, (i + 1) * spec.batch)  # [B]
        batches.append(masker(ids, torch.ones_like(ids), sample_ids).to(device))
    return batches


class _Logits(torch.nn.Module):
    """A HF model as electra-pytorch calls it: token ids in, logits out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.model(input_ids=input_ids, **kwargs).logits


class _PeerObjective(torch.nn.Module):
    """electra-pytorch's Electra returning {"loss": ...}, as our objectives do for the engine."""

    def __init__(self, electra: torch.nn.Module):
        super().__init__()
        self.electra = electra

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        return {"loss": self.electra(input_ids, attention_mask=attention_mask).loss}


@dataclass
class Mode:
    """One mode, ready to step: `step(batch)` runs a whole training step."""

    name: str
    step: Callable[[MaskedBatch], None]
    note: str = ""
    # fast-electra / disc-only: seconds each step spent building the corrupted batch (the frozen
    # generator's forward and sampling, or the uniform draw), appended by `step`
    corrupt_s: list = field(default_factory=list)
    frozen: object = None  # fast-electra: its FrozenGenerator

    def count_flops(self, batch: MaskedBatch) -> int:
        """FLOPs of one whole training step on `batch`, counted by FlopCounterMode."""
        counter = _flop_counter()
        with counter:
            self.step(batch)
        return counter.get_total_flops()


def _train_step(engine, loss: torch.Tensor) -> None:
    engine.backward(loss)
    engine.step()


def build_mode(name: str, spec: Spec, env, generator_dir: Path) -> Mode:
    """The models, engine and step function of one mode (module doc); same init in every mode."""
    from fast_electra_ds.method import frozen_generator, mlm_head, sampling
    from fast_electra_ds.method.models import build_discriminator, build_generator, tie_embeddings
    from fast_electra_ds.method.objectives import ElectraObjective, FastElectraObjective
    from fast_electra_ds.training.ds_config import load_ds_config, resolve_ds_config
    from fast_electra_ds.training.engine import build_engine

    cfg = spec.config()
    ds = resolve_ds_config(load_ds_config(cfg.ds_config), cfg, world_size=1,
                           device=env.device.type)
    pad = SPECIAL_IDS["pad"]
    torch.manual_seed(cfg.seed)
    disc = build_discriminator(cfg.model, vocab_size=spec.vocab_size, pad_id=pad)

    if name in ("electra", "peer"):
        gen = build_generator(cfg.generator, embedding_size=cfg.model.embedding_size,
                              max_position_embeddings=cfg.model.max_position_embeddings,
                              vocab_size=spec.vocab_size, pad_id=pad,
                              hidden_dropout=cfg.model.hidden_dropout,
                              attention_dropout=cfg.model.attention_dropout)
        tie_embeddings(gen, disc)
        if name == "electra":
            module = ElectraObjective(gen, disc, rtd_weight=cfg.train.rtd_weight)
            engine, _ = build_engine(module, cfg, ds, env)

            def forward(b: MaskedBatch) -> dict:
                return engine(input_ids=b.input_ids, masked_ids=b.masked_ids,
                              attention_mask=b.attention_mask, token_type_ids=b.token_type_ids,
                              positions=b.positions, labels=b.labels, weights=b.weights,
                              sample_ids=b.sample_ids, temperature=cfg.temperature.joint_t,
                              seed=cfg.seed)
        else:
            from electra_pytorch import Electra

            electra = Electra(_Logits(gen), _Logits(disc), num_tokens=spec.vocab_size,
                              mask_token_id=SPECIAL_IDS["mask"], pad_token_id=pad,
                              mask_ignore_token_ids=[SPECIAL_IDS["cls"], SPECIAL_IDS["sep"]],
                              mask_prob=flops.MASK_PROB, replace_prob=0.85,
                              random_token_prob=0.0, disc_weight=cfg.train.rtd_weight,
                              gen_weight=1.0, temperature=cfg.temperature.joint_t)
            engine, _ = build_engine(_PeerObjective(electra), cfg, ds, env)

            def forward(b: MaskedBatch) -> dict:
                return engine(input_ids=b.input_ids, attention_mask=b.attention_mask)

        def step(b: MaskedBatch) -> None:
            _train_step(engine, forward(b)["loss"])

        note = ("" if name == "electra" else f"{PEER_PACKAGE} "
                f"{importlib.metadata.version(PEER_PACKAGE)}: generator logits at every "
                "position, masking inside its forward")
        return Mode(name, step, note)

    module = FastElectraObjective(disc)
    engine, _ = build_engine(module, cfg, ds, env)

    def train_disc(b: MaskedBatch, corrupted: torch.Tensor, rtd_labels: torch.Tensor) -> None:
        out = engine(corrupted_ids=corrupted, attention_mask=b.attention_mask,
                     rtd_labels=rtd_labels, token_type_ids=b.token_type_ids)
        _train_step(engine, out["loss"])

    frozen = None
    if name == "disc-only":
        def corrupt(b: MaskedBatch) -> tuple[torch.Tensor, torch.Tensor]:
            sampled = torch.randint(spec.vocab_size, b.positions.shape,
                                    device=b.positions.device)  # [B, K], uniform
            return sampling.replace_at_positions(b.input_ids, b.positions, b.weights, sampled)
        note = "uniform replacements over the vocabulary"
    else:
        assert name == "fast-electra", name
        frozen = frozen_generator.FrozenGenerator.load(
            str(generator_dir), vocab_size=spec.vocab_size, special_ids=SPECIAL_IDS,
            device=env.device, dtype=cfg.generator.inference_dtype,
            kernel_inject=cfg.generator.kernel_inject, logger=lambda message: None)
        # the curriculum's first temperature; the cost does not depend on T
        temperature = cfg.temperature.t0

        def corrupt(b: MaskedBatch) -> tuple[torch.Tensor, torch.Tensor]:
            corrupted, rtd_labels, _ = frozen.corrupt(b, temperature=temperature, seed=cfg.seed)
            return corrupted, rtd_labels
        note = f"frozen generator on {frozen.runtime}"

    watch = _Stopwatch(env.device)
    corrupt_s: list = []

    def step(b: MaskedBatch) -> None:
        watch.start()
        corrupted, rtd_labels = corrupt(b)
        watch.stop(corrupt_s)
        train_disc(b, corrupted, rtd_labels)

    return Mode(name, step, note, corrupt_s=corrupt_s, frozen=frozen)


class _Stopwatch:
    """Times a part of a step. On a GPU without a host sync: CUDA events, whose elapsed time is
    read once the step has been synchronized (`seconds`)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            self._begin = torch.cuda.Event(enable_timing=True)
            self._begin.record()
        else:
            self._begin = time.perf_counter()

    def stop(self, out: list) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            out.append((self._begin, end))
        else:
            out.append(time.perf_counter() - self._begin)


def seconds(entry: float | tuple) -> float:
    """A _Stopwatch entry in seconds (a pair of CUDA events: after a synchronization)."""
    if isinstance(entry, tuple):
        begin, end = entry
        return begin.elapsed_time(end) / 1000
    return entry


def save_frozen_generator(spec: Spec, out: Path) -> None:
    """A freshly initialized generator of the recipe's shape as a HF folder: what a mode=mlm run
    of the same recipe exports and a fast-electra run loads (weights do not change the cost)."""
    from fast_electra_ds.method.models import build_generator

    cfg = spec.config()
    torch.manual_seed(cfg.seed)
    build_generator(cfg.generator, embedding_size=cfg.model.embedding_size,
                    max_position_embeddings=cfg.model.max_position_embeddings,
                    vocab_size=spec.vocab_size, pad_id=SPECIAL_IDS["pad"]).save_pretrained(out)


# --------------------------------------------------------------------------------------------
# FLOP counting


def _flop_counter():
    """FlopCounterMode that also counts the CPU flash-attention kernel, which torch's table
    lacks: SDPA picks it without dropout (eval mode, i.e. the frozen generator on CPU)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_flash(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash})


# --------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Timing:
    step_s: list[float] = field(default_factory=list)  # every timed step
    rep_mean_s: list[float] = field(default_factory=list)  # per repetition

    @property
    def median_s(self) -> float:
        return statistics.median(self.step_s)


def time_modes(modes: dict[str, Mode], batches: list[MaskedBatch], suite: Suite,
               device: torch.device) -> dict[str, Timing]:
    """Interleaved timing: every repetition runs each mode `steps_per_rep` steps, in an order
    rotated by one each repetition, so slow drifts (other processes on the cores, thermal)
    reach all modes alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    names = list(modes)
    for name in names:
        for i in range(suite.warmup_steps):
            modes[name].step(batches[i % len(batches)])
    sync()
    for mode in modes.values():
        mode.corrupt_s.clear()  # keep the timed steps' only
    timings = {name: Timing() for name in names}
    counter = 0
    for rep in range(suite.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            times = []
            for _ in range(suite.steps_per_rep):
                batch = batches[counter % len(batches)]
                counter += 1
                start = time.perf_counter()
                modes[name].step(batch)
                sync()
                times.append(time.perf_counter() - start)
            timings[name].step_s.extend(times)
            timings[name].rep_mean_s.append(sum(times) / len(times))
    return timings


def paired_ratio(timings: dict[str, Timing], num: str, den: str) -> float:
    """Median over repetitions of num's mean step time / den's in the same repetition."""
    return statistics.median(a / b for a, b in zip(timings[num].rep_mean_s,
                                                   timings[den].rep_mean_s))


def corrupt_breakdown(frozen, batches: list[MaskedBatch], reps: int,
                      device: torch.device) -> dict[str, float]:
    """Median seconds of the two halves of FrozenGenerator.corrupt, timed apart: the generator's
    forward (generator.masked_logits) and the sampling (generator.sample_replacements, the
    counter-based Gumbel-max draw over the vocabulary that joint mode runs as well)."""
    from fast_electra_ds.method import frozen_generator, mlm_head, sampling

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    forward_s, sampling_s = [], []
    with torch.no_grad():
        for i in range(reps + 1):  # the first is a warm-up
            b = batches[i % len(batches)]
            sync()
            start = time.perf_counter()
            logits = mlm_head.masked_logits(frozen.model, b.masked_ids, b.attention_mask,
                                           b.positions)  # [B, K, V]
            sync()
            middle = time.perf_counter()
            sampling.sample_replacements(logits, temperature=2.0, seed=0, sample_ids=b.sample_ids,
                                        weights=b.weights)
            sync()
            if i:
                forward_s.append(middle - start)
                sampling_s.append(time.perf_counter() - middle)
    return {"forward_s": statistics.median(forward_s),
            "sampling_s": statistics.median(sampling_s)}


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def memory_child(mode: str, spec: Spec, steps: int, generator_dir: Path) -> dict:
    """In a fresh process (see main): build one mode, train `steps` steps, report its peak."""
    from fast_electra_ds.training.engine import init_distributed

    set_threads(spec)
    env = init_distributed(spec.config())
    on_cuda = env.device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(env.device)
        before = torch.cuda.memory_allocated(env.device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux)
        before = _status_kib("VmRSS") * 1024
    batches = make_batches(spec, env.device)
    built = build_mode(mode, spec, env, generator_dir)
    for i in range(steps):
        built.step(batches[i % len(batches)])
    if on_cuda:
        torch.cuda.synchronize(env.device)
        peak = torch.cuda.max_memory_allocated(env.device)
    else:
        peak = _status_kib("VmHWM") * 1024
    return {"mode": mode, "before_bytes": before, "peak_bytes": peak,
            "growth_bytes": peak - before, "steps": steps}


def measure_memory(modes: list[str], spec: Spec, steps: int, generator_dir: Path,
                   rounds: int) -> dict[str, list[dict]]:
    """`rounds` fresh child processes per mode: {mode: [memory_child's result per round]}.
    On CPU a round's children run at once (each reads only its own process's peak); on a GPU
    one after another, as they share its memory."""
    # a world of its own: not this process's rendezvous (its port is taken)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONWARNINGS"] = "ignore"

    def start(mode: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "fast_electra_ds.bench", "--memory-child", mode,
             "--spec", json.dumps(spec.__dict__), "--steps", str(steps),
             "--generator-dir", str(generator_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def finish(mode: str, child: subprocess.Popen) -> dict:
        stdout, stderr = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"memory child for {mode} failed:\n{stderr[-3000:]}")
        return json.loads(stdout.strip().splitlines()[-1])

    out: dict[str, list[dict]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        if spec.device == "cuda":
            results = {mode: finish(mode, start(mode)) for mode in modes}
        else:
            children = {mode: start(mode) for mode in modes}
            results = {mode: finish(mode, child) for mode, child in children.items()}
        for mode, result in results.items():
            out[mode].append(result)
    return out


# --------------------------------------------------------------------------------------------
# Reporting helpers


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info(device: torch.device) -> dict[str, str]:
    info = {
        "cpu": cpu_name(),
        "cores": f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable), torch "
                 f"threads {torch.get_num_threads()}",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    try:
        import psutil

        info["memory"] = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        pass
    info["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "none used"
    for package in ("torch", "deepspeed", "transformers", PEER_PACKAGE):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


def _gf(x: float) -> str:
    g = x / 1e9
    return f"{g:,.1f}" if g >= 10 else f"{g:.3g}"


def _gb(x: float) -> str:
    return f"{x / GB:,.2f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


class Report:
    """Markdown lines and CSV rows side by side, so every number lands in both."""

    def __init__(self):
        self.md: list[str] = []
        self.rows: list[dict] = []

    def add(self, section: str, case: str, mode: str, component: str, metric: str,
            value: float, unit: str) -> None:
        self.rows.append({"section": section, "case": case, "mode": mode,
                          "component": component, "metric": metric, "value": value,
                          "unit": unit})


# --------------------------------------------------------------------------------------------
# Section 1: compute


def compute_section(rep: Report, measured_flops: dict[str, int], spec: Spec) -> dict:
    """Tables of the paper, its accounting and ours; returns the headline ratios."""
    md = rep.md
    headline = {}
    md += ["## 1. Compute per training step", "",
           "GFLOPs per sequence (one sequence of L tokens; a step is this times the global "
           "batch). 2 FLOPs per multiply-add of every matrix product, element-wise work not "
           "counted (as FlopCounterMode counts); trained = forward + backward = 3x forward, "
           "frozen = 1x. Accountings, in `fast_electra_ds/training/flops.py`:", "",
           f"- **paper**: the paper's table, reproduced by: per token, n_layers x (2(4H^2 + 2HF) "
           f"+ 4LH) + 2VH over all L = {flops.PAPER_SEQ_LEN} positions, V = "
           f"{flops.PAPER_VOCAB:,}, in *both* models (a vocabulary-sized projection at every "
           "position: the auxiliary LM head over all 512 positions, not the 15% masked; for the "
           "main model, its word embeddings counted like a matmul). The auxiliary model is the "
           "Fast-ELECTRA paper's: 4 layers (base) / 6 layers (large) at the main model's width, "
           "the same model in both methods.",
           "- **ours**: what this code runs on the same shapes and vocabulary: embedding lookups "
           "free; the discriminator head (H -> H -> 1) at every position; the generator's head "
           f"(H -> E -> V) only at the K = "
           f"{num_predictions(flops.PAPER_SEQ_LEN, flops.MASK_PROB)} masked positions of "
           f"{flops.PAPER_SEQ_LEN} (`generator.masked_logits`) "
           "in joint mode too.", ""]
    header = ["model", "method", "main: paper", "main: paper acct.", "main: ours",
              "aux: paper", "aux: paper acct.", "aux: ours", "total: paper",
              "total: paper acct.", "total: ours"]
    rows = []
    for size, (main, aux) in flops.PAPER_SHAPES.items():
        p = flops.PAPER_GFLOPS[size]
        got = {}
        for mode, key in (("electra", "joint"), ("fast-electra", "fast")):
            paper_acct = flops.paper_step_flops(mode, main, aux)
            ours = flops.step_flops(mode, main, aux, seq_len=flops.PAPER_SEQ_LEN,
                                    vocab_size=flops.PAPER_VOCAB)
            got[key] = (paper_acct, ours)
            rows.append([size, "Original (joint)" if key == "joint" else "Fast-ELECTRA",
                         f"{p['main']:,.1f}", _gf(paper_acct.main), _gf(ours.main),
                         f"{p['aux_' + key]:,.1f}", _gf(paper_acct.aux), _gf(ours.aux),
                         f"{p['total_' + key]:,.1f}", _gf(paper_acct.total), _gf(ours.total)])
            for acct, sf in (("paper-accounting", paper_acct), ("ours", ours)):
                for comp in ("main", "aux", "total"):
                    rep.add("compute", f"paper-{size}", mode, comp, f"gflops_{acct}",
                            getattr(sf, comp) / 1e9, "GFLOP/sequence")
            for comp in ("main", "aux", "total"):
                rep.add("compute", f"paper-{size}", mode, comp, "gflops_paper",
                        p[comp if comp == "main" else f"{comp}_{key}"], "GFLOP/sequence")
        (pj, oj), (pf, of) = got["joint"], got["fast"]
        rows.append([size, "ratio fast/joint", "1.00", _ratio(pf.main, pj.main),
                     _ratio(of.main, oj.main), _ratio(p["aux_fast"], p["aux_joint"]),
                     _ratio(pf.aux, pj.aux), _ratio(of.aux, oj.aux),
                     _ratio(p["total_fast"], p["total_joint"]), _ratio(pf.total, pj.total),
                     _ratio(of.total, oj.total)])
        headline[size] = {"paper": p["total_fast"] / p["total_joint"],
                          "paper_acct": pf.total / pj.total, "ours": of.total / oj.total,
                          "aux_over_main_paper": pf.aux / pf.main,
                          "aux_over_main_ours": of.aux / of.main,
                          "offline_paper": pj.main / pj.total}
        for acct, value in (("paper", headline[size]["paper"]),
                            ("paper-accounting", headline[size]["paper_acct"]),
                            ("ours", headline[size]["ours"])):
            rep.add("compute", f"paper-{size}", "fast/joint", "total", f"ratio_{acct}", value, "")
    md += _table(header, rows) + [""]

    # Which shapes reproduce the table: the vocabulary each cell implies with the Fast-ELECTRA
    # auxiliary shape, and how far the recipes' (ELECTRA's) joint generators land.
    md += ["**Which shapes reproduce the paper's table.** The vocabulary V that makes the paper's "
           "accounting hit each cell exactly, with the Fast-ELECTRA auxiliary shapes; and the "
           "auxiliary cost the recipes' `generator.*` shapes (ELECTRA's narrow joint generators, "
           "on the main model's embeddings) would have in the same accounting:", ""]
    rows = []
    for size, (main, aux) in flops.PAPER_SHAPES.items():
        p = flops.PAPER_GFLOPS[size]
        recipe = load_config(size)
        electra_gen = flops.Encoder.generator(recipe.generator, recipe.model.embedding_size)
        v_main = flops.paper_implied_vocab(p["main"] / flops.TRAINED, main)
        v_aux = flops.paper_implied_vocab(p["aux_fast"], aux)
        narrow = flops.paper_forward_flops(electra_gen)
        # the narrow generator's vocabulary projection runs at the embedding width E, not H
        narrow += 2 * flops.PAPER_SEQ_LEN * flops.PAPER_VOCAB * (
            electra_gen.embedding_size - electra_gen.hidden_size)
        rows.append([size, f"{v_main:,.0f}", aux.describe(), f"{v_aux:,.0f}",
                     electra_gen.describe(), f"{narrow / 1e9:.1f} vs paper {p['aux_fast']:.1f} "
                     f"({narrow / 1e9 / p['aux_fast'] - 1:+.0%})"])
        rep.add("compute", f"paper-{size}", "-", "main", "implied_vocab", v_main, "tokens")
        rep.add("compute", f"paper-{size}", "-", "aux", "implied_vocab", v_aux, "tokens")
        rep.add("compute", f"paper-{size}", "-", "aux", "recipe_generator_forward_gflops",
                narrow / 1e9, "GFLOP/sequence")
    md += _table(["model", "V implied by main", "Fast-ELECTRA aux shape", "V implied by aux",
                  "recipe generator.*", "its forward, paper accounting (GFLOPs)"], rows) + [""]

    # Every bundled recipe, ours, joint generator = frozen generator = generator.*
    md += [f"**Every bundled recipe**, our accounting (vocabulary {ELECTRA_VOCAB:,}, the "
           "recipe's seq_len; the auxiliary model is the recipe's `generator.*` in both "
           "methods: a mode=mlm run of the recipe exports the frozen one):", ""]
    rows = []
    for name in list_recipes():
        cfg = load_config(name)
        disc = flops.Encoder.discriminator(cfg.model)
        gen = flops.Encoder.generator(cfg.generator, cfg.model.embedding_size)
        j = flops.step_flops("electra", disc, gen, seq_len=cfg.data.seq_len,
                             vocab_size=ELECTRA_VOCAB)
        f = flops.step_flops("fast-electra", disc, gen, seq_len=cfg.data.seq_len,
                             vocab_size=ELECTRA_VOCAB)
        rows.append([name, str(cfg.data.seq_len), _gf(j.main), _gf(j.aux), _gf(f.aux),
                     _gf(j.total), _gf(f.total), _ratio(f.aux, j.aux), _ratio(f.total, j.total)])
        for mode, sf in (("electra", j), ("fast-electra", f)):
            for comp in ("main", "aux", "total"):
                rep.add("compute", f"recipe-{name}", mode, comp, "gflops_ours",
                        getattr(sf, comp) / 1e9, "GFLOP/sequence")
    md += _table(["recipe", "seq_len", "main", "aux joint", "aux fast", "total joint",
                  "total fast", "aux fast/joint", "total fast/joint"], rows) + [""]

    # FlopCounterMode on one real step of each mode at the timed shape
    disc, gen = spec.encoders()
    md += [f"**Measured with `torch.utils.flop_counter.FlopCounterMode`**: one whole training "
           f"step of each mode (the frozen generator's forward and sampling, engine forward, "
           f"backward, optimizer step) at the timed shape ({spec.recipe}, micro-batch "
           f"{spec.batch} x {spec.seq_len}, V = {spec.vocab_size:,}), per sequence, against our "
           "analytic count. The main model's step is the disc-only step (the same "
           "discriminator on the same shapes); a mode's auxiliary cost is its step minus that. "
           "(The counter's table lacks the CPU flash-attention kernel that SDPA runs without "
           "dropout, i.e. for the frozen generator; the benchmark registers torch's own SDPA "
           "formula for it.)", ""]
    rows = []
    main_measured = measured_flops["disc-only"] / spec.batch
    for mode, step_measured in measured_flops.items():
        analytic = flops.step_flops(mode, disc, gen, seq_len=spec.seq_len,
                                    vocab_size=spec.vocab_size)
        total_m = step_measured / spec.batch
        aux_m = total_m - main_measured
        rows.append([mode, f"{analytic.total / 1e9:.4f}", f"{total_m / 1e9:.4f}",
                     _err(total_m, analytic.total), f"{analytic.aux / 1e9:.4f}",
                     f"{aux_m / 1e9:.4f}", _err(aux_m, analytic.aux)])
        for comp, a, m in (("total", analytic.total, total_m), ("aux", analytic.aux, aux_m)):
            rep.add("compute", "timed-shape", mode, comp, "gflops_analytic", a / 1e9,
                    "GFLOP/sequence")
            rep.add("compute", "timed-shape", mode, comp, "gflops_flopcounter", m / 1e9,
                    "GFLOP/sequence")
    md += _table(["mode", "step analytic", "step measured", "error", "aux analytic",
                  "aux measured", "error"], rows) + [""]
    return headline


def _err(measured: float, analytic: float) -> str:
    if analytic == 0:
        return "exact" if measured == 0 else "n/a"
    return f"{measured / analytic - 1:+.2%}"


# --------------------------------------------------------------------------------------------
# Section 2: memory


def memory_section(rep: Report, measured: dict, spec: Spec, precision: str) -> dict:
    md = rep.md
    headline = {}
    batch_by_size = {size: load_config(size).train.micro_batch_size for size in flops.PAPER_SHAPES}
    md += ["## 2. Memory per step", "",
           f"**Analytic**, at the paper's shapes (V = {flops.PAPER_VOCAB:,}, seq_len "
           f"{flops.PAPER_SEQ_LEN}), bf16 mixed precision "
           "on one GPU without ZeRO partitioning, micro-batch "
           + ", ".join(f"{b} ({s})" for s, b in batch_by_size.items())
           + " (the recipes'; the paper does not give its per-GPU batch, so its main-model "
           "column is not expected to match). Trained models: 16 bytes per parameter (weights "
           "2 + gradients 2 + fp32 master 4 + Adam m, v 8) plus activations, per layer "
           "(8e + 2)sbh + 2e sbF + (2e + 1)a s^2 b bytes (Korthikanti et al. 2022 with e bytes "
           "per element, dropout masks 1 byte; eager attention) plus embeddings and heads "
           "(flops.py). The joint generator shares the discriminator's embeddings, so its own "
           "parameters exclude them. The frozen generator (fp16): its weights, embeddings "
           "included, which is all the paper's table counts. While it runs it needs a "
           "transient (its forward's largest live tensors, then the [B, K, V] logits and the "
           "sampler's fp32 and int32 chunks; breakdown below), freed before the "
           "discriminator's forward: "
           "it adds to the step's peak only what exceeds the discriminator's activations "
           "(`flops.peak_bytes`). Totals are the step's peak.", ""]
    rows = []
    for size, (main, aux) in flops.PAPER_SHAPES.items():
        p = flops.PAPER_MEMORY_GB[size]
        kw = dict(batch=batch_by_size[size], seq_len=flops.PAPER_SEQ_LEN,
                  vocab_size=flops.PAPER_VOCAB, max_positions=flops.PAPER_SEQ_LEN,
                  precision="bf16", frozen_bytes_per_param=2)
        main_j, aux_j = flops.step_memory("electra", main, aux, **kw)
        main_f, aux_f = flops.step_memory("fast-electra", main, aux, **kw)
        peak_j, peak_f = flops.peak_bytes(main_j, aux_j), flops.peak_bytes(main_f, aux_f)
        share_j, share_f = peak_j - main_j.total, peak_f - main_f.total  # aux's part of the peak
        rows += [
            [size, "Original (joint)", f"{p['main']}", _gb(main_j.total), f"{p['aux_joint']}",
             _gb(aux_j.total), _gb(share_j), f"{p['total_joint']}", _gb(peak_j)],
            [size, "Fast-ELECTRA", f"{p['main']}", _gb(main_f.total), f"{p['aux_fast']}",
             _gb(aux_f.total), _gb(share_f), f"{p['total_fast']}", _gb(peak_f)],
            [size, "ratio fast/joint", "1.00", _ratio(main_f.total, main_j.total),
             _ratio(p["aux_fast"], p["aux_joint"]), _ratio(aux_f.total, aux_j.total),
             _ratio(share_f, share_j), _ratio(p["total_fast"], p["total_joint"]),
             _ratio(peak_f, peak_j)],
        ]
        headline[size] = {"aux_held": aux_f.total / aux_j.total, "aux_peak": share_f / share_j,
                          "aux_paper": p["aux_fast"] / p["aux_joint"],
                          "transient_over_main_activations":
                              aux_f.inference_peak / main_f.activations,
                          "total": peak_f / peak_j,
                          "total_paper": p["total_fast"] / p["total_joint"]}
        for mode, m, a, peak in (("electra", main_j, aux_j, peak_j),
                                 ("fast-electra", main_f, aux_f, peak_f)):
            for comp, mem in (("main", m), ("aux", a)):
                for part in ("weights", "grads", "optimizer", "activations", "inference_peak"):
                    rep.add("memory", f"paper-{size}", mode, comp, f"analytic_{part}",
                            getattr(mem, part) / GB, "GB")
                rep.add("memory", f"paper-{size}", mode, comp, "analytic_total", mem.total / GB,
                        "GB")
            rep.add("memory", f"paper-{size}", mode, "aux", "analytic_share_of_peak",
                    (peak - m.total) / GB, "GB")
            rep.add("memory", f"paper-{size}", mode, "total", "analytic_peak", peak / GB, "GB")
            rep.add("memory", f"paper-{size}", mode, "total", "paper",
                    p[f"total_{'joint' if mode == 'electra' else 'fast'}"], "GB")
        rep.add("memory", f"paper-{size}", "fast/joint", "aux", "ratio_held",
                headline[size]["aux_held"], "")
        rep.add("memory", f"paper-{size}", "fast/joint", "aux", "ratio_share_of_peak",
                headline[size]["aux_peak"], "")
    md += _table(["model", "method", "main: paper", "main: ours", "aux: paper",
                  "aux: ours, held", "aux: ours, share of the peak", "total: paper",
                  "total: ours (peak)"], rows)
    md += ["", "Breakdown (GB, ours, same settings):", ""]
    rows = []
    for size, (main, aux) in flops.PAPER_SHAPES.items():
        kw = dict(batch=batch_by_size[size], seq_len=flops.PAPER_SEQ_LEN,
                  vocab_size=flops.PAPER_VOCAB, max_positions=flops.PAPER_SEQ_LEN,
                  precision="bf16", frozen_bytes_per_param=2)
        main_j, aux_j = flops.step_memory("electra", main, aux, **kw)
        _, aux_f = flops.step_memory("fast-electra", main, aux, **kw)
        for label, m in (("main (both)", main_j), ("aux joint", aux_j), ("aux fast", aux_f)):
            rows.append([size, label, _gb(m.weights), _gb(m.grads), _gb(m.optimizer),
                         _gb(m.activations), _gb(m.inference_peak), _gb(m.total)])
    md += _table(["model", "part", "weights", "gradients", "optimizer (master + m + v)",
                  "activations", "inference peak (transient)", "held total"], rows) + [""]

    # measured
    disc, gen = spec.encoders()
    on_cuda = spec.device == "cuda"
    how = ("torch.cuda.max_memory_allocated() after the steps, minus memory_allocated() "
           "before building anything" if on_cuda else
           "peak resident set (VmHWM, reset after the imports and the process group via "
           "/proc/self/clear_refs) minus the resident set at that point")
    rounds = len(measured["disc-only"])
    md += [f"**Measured** ({spec.device}): each mode in its own fresh process "
           f"(`python -m fast_electra_ds.bench --memory-child MODE`; {rounds} round(s), medians, "
           f"range in brackets), which builds its models, engine and batches and trains "
           f"{measured['disc-only'][0]['steps']} steps at the timed shape ({spec.recipe}, "
           f"micro-batch {spec.batch} x {spec.seq_len}, {precision}); memory = {how}. The "
           "auxiliary model's share is the mode's growth minus disc-only's in the same round. "
           "Beside it, the analytic peak at that shape (trained state 16 B/param, "
           f"{precision} activations, frozen generator in {'fp16' if on_cuda else 'fp32'}).", ""]
    analytic = {}
    for mode in ("electra", "fast-electra", "disc-only"):
        m, a = flops.step_memory(mode, disc, gen, batch=spec.batch, seq_len=spec.seq_len,
                                 vocab_size=spec.vocab_size,
                                 max_positions=spec.config().model.max_position_embeddings,
                                 precision=precision, frozen_bytes_per_param=2 if on_cuda else 4)
        peak = flops.peak_bytes(m, a)
        analytic[mode] = (peak, peak - m.total)

    def mib(values: list[float]) -> str:
        med = statistics.median(values) / 2**20
        if len(values) == 1:
            return f"{med:,.1f}"
        return f"{med:,.1f} [{min(values) / 2**20:,.0f}-{max(values) / 2**20:,.0f}]"

    base = [r["growth_bytes"] for r in measured["disc-only"]]
    aux_median = {}
    rows = []
    for mode, runs in measured.items():
        growth = [r["growth_bytes"] for r in runs]
        aux = [g - b for g, b in zip(growth, base)]
        aux_median[mode] = statistics.median(aux)
        a_total, a_aux = analytic.get(mode, (None, None))
        rows.append([mode, mib([r["before_bytes"] for r in runs]),
                     mib([r["peak_bytes"] for r in runs]), mib(growth),
                     f"{a_total / 2**20:,.1f}" if a_total is not None else "-",
                     mib(aux) if mode != "disc-only" else "0",
                     f"{a_aux / 2**20:,.1f}" if a_aux is not None else "-"])
        for metric, values in (("measured_before", [r["before_bytes"] for r in runs]),
                               ("measured_peak", [r["peak_bytes"] for r in runs]),
                               ("measured_growth", growth)):
            rep.add("memory", "timed-shape", mode, "total", metric,
                    statistics.median(values) / 2**20, "MiB")
        rep.add("memory", "timed-shape", mode, "aux", "measured_growth_minus_disc_only",
                aux_median[mode] / 2**20, "MiB")
        if a_total is not None:
            rep.add("memory", "timed-shape", mode, "total", "analytic", a_total / 2**20, "MiB")
    md += _table(["mode", "before (MiB)", "peak (MiB)", "growth (MiB)", "analytic (MiB)",
                  "aux = growth - disc-only (MiB)", "aux analytic (MiB)"], rows)
    ja, fa = aux_median["electra"], aux_median["fast-electra"]
    headline["measured_aux"] = fa / ja if ja > 0 else float("nan")
    analytic_ratio = analytic["fast-electra"][1] / analytic["electra"][1]
    headline["analytic_aux_timed_shape"] = analytic_ratio
    md += ["", f"Measured auxiliary share fast/joint at this shape: {fa / 2**20:.1f} / "
           f"{ja / 2**20:.1f} MiB = {headline['measured_aux']:.2f} (analytic "
           f"{analytic_ratio:.2f}: the recipe's joint generator is narrow, so its own state and "
           f"activations are small next to the paper's full-width auxiliary model). " + (
               "" if on_cuda else "The resident set also holds what the allocator has freed "
               "but not returned and DeepSpeed's buffers, which the analytic count leaves out; "
               "read the differences against the rounds' spread in brackets.")]
    md += [""]
    return headline


# --------------------------------------------------------------------------------------------
# Section 3: time


def time_section(rep: Report, timings: dict[str, Timing], spec: Spec, suite: Suite,
                 notes: dict[str, str], corrupt_s: dict[str, list[float]],
                 breakdown: dict[str, float], engine_note: str) -> dict:
    md = rep.md
    tokens = spec.batch * spec.seq_len
    disc, gen = spec.encoders()
    md += ["## 3. Step time", "",
           f"Shape: {spec.describe()}. One process, {suite.reps} repetitions; each runs every "
           f"mode for {suite.steps_per_rep} step(s) in turn (order rotated each repetition) after "
           f"{suite.warmup_steps} warm-up step(s) per mode, torch intra-op threads "
           f"{torch.get_num_threads()}"
           + (" (on a CPU one by default: on a shared machine, OpenMP threads spin-waiting for "
              "a descheduled peer made 2-thread steps vary 3-10x)" if spec.device == "cpu"
              else "") + ". Step = "
           f"{engine_note}. Median and range over all timed steps; ratios are the median over "
           "repetitions of the two modes' mean step times in the same repetition (paired, so "
           "load from other processes on the machine cancels). \"corrupt\": the part of the "
           "step before the discriminator's engine forward (the frozen generator's forward and "
           "sampling, or the uniform draw), median.", ""]
    rows = []
    for mode, t in timings.items():
        analytic = flops.step_flops(mode, disc, gen, seq_len=spec.seq_len,
                                    vocab_size=spec.vocab_size)
        corrupt_ms = (1000 * statistics.median(corrupt_s[mode]) if corrupt_s.get(mode)
                      else None)
        if corrupt_ms is not None:
            rep.add("time", "timed-shape", mode, "corrupt", "median_corrupt_ms", corrupt_ms, "ms")
        rows.append([mode, f"{1000 * t.median_s:,.1f}", f"{1000 * min(t.step_s):,.1f} - "
                     f"{1000 * max(t.step_s):,.1f}",
                     f"{corrupt_ms:,.1f}" if corrupt_ms is not None else "-",
                     f"{tokens / t.median_s:,.0f}",
                     f"{paired_ratio(timings, mode, 'electra'):.2f}",
                     f"{paired_ratio(timings, mode, 'disc-only'):.2f}",
                     f"{analytic.total * spec.batch / t.median_s / 1e9:.3g}",
                     notes.get(mode, "")])
        rep.add("time", "timed-shape", mode, "step", "median_step_ms", 1000 * t.median_s, "ms")
        rep.add("time", "timed-shape", mode, "step", "min_step_ms", 1000 * min(t.step_s), "ms")
        rep.add("time", "timed-shape", mode, "step", "max_step_ms", 1000 * max(t.step_s), "ms")
        rep.add("time", "timed-shape", mode, "step", "tokens_per_s", tokens / t.median_s,
                "tokens/s")
    md += _table(["mode", "median step (ms)", "range (ms)", "corrupt (ms)", "tokens/s",
                  "vs electra", "vs disc-only", "achieved GFLOP/s", "note"], rows) + [""]
    step_flops = {mode: flops.step_flops(mode, disc, gen, seq_len=spec.seq_len,
                                         vocab_size=spec.vocab_size).total
                  for mode in ("electra", "fast-electra", "disc-only")}
    flop_bound = step_flops["fast-electra"] / step_flops["electra"]
    flop_bound_disc = step_flops["fast-electra"] / step_flops["disc-only"]
    headline = {"fast_joint": paired_ratio(timings, "fast-electra", "electra"),
                "fast_disc": paired_ratio(timings, "fast-electra", "disc-only"),
                "flop_fast_joint": flop_bound, "flop_fast_disc": flop_bound_disc,
                "fast_corrupt_share": statistics.median(corrupt_s["fast-electra"])
                / timings["fast-electra"].median_s,
                "disc_corrupt_share": statistics.median(corrupt_s["disc-only"])
                / timings["disc-only"].median_s}
    if "peer" in timings:
        headline["electra_peer"] = paired_ratio(timings, "electra", "peer")
    headline.update(breakdown)
    for key, value in headline.items():
        seconds_ = key.endswith("_s")
        rep.add("time", "timed-shape", key, "step", "seconds" if seconds_ else "ratio", value,
                "s" if seconds_ else "")
    md += [f"fast/joint = {headline['fast_joint']:.2f} (FLOP ratio at this shape "
           f"{flop_bound:.2f}); fast/disc-only = {headline['fast_disc']:.2f} (FLOP ratio "
           f"{flop_bound_disc:.2f})"
           + (f"; electra/peer = {headline['electra_peer']:.2f}" if "peer" in timings else "")
           + ".", "",
           f"Where the frozen generator's time goes (`corrupt_breakdown`, its two halves timed "
           f"apart, {suite.reps} repetitions, median): forward (`masked_logits`) "
           f"{1000 * breakdown['forward_s']:,.1f} ms, sampling (`sample_replacements`: "
           f"counter-based Gumbel-max over the {spec.vocab_size:,}-token vocabulary, "
           f"{spec.batch * num_predictions(spec.seq_len, flops.MASK_PROB):,} slots) "
           f"{1000 * breakdown['sampling_s']:,.1f} ms. Joint mode runs the same sampler on its "
           "generator's logits.", ""]
    return headline


# --------------------------------------------------------------------------------------------
# Targets


def targets_section(rep: Report, compute: dict, memory: dict, timing: dict,
                    spec: Spec) -> list[str]:
    """One row per target: value, threshold, met, and where missed, by how much and why."""
    _, gen = spec.encoders()
    rows = []

    def row(name: str, value: float, limit: float, why: str) -> None:
        met = value <= limit
        rows.append([name, f"{value:.3f}", f"<= {limit:.2f}",
                     "met" if met else f"missed by {value - limit:.3f}", "" if met else why])
        rep.add("targets", name, "-", "-", "value", value, "")
        rep.add("targets", name, "-", "-", "threshold", limit, "")

    for size in ("base", "large"):
        c = compute[size]
        limit = TARGETS[f"compute_{size}"]
        # fast/joint = (M + a) / (M + 3a), a = auxiliary forward, M = main step:
        # <= limit needs a / M >= (1 - limit) / (3 limit - 1)
        need = (1 - limit) / (3 * limit - 1)
        bound = (f"fast/joint = (M + a)/(M + 3a) (a = auxiliary forward, M = main step) is "
                 f"<= {limit:.2f} only if a/M >= {need:.3f}")
        row(f"compute total fast/joint, {size} (paper's accounting)", c["paper_acct"], limit,
            f"{bound}; the paper's shapes give a/M = {c['aux_over_main_paper']:.3f}, hence "
            f"{c['paper_acct']:.2f}, as in the paper's own table ({c['paper']:.2f}). Only "
            f"precomputing the replacements offline (not implemented here) would go lower: "
            f"M/(M + 3a) = {c['offline_paper']:.2f}")
        row(f"compute total fast/joint, {size} (ours)", c["ours"], limit,
            f"{bound}; ours has a/M = {c['aux_over_main_ours']:.3f}: our generator projects "
            f"onto the vocabulary at the 15% masked positions only (the paper's count: all "
            f"positions), which makes the auxiliary model cheaper in both methods and the "
            f"saving of freezing it smaller")
    for size in ("base", "large"):
        m = memory[size]
        why = ("the frozen fp16 weights (2 B/param, its own embeddings included) against the "
               "trained generator's 16 B/param (without the shared embeddings) and activations")
        row(f"aux memory fast/joint, {size} (held: weights, the paper's accounting)",
            m["aux_held"], TARGETS["aux_memory"], why)
        row(f"aux memory fast/joint, {size} (share of the step's peak)", m["aux_peak"],
            TARGETS["aux_memory"],
            f"{why}; the frozen generator's transient is "
            f"{m['transient_over_main_activations']:.0%} of the discriminator's activations, "
            f"freed before they are allocated")
    t = timing
    sampler = (f"of the frozen generator's time, sampling took {1000 * t['sampling_s']:,.1f} ms "
               f"and its forward {1000 * t['forward_s']:,.1f} ms")
    if t["sampling_s"] > t["forward_s"]:
        sampler += (": the counter-based Gumbel noise (rng.py, a 32-bit hash of every slot x "
                    "vocabulary pair) is most of the auxiliary cost on this device, not the "
                    "generator")
    row(f"step time fast/joint ({spec.recipe}, {spec.device})", t["fast_joint"],
        TARGETS["time_fast_joint"],
        f"the FLOP ratio at this shape is only {t['flop_fast_joint']:.2f} (the recipe's "
        f"generator, ELECTRA's at 1/4 of the width, is a small share of a joint step); "
        f"{sampler}, and joint mode runs the same sampler, so freezing the generator saves "
        f"only its backward and optimizer step")
    row(f"step time fast/disc-only ({spec.recipe}, {spec.device})", t["fast_disc"],
        TARGETS["time_fast_disc"],
        f"the frozen generator's forward is {t['flop_fast_disc'] - 1:.0%} of a disc-only step "
        f"in FLOPs, but its corrupt took {t['fast_corrupt_share']:.0%} of the fast-electra step; "
        f"{sampler} (the uniform draw of disc-only: {t['disc_corrupt_share']:.0%} of its step)")
    if "electra_peer" in t:
        row(f"step time electra/peer ({spec.recipe}, {spec.device})", t["electra_peer"],
            TARGETS["time_electra_peer"],
            "both train the same models in the same engine and the peer does more FLOPs (the "
            "generator's logits at every position, ours at the masked ones), so where ours is "
            "slower the difference is outside the matmuls (e.g. the counter-based sampling "
            "noise over the vocabulary, the metric sums)")
    lines = ["## Targets", "", "Checked here, never asserted in tests.", ""]
    lines += _table(["target", "value", "threshold", "result", "why (where missed)"], rows)
    return lines + [""]


# --------------------------------------------------------------------------------------------
# Plots


def plot(out_prefix: Path, rep: Report) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def value(**match) -> float:
        for r in rep.rows:
            if all(r[k] == v for k, v in match.items()):
                return r["value"]
        raise KeyError(match)

    paths = []
    # compute: stacked main + aux, per accounting and method
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, size in zip(axes, flops.PAPER_SHAPES):
        labels, mains, auxes = [], [], []
        for acct in ("paper", "paper-accounting", "ours"):
            for mode, short in (("electra", "joint"), ("fast-electra", "fast")):
                labels.append(f"{acct.replace('-accounting', ' acct.')}\n{short}")
                mains.append(value(section="compute", case=f"paper-{size}", mode=mode,
                                   component="main", metric=f"gflops_{acct}"))
                auxes.append(value(section="compute", case=f"paper-{size}", mode=mode,
                                   component="aux", metric=f"gflops_{acct}"))
        x = range(len(labels))
        ax.bar(x, mains, label="main")
        ax.bar(x, auxes, bottom=mains, label="auxiliary")
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_title(f"{size}: GFLOPs per sequence (512 tokens)")
        ax.legend()
    fig.tight_layout()
    paths.append(out_prefix.with_name(out_prefix.name + "_flops.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # memory: analytic aux (joint vs fast) and measured growth per mode
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    labels, heights = [], []
    for size in flops.PAPER_SHAPES:
        for mode, short in (("electra", "joint"), ("fast-electra", "fast")):
            labels.append(f"{size}\n{short}")
            heights.append(value(section="memory", case=f"paper-{size}", mode=mode,
                                 component="aux", metric="analytic_total"))
    ax.bar(range(len(labels)), heights, color="tab:orange")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_title("auxiliary model memory, analytic (GB, bf16)")
    ax = axes[1]
    measured = [r for r in rep.rows if r["section"] == "memory" and r["case"] == "timed-shape"
                and r["metric"] == "measured_growth"]
    ax.bar([r["mode"] for r in measured], [r["value"] for r in measured], color="tab:green")
    ax.set_title("measured memory growth per mode (MiB)")
    fig.tight_layout()
    paths.append(out_prefix.with_name(out_prefix.name + "_memory.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # time
    fig, ax = plt.subplots(figsize=(7, 4.2))
    timed = [r for r in rep.rows if r["section"] == "time" and r["metric"] == "median_step_ms"]
    modes = [r["mode"] for r in timed]
    med = [r["value"] for r in timed]
    lo = [m - value(section="time", mode=mode, metric="min_step_ms") for m, mode in zip(med, modes)]
    hi = [value(section="time", mode=mode, metric="max_step_ms") - m for m, mode in zip(med, modes)]
    ax.bar(modes, med, yerr=[lo, hi], capsize=4, color="tab:blue", label="step")
    corrupt = {r["mode"]: r["value"] for r in rep.rows if r["metric"] == "median_corrupt_ms"}
    ax.bar(modes, [corrupt.get(m, 0.0) for m in modes], color="tab:orange",
           label="of which corrupt (frozen generator + sampling, or uniform draw)")
    ax.set_ylabel("median step time (ms), bars: min-max")
    ax.set_title("step time, measured side by side")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_prefix.with_name(out_prefix.name + "_step_time.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------------------------
# The command


def run(*, suite_name: str, device: str, output: str, recipe: str | None, command: str,
        threads: int | None = None, log: Callable[[str], None] = print) -> list[Path]:
    """The whole benchmark; returns the files written."""
    from fast_electra_ds.training.engine import init_distributed

    suite = SUITES[suite_name]
    spec = suite_spec(suite, recipe, device, threads)
    set_threads(spec)
    started = time.perf_counter()
    load_before = os.getloadavg()
    env = init_distributed(spec.config())
    precision = _precision(spec)
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"bench_{device}" + ("" if suite_name == "quick" else f"_{suite_name}")
    modes = [m for m in MODES if m != "peer" or peer_available()]

    with tempfile.TemporaryDirectory(prefix="bench-generator-") as tmp:
        generator_dir = Path(tmp)
        save_frozen_generator(spec, generator_dir)
        log(f"bench: {spec.describe()}")
        built = {name: build_mode(name, spec, env, generator_dir) for name in modes}
        batches = make_batches(spec, env.device)
        log("bench: counting FLOPs of one step per mode")
        measured_flops = {name: m.count_flops(batches[0]) for name, m in built.items()}
        log(f"bench: timing {', '.join(modes)} ({suite.reps} repetitions)")
        timings = time_modes(built, batches, suite, env.device)
        notes = {name: m.note for name, m in built.items()}
        corrupt_s = {name: [seconds(x) for x in m.corrupt_s] for name, m in built.items()}
        breakdown = corrupt_breakdown(built["fast-electra"].frozen, batches, suite.reps,
                                      env.device)
        del built
        log("bench: memory, one fresh process per mode")
        measured_memory = measure_memory(modes, spec, suite.memory_steps, generator_dir,
                                         suite.memory_rounds)

    rep = Report()
    info = machine_info(env.device)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    compute = compute_section(rep, measured_flops, spec)
    memory = memory_section(rep, measured_memory, spec, precision)
    engine_note = (f"one DeepSpeed engine per mode (engine.build_engine: deepspeed.initialize, "
                   f"torch AdamW, {Path(spec.config().ds_config).name}, {precision}): forward, "
                   f"engine.backward, engine.step")
    timing = time_section(rep, timings, spec, suite, notes, corrupt_s, breakdown, engine_note)
    targets = targets_section(rep, compute, memory, timing, spec)
    body = rep.md
    head = [f"# Benchmark: joint ELECTRA vs Fast-ELECTRA ({device}, {suite_name} suite)", "",
            f"Command: `{command}`  ", f"Wall time: {elapsed:.0f} s; load average (1 min) "
            f"{load_before[0]:.2f} before, {load_after[0]:.2f} after  "]
    head += [f"{k}: {v}  " for k, v in info.items()]
    if "peer" not in modes:
        head += [f"peer: `{PEER_PACKAGE}` is not installed; `make bench` installs it "
                 f"(`pip install --no-deps {PEER_PACKAGE}`)  "]
    head += [""]
    headline = _headline(compute, memory, timing, spec)
    md_lines = head + headline + [""] + targets + body
    md_path = out_dir / f"{stem}.md"
    csv_path = out_dir / f"{stem}.csv"
    md_path.write_text("\n".join(md_lines) + "\n")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rep.rows[0]))
        writer.writeheader()
        for r in rep.rows:
            writer.writerow({**r, "value": f"{r['value']:.6g}"})
    paths = [md_path, csv_path, *plot(out_dir / stem, rep)]
    log("bench: wrote " + ", ".join(str(p) for p in paths))
    return paths


def _precision(spec: Spec) -> str:
    from fast_electra_ds.training.ds_config import load_ds_config, precision

    return precision(load_ds_config(spec.config().ds_config))


def _headline(compute: dict, memory: dict, timing: dict, spec: Spec) -> list[str]:
    lines = ["## Headline", "",
             f"- compute, total fast/joint: base {compute['base']['ours']:.2f} ours, "
             f"{compute['base']['paper_acct']:.2f} paper accounting (paper "
             f"{compute['base']['paper']:.2f}); large {compute['large']['ours']:.2f} ours, "
             f"{compute['large']['paper_acct']:.2f} paper accounting (paper "
             f"{compute['large']['paper']:.2f})",
             f"- memory, auxiliary fast/joint (analytic, bf16): base "
             f"{memory['base']['aux_held']:.3f} held, {memory['base']['aux_peak']:.3f} of the "
             f"step's peak (paper {memory['base']['aux_paper']:.3f}); large "
             f"{memory['large']['aux_held']:.3f}, {memory['large']['aux_peak']:.3f} (paper "
             f"{memory['large']['aux_paper']:.3f}); total peak fast/joint base "
             f"{memory['base']['total']:.2f} (paper {memory['base']['total_paper']:.2f}), large "
             f"{memory['large']['total']:.2f} (paper {memory['large']['total_paper']:.2f})",
             f"- step time ({spec.recipe}, {spec.device}, micro-batch {spec.batch} x "
             f"{spec.seq_len}): fast/joint {timing['fast_joint']:.2f}, fast/disc-only "
             f"{timing['fast_disc']:.2f}"
             + (f", electra/peer {timing['electra_peer']:.2f}" if "electra_peer" in timing
                else "")]
    if "measured_aux" in memory:
        lines.append(f"- memory, auxiliary fast/joint at the timed shape: measured "
                     f"{memory['measured_aux']:.2f}, analytic "
                     f"{memory['analytic_aux_timed_shape']:.2f}")
    return lines


def _child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m fast_electra_ds.bench")
    parser.add_argument("--memory-child", required=True, choices=MODES)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--generator-dir", required=True)
    args = parser.parse_args(argv)
    spec = Spec(**json.loads(args.spec))
    result = memory_child(args.memory_child, spec, args.steps, Path(args.generator_dir))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
