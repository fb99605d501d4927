"""The run configuration's schema: typed sections, each field documented under it.

A run is described by a YAML recipe (a bundled name such as `tiny`, or a path) plus `key=value`
overrides on the command line, e.g. `model.hidden_size=512 optim.lr=1e-4`. Speed and memory
settings (ZeRO stage, precision, bucket sizes) live in the DeepSpeed JSON named by `ds_config`,
not here (see `ds_config.py`).

Every field carries a docstring (the string literal under it); `field_docs()` reads them so that
errors and `fast-electra config --list` can show them. Unknown keys are errors that list the valid
ones; values are range-checked by `validate()` (with the mode's own checks:
`method.modes.validate_config`) before any work starts; `save()` writes the resolved config into
the run directory.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import os
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fast_electra_ds.errors import UserError

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
# eval.judge: mode=electra's own generator, re-sampled at every evaluation
SELF_JUDGE = "self"

Mode = Literal["fast-electra", "electra", "mlm"]
MODES: tuple[str, ...] = typing.get_args(Mode)


@dataclass
class ModelConfig:
    """The discriminator (main model): an ELECTRA encoder, `ElectraForPreTraining`."""

    num_layers: int = 12
    """Transformer layers."""
    hidden_size: int = 256
    """Width of the transformer layers."""
    embedding_size: int = 128
    """Width of the token embeddings (ELECTRA factorizes them; projected to hidden_size)."""
    num_heads: int = 4
    """Attention heads; must divide hidden_size."""
    intermediate_size: int = 1024
    """Width of the feed-forward layers."""
    max_position_embeddings: int = 512
    """Longest sequence the position embeddings cover; data.seq_len may not exceed it."""
    hidden_dropout: float = 0.1
    """Dropout on hidden states."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities."""
    init_from: str = ""
    """Start the discriminator from a released checkpoint: a HF folder or hub id of an
    ElectraForPreTraining (or an ElectraModel, whose head then starts fresh). Its shape replaces
    the fields above (logged, and saved in the run's config); its vocabulary and special tokens
    must be the data's (prepare the data with its tokenizer). Empty: random initialization."""
    head_bias_init: Literal["prior", "zero"] = "prior"
    """The replaced-token head's output bias at initialization. prior: the log-odds of the share
    of tokens that get replaced (masking.mask_prob), so that the first steps predict the base rate
    instead of spending them (and the encoder) on learning it; zero: Hugging Face's default. Not
    used with init_from (the checkpoint's head is kept)."""
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = "auto"
    """Attention of every model of the run (the discriminator, a generator trained here, the
    frozen generator): sdpa (torch's scaled_dot_product_attention), flash_attention_2 (the
    flash-attn package, CUDA with bf16/fp16 only; padded batches run unpadded, varlen), eager (the
    plain matmul-softmax reference); auto = flash_attention_2 where it can run, else sdpa. The
    choice, and why, is logged."""


@dataclass
class GeneratorConfig:
    """The auxiliary masked LM that proposes replacements."""

    path: str = ""
    """mode=fast-electra: the frozen generator, a HF masked-LM folder or hub id (e.g. the output of
    a `mode=mlm` run). Its vocabulary and special tokens must match the data's tokenizer."""
    init_from: str = ""
    """mode=electra/mlm: start the generator trained here from a released ELECTRA generator (an
    ElectraForMaskedLM folder or hub id); its shape replaces the fields below. Under mode=electra
    its embedding width must be the discriminator's (they share one table, the
    discriminator's)."""
    num_layers: int = 12
    """mode=electra/mlm: layers of the generator trained here."""
    hidden_size: int = 64
    """mode=electra/mlm: width of the generator trained here (ELECTRA: 1/4 to 1/3 of the
    discriminator's)."""
    num_heads: int = 1
    """mode=electra/mlm: attention heads of the generator trained here."""
    intermediate_size: int = 256
    """mode=electra/mlm: feed-forward width of the generator trained here."""
    inference_dtype: Literal["auto", "fp16", "bf16", "fp32"] = "auto"
    """mode=fast-electra: dtype the frozen generator runs in. auto = fp16 on GPU (through
    DeepSpeed-Inference), fp32 on CPU. fp16 also runs on CPU (slowly; to check its numerics). A
    weight beyond the dtype's range (fp16: 65504) is refused."""
    kernel_inject: bool = True
    """mode=fast-electra on GPU: try DeepSpeed-Inference kernel injection; used only where the
    architecture has a policy, otherwise the plain fp16 module runs (the log says which)."""


@dataclass
class TemperatureConfig:
    """The sampling temperature: mode=fast-electra's curriculum, T as a function of
    u = step / train.steps, and mode=electra's constant joint_t."""

    schedule: Literal["exponential", "calibrated", "linear", "polynomial", "step",
                      "constant"] = "calibrated"
    """exponential: T = 1 + (t0 - 1) exp(-u / tau) (Fast-ELECTRA, the paper's schedule);
    calibrated: the same curve from a T0 measured on the data instead of t0 (see
    start_entropy); linear and polynomial:
    T = t_end + (t0 - t_end)(1 - u)^power (power 1 for linear); step: t0 to t_end in num_stages
    equal stages; constant: T = t0."""
    t0: float = 2.0
    """Initial temperature (the constant one for schedule=constant); at least 1."""
    tau: float = 0.1
    """Decay rate of the exponential and calibrated schedules, as a fraction of training; > 0."""
    start_entropy: float = 0.9
    """schedule=calibrated: T0 is the temperature at which the frozen generator's replacements,
    on the run's first 256 training sequences, have the entropy H(1) + start_entropy *
    (log V - H(1)): that share of the way from its own distribution (0) to the uniform one (1),
    whatever the generator's strength. In (0, 1). The T0 found is logged."""
    t_end: float = 1.0
    """Final temperature of the linear, polynomial and step schedules."""
    power: float = 2.0
    """Exponent of the polynomial schedule."""
    num_stages: int = 4
    """Number of constant stages of the step schedule."""
    joint_t: float = 1.0
    """mode=electra: the constant temperature of joint training (the original ELECTRA: 1); the
    schedule above is Fast-ELECTRA's and is not used in that mode."""


@dataclass
class DataConfig:
    """Training data: datasets written by `fast-electra prepare-data`."""

    paths: list[str] = field(default_factory=list)
    """Prepared dataset directories; several are blended by `weights`."""
    weights: list[float] = field(default_factory=list)
    """Blend weights, one per path (normalized); empty = proportional to dataset size."""
    seq_len: int = 128
    """Sequence length; must equal the prepared data's and fit the models' position limits."""
    num_workers: int = 1
    """Background processes reading and masking batches (0 = in the training process)."""


@dataclass
class MaskingConfig:
    """Which positions the generator fills in."""

    style: Literal["electra", "bert"] = "electra"
    """electra: selected positions become [MASK] 85%, stay 15%; bert: [MASK] 80%, random 10%,
    stay 10%."""
    mask_prob: float = 0.15
    """Share of the non-special, non-padding positions selected per sequence."""


@dataclass
class OptimConfig:
    """AdamW with linear warmup then linear decay to zero; norms and biases get no weight decay."""

    lr: float = 5e-4
    """Peak learning rate."""
    weight_decay: float = 0.01
    """Decoupled weight decay on matrices (not on norms, biases)."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    adam_eps: float = 1e-6
    """Adam epsilon."""
    warmup_steps: int = 10000
    """Steps of linear warmup from 0 to lr."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping)."""


@dataclass
class TrainConfig:
    """Length, batch and loss weights of the run."""

    steps: int = 1_000_000
    """Optimizer steps in the whole run (the temperature's u is step / steps). 0: the run is as
    long as a budget instead (budget_minutes or budget_flops)."""
    budget_minutes: float = 0.0
    """Train for this many minutes of training steps (evaluation and checkpoints not counted)
    instead of a step count: the LR decay and the temperature follow the fraction of the budget
    spent, and the run stops with a committed checkpoint when it is spent. Needs steps=0."""
    budget_flops: float = 0.0
    """Train for this many FLOPs of our count (method/flops.py; the learning curves' FLOPs
    axis) instead of a step count, as budget_minutes does. Needs steps=0."""
    global_batch_size: int = 128
    """Sequences per optimizer step, over all ranks and accumulation steps."""
    micro_batch_size: int = 128
    """Sequences per forward pass on one rank; gradient accumulation makes up the rest."""
    rtd_weight: float = 50.0
    """lambda in L = L_MLM + lambda * L_RTD (mode=electra)."""
    max_consecutive_skips: int = 5
    """A step whose loss is not finite on any rank is skipped by every rank (no update); this many
    skipped steps in a row stop the run with an error."""
    time_limit_minutes: float = 0.0
    """Save a checkpoint and exit cleanly once the run has gone this long (0 = no limit), e.g. a
    little under a cluster job's limit. SIGTERM and SIGUSR1 do the same at any time."""
    dist_timeout_minutes: float = 30.0
    """Timeout of collective operations (the process group), after which a hung rank fails."""
    compile: bool = False
    """torch.compile (inductor) the module the engine trains (DeepSpeed's engine.compile), the
    frozen generator's encoder and the eager sampler (the same tokens, one fused loop). The first
    steps pay the compilation; shapes are static (fixed seq_len and micro-batch), so training
    compiles once; evaluation batches of another size compile once more."""


@dataclass
class EvalConfig:
    """Held-out evaluation on one yardstick (evaluation.py): a fixed masked LM, the judge,
    corrupts a fixed sample of the valid split once, and every run is scored on those tokens."""

    every: int = 1000
    """Evaluate every this many steps and at the last step (0 = never)."""
    judge: str = "auto"
    """The masked LM whose samples at T = 1 replace the held-out tokens: a HF masked-LM folder or
    hub id (vocabulary and special tokens checked against the data). Runs with the same judge,
    data, eval.seed, eval.num_sequences and masking are scored on the same tokens, so their
    numbers compare (RUN_DIR/eval_set.json names the set). auto: generator.path, i.e. the frozen
    generator of mode=fast-electra; in mode=electra that folder when it exists, else self.
    self: mode=electra's own generator, re-sampled at each evaluation; it changes as it trains,
    so such numbers compare with nothing else."""
    num_sequences: int = 1024
    """Valid sequences in the evaluation set (at most the valid split's), whatever the number of
    ranks or the micro-batch size."""
    seed: int = 0
    """Seeds the evaluation set's sample, masks and judge samples; apart from the run's seed, so
    that runs with different seeds share one set."""


@dataclass
class CheckpointConfig:
    """DeepSpeed checkpoints in run_dir/checkpoints."""

    save_every: int = 1000
    """Save every this many steps (and at the end); 0 = only at the end."""
    keep_last: int = 3
    """Checkpoints kept; older ones are deleted after a newer one is saved."""
    resume: str = "auto"
    """auto: the newest checkpoint in run_dir, or start fresh; none: start fresh; or a path."""
    allow_data_change: bool = False
    """Resume even if data.paths now holds other data than the checkpoint was trained on
    (re-prepared, another tokenizer, other blend weights): logged as a warning instead of an
    error."""


@dataclass
class LoggingConfig:
    """Where metrics go. Rank 0 always writes run_dir/metrics.jsonl."""

    log_every: int = 10
    """Log metrics every this many steps."""
    wandb: Literal["offline", "online", "disabled"] = "offline"
    """wandb mode; offline writes under run_dir/wandb for a later `wandb sync`."""
    wandb_project: str = "fast-electra"
    """wandb project name."""
    tensorboard: bool = False
    """Also write tensorboard event files under run_dir/tensorboard."""
    progress_bar: bool = True
    """Show a progress bar when stdout is a terminal."""
    plateau_patience: int = 1000
    """Warn (console, metrics.jsonl, wandb, tensorboard) when the discriminator has sat on the
    replaced-token-detection plateau - RTD loss within 2% of the binary entropy of the replaced
    share, replaced recall under 1% - for this many steps after warm-up (training/plateau.py);
    0 = never. Judged on the logged windows (logging.log_every)."""


@dataclass
class RunConfig:
    """One pretraining run."""

    mode: Mode = "fast-electra"
    """fast-electra: frozen generator, discriminator only; electra: joint generator+discriminator
    (the original); mlm: train a masked LM (e.g. a generator for fast-electra)."""
    run_dir: str = "runs/default"
    """Where config, logs and checkpoints of this run go."""
    ds_config: str = "ds_configs/cpu_fp32.json"
    """DeepSpeed JSON with speed and memory settings (ZeRO stage, precision, buckets, offload)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = cuda when available, else cpu."""
    kernels: Literal["auto", "on", "off"] = "auto"
    """auto: the fused Triton sampler and RTD loss on CUDA when Triton imports, the torch
    references otherwise; on: require them (error if unavailable; on CPU only under
    TRITON_INTERPRET=1, for tests); off: the torch references."""
    seed: int = 1234
    """Seeds model init, data order, masking and sampling."""
    model: ModelConfig = field(default_factory=ModelConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    temperature: TemperatureConfig = field(default_factory=TemperatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved config as YAML (loadable again with `load_config`)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        os.replace(tmp, path)

    def validate(self, *, check_files: bool = True, more: Iterable[str] = ()) -> None:
        """Raise one UserError listing every out-of-range value (and missing file), and `more`.

        These are the checks of the config alone; what only one mode needs or forbids, the mode
        says (`method.modes.validate_config` passes it as `more`: config imports no mode)."""
        from fast_electra_ds.config.checks import problems as find_problems

        problems = find_problems(self, check_files) + list(more)
        if problems:
            raise UserError("invalid run config:\n  - " + "\n  - ".join(problems))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'model': {'hidden_size': 256}} -> {'model.hidden_size': 256}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# --------------------------------------------------------------------------------------------
# Field docs


@functools.cache
def field_docs() -> dict[str, str]:
    """{'model.hidden_size': 'Width of ...', ...}: the docstring under each config field."""
    per_class: dict[str, dict[str, str]] = {}
    tree = ast.parse(inspect.getsource(inspect.getmodule(RunConfig)))
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs = per_class.setdefault(node.name, {})
        for stmt, nxt in zip(node.body, node.body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())

    out: dict[str, str] = {}

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            sub = hints(cls)[f.name]
            if dataclasses.is_dataclass(sub):
                walk(sub, f"{prefix}{f.name}.")
            else:
                out[prefix + f.name] = per_class.get(cls.__name__, {}).get(f.name, "")

    walk(RunConfig, "")
    return out


def describe() -> str:
    """Every key with its default and doc, for `fast-electra config --list`."""
    defaults = flatten(RunConfig().to_dict())
    return "\n".join(f"{k} = {defaults[k]!r}\n    {doc}" for k, doc in field_docs().items())


