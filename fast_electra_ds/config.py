"""Typed run configuration: what changes the loss curve.

A run is described by a YAML recipe (a bundled name such as `tiny`, or a path) plus `key=value`
overrides on the command line, e.g. `model.hidden_size=512 optim.lr=1e-4`. Speed and memory
settings (ZeRO stage, precision, bucket sizes) live in the DeepSpeed JSON named by `ds_config`,
not here (see `ds_config.py`).

Every field carries a docstring (the string literal under it); `field_docs()` reads them so that
errors and `fast-electra config --list` can show them. Unknown keys are errors that list the valid
ones; values are range-checked by `validate()` before any work starts; `save()` writes the resolved
config into the run directory.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import os
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fast_electra_ds.errors import UserError

RECIPE_DIR = Path(__file__).parent / "recipes"
REPO_ROOT = Path(__file__).resolve().parent.parent

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


@dataclass
class GeneratorConfig:
    """The auxiliary masked LM that proposes replacements."""

    path: str = ""
    """mode=fast-electra: the frozen generator, a HF masked-LM folder or hub id (e.g. the output of
    a `mode=mlm` run). Its vocabulary and special tokens must match the data's tokenizer."""
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
    DeepSpeed-Inference), fp32 on CPU. fp16 is refused on CPU."""
    kernel_inject: bool = True
    """mode=fast-electra on GPU: try DeepSpeed-Inference kernel injection; used only where the
    architecture has a policy, otherwise the plain fp16 module runs (the log says which)."""


@dataclass
class TemperatureConfig:
    """The sampling temperature: mode=fast-electra's curriculum, T as a function of
    u = step / train.steps, and mode=electra's constant joint_t."""

    schedule: Literal["exponential", "linear", "polynomial", "step", "constant"] = "exponential"
    """exponential: T = 1 + (t0 - 1) exp(-u / tau) (Fast-ELECTRA); linear and polynomial:
    T = t_end + (t0 - t_end)(1 - u)^power (power 1 for linear); step: t0 to t_end in num_stages
    equal stages; constant: T = t0."""
    t0: float = 2.0
    """Initial temperature (the constant one for schedule=constant); at least 1."""
    tau: float = 0.1
    """Decay rate of the exponential schedule, as a fraction of training; > 0."""
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
    """Optimizer steps in the whole run (the temperature's u is step / steps)."""
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

    def validate(self, *, check_files: bool = True) -> None:
        """Raise one UserError listing every out-of-range value (and missing file)."""
        problems = _problems(self, check_files)
        if problems:
            raise UserError("invalid run config:\n  - " + "\n  - ".join(problems))


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
            sub = _hints(cls)[f.name]
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


# --------------------------------------------------------------------------------------------
# Loading


def resolve_recipe(name_or_path: str) -> Path:
    """A bundled recipe name (`tiny`, `small`, ...) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"config file {path} does not exist; pass a recipe name "
                            f"({', '.join(list_recipes())}) or the path of a YAML file")
        return path
    bundled = RECIPE_DIR / f"{name_or_path}.yaml"
    if not bundled.is_file():
        raise UserError(f"unknown recipe {name_or_path!r}; bundled recipes: "
                        f"{', '.join(list_recipes())}, or pass the path of a YAML file")
    return bundled


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_config(recipe: str | None, overrides: list[str] = ()) -> RunConfig:
    """Defaults, then the recipe, then `key=value` overrides. Not validated yet: call validate()."""
    cfg = RunConfig()
    if recipe is not None:
        path = resolve_recipe(recipe)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise UserError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
        for key, value in flatten(data).items():
            if key in _MOVED:
                _moved_in_file(key, value, cfg, source=str(path))
            else:
                _set(cfg, key, value, source=str(path))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not of the form key=value "
                            f"(e.g. optim.lr=1e-4)")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set(cfg, key.strip(), value, source="command line")
    return cfg


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
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _set(cfg: RunConfig, key: str, value: Any, source: str) -> None:
    obj: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            _unknown_key(key, source)
        if i == len(parts) - 1:
            break
        obj = getattr(obj, part)
        if not dataclasses.is_dataclass(obj):
            _unknown_key(key, source)
    typ = _hints(type(obj))[parts[-1]]
    if dataclasses.is_dataclass(typ):
        _unknown_key(key, source)
    setattr(obj, parts[-1], _coerce(value, typ, key, source))


# Keys that moved: old key -> (new key or None when the value does not carry over, what to say).
# A file (a recipe, or the config.yaml of a run made before the move) still loads, with a
# warning; on the command line the old key is an error that names the new one.
_MOVED = {"train.eval_every": ("eval.every", "eval.every"),
          "train.eval_batches": (None, "eval.num_sequences (now counted in sequences, not "
                                       "batches)")}


def _moved_in_file(key: str, value: Any, cfg: RunConfig, source: str) -> None:
    new_key, name = _MOVED[key]
    kept = f"; its value {value!r} is used" if new_key else "; its value is ignored"
    warnings.warn(f"config key {key!r} ({source}) is now {name}{kept}", stacklevel=3)
    if new_key:
        _set(cfg, new_key, value, source=source)


def _unknown_key(key: str, source: str) -> typing.NoReturn:
    if key in _MOVED:
        raise UserError(f"config key {key!r} ({source}) is now {_MOVED[key][1]}")
    valid = list(field_docs())
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UserError(f"unknown config key {key!r} ({source}).{hint} Valid keys:\n  "
                    + "\n  ".join(valid))


def _coerce(value: Any, typ: Any, key: str, source: str) -> Any:
    def bad(expected: str) -> typing.NoReturn:
        raise UserError(f"{key}={value!r} ({source}): expected {expected}")

    origin = typing.get_origin(typ)
    if origin is Literal:
        choices = typing.get_args(typ)
        # YAML 1.1 reads a bare on / off (also yes / no, true / false) as a boolean
        if isinstance(value, bool) and {"on", "off"} <= set(choices):
            value = "on" if value else "off"
        if value not in choices:
            bad("one of " + ", ".join(map(str, choices)))
        return value
    if origin is list:
        (item_type,) = typing.get_args(typ)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, list):
            bad(f"a list of {item_type.__name__}")
        return [_coerce(v, item_type, key, source) for v in value]
    if typ is bool:
        if not isinstance(value, bool):
            bad("true or false")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            bad("an integer")
        return value
    if typ is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                bad("a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad("a number")
        return float(value)
    if typ is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)):
            bad("a string")
        return str(value)
    raise AssertionError(f"unhandled config type {typ} for {key}")


# --------------------------------------------------------------------------------------------
# Validation


def resolve_path(path: str) -> Path:
    """Relative paths in a config are relative to the working directory, else the repo root
    (so that bundled recipes name `ds_configs/...` and work from anywhere)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p if (REPO_ROOT / p).exists() else p


def _names_a_folder(path_or_hub_id: str) -> bool:
    """A hub id is "name" or "org/name"; anything else names a local folder."""
    return path_or_hub_id.startswith((".", "/", "~")) or path_or_hub_id.count("/") >= 2


def _problems(cfg: RunConfig, check_files: bool) -> list[str]:
    out: list[str] = []

    def need(ok: bool, msg: str) -> None:
        if not ok:
            out.append(msg)

    m, g, t, d, tr = cfg.model, cfg.generator, cfg.temperature, cfg.data, cfg.train
    for name, shape in (("model", m), ("generator", g)):
        for f in ("num_layers", "hidden_size", "num_heads", "intermediate_size"):
            need(getattr(shape, f) >= 1, f"{name}.{f} must be >= 1, got {getattr(shape, f)}")
        if shape.num_heads >= 1:
            need(shape.hidden_size % shape.num_heads == 0,
                 f"{name}.num_heads={shape.num_heads} must divide "
                 f"{name}.hidden_size={shape.hidden_size}")
    need(m.embedding_size >= 1, f"model.embedding_size must be >= 1, got {m.embedding_size}")
    for f in ("hidden_dropout", "attention_dropout"):
        need(0.0 <= getattr(m, f) < 1.0, f"model.{f} must be in [0, 1), got {getattr(m, f)}")
    need(d.seq_len >= 8, f"data.seq_len must be >= 8, got {d.seq_len}")
    need(d.seq_len <= m.max_position_embeddings,
         f"data.seq_len={d.seq_len} exceeds model.max_position_embeddings="
         f"{m.max_position_embeddings}: lower data.seq_len or raise the model's limit")
    need(d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}")
    need(not d.weights or len(d.weights) == len(d.paths),
         f"data.weights has {len(d.weights)} entries but data.paths has {len(d.paths)}: give one "
         f"weight per path, or none")
    need(all(w > 0 for w in d.weights), f"data.weights must all be > 0, got {d.weights}")

    need(t.t0 >= 1.0, f"temperature.t0 must be >= 1 (T < 1 sharpens past the generator's own "
                      f"distribution), got {t.t0}")
    need(t.tau > 0.0, f"temperature.tau must be > 0, got {t.tau}")
    need(t.t_end >= 1.0 or t.schedule in ("exponential", "constant"),
         f"temperature.t_end must be >= 1, got {t.t_end}")
    need(t.joint_t > 0.0, f"temperature.joint_t must be > 0, got {t.joint_t}")
    need(t.power > 0.0, f"temperature.power must be > 0, got {t.power}")
    need(t.num_stages >= 2, f"temperature.num_stages must be >= 2, got {t.num_stages}")

    need(0.0 < cfg.masking.mask_prob < 1.0,
         f"masking.mask_prob must be in (0, 1), got {cfg.masking.mask_prob}")

    o = cfg.optim
    need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    need(0 <= o.adam_beta1 < 1 and 0 <= o.adam_beta2 < 1,
         f"optim.adam_beta1/2 must be in [0, 1), got {o.adam_beta1}, {o.adam_beta2}")
    need(o.adam_eps > 0, f"optim.adam_eps must be > 0, got {o.adam_eps}")
    need(o.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {o.warmup_steps}")
    need(o.grad_clip >= 0, f"optim.grad_clip must be >= 0, got {o.grad_clip}")

    need(tr.steps >= 1, f"train.steps must be >= 1, got {tr.steps}")
    need(tr.micro_batch_size >= 1, f"train.micro_batch_size must be >= 1, got "
                                   f"{tr.micro_batch_size}")
    need(tr.global_batch_size >= tr.micro_batch_size and
         tr.global_batch_size % tr.micro_batch_size == 0,
         f"train.global_batch_size={tr.global_batch_size} must be a multiple of "
         f"train.micro_batch_size={tr.micro_batch_size}")
    need(tr.rtd_weight > 0, f"train.rtd_weight must be > 0, got {tr.rtd_weight}")
    need(cfg.eval.every >= 0, f"eval.every must be >= 0, got {cfg.eval.every}")
    need(cfg.eval.num_sequences >= 1,
         f"eval.num_sequences must be >= 1, got {cfg.eval.num_sequences}")
    need(bool(cfg.eval.judge), "eval.judge is empty: name a masked LM, or auto / self")
    need(cfg.eval.judge != "self" or cfg.mode == "electra",
         f"eval.judge=self means mode=electra's own generator; in mode={cfg.mode} name the judge "
         f"(or auto)")
    need(tr.max_consecutive_skips >= 1, "train.max_consecutive_skips must be >= 1")
    need(tr.time_limit_minutes >= 0, "train.time_limit_minutes must be >= 0")
    need(tr.dist_timeout_minutes > 0, "train.dist_timeout_minutes must be > 0")
    need(cfg.checkpoint.save_every >= 0, "checkpoint.save_every must be >= 0")
    need(cfg.checkpoint.keep_last >= 1, "checkpoint.keep_last must be >= 1")
    need(cfg.logging.log_every >= 1, "logging.log_every must be >= 1")

    if cfg.mode == "fast-electra":
        need(bool(g.path), "mode=fast-electra needs generator.path: a HF masked-LM folder or hub "
                           "id (train one with mode=mlm)")
    if cfg.mode == "electra":
        need(g.hidden_size <= m.hidden_size,
             f"mode=electra: generator.hidden_size={g.hidden_size} should not exceed "
             f"model.hidden_size={m.hidden_size} (ELECTRA uses 1/4 to 1/3)")

    if check_files:
        need(bool(d.paths), "data.paths is empty: name at least one directory written by "
                            "`fast-electra prepare-data`")
        for p in d.paths:
            need(resolve_path(p).is_dir(), f"data.paths: {p} is not a directory; run "
                                           f"`fast-electra prepare-data --output {p}` first")
        need(not Path(cfg.run_dir).exists() or Path(cfg.run_dir).is_dir(),
             f"run_dir: {cfg.run_dir} exists and is not a directory")
        need(resolve_path(cfg.ds_config).is_file(),
             f"ds_config: {cfg.ds_config} does not exist (bundled: "
             f"{', '.join(sorted(p.name for p in (REPO_ROOT / 'ds_configs').glob('*.json')))})")
        # a hub id is "name" or "org/name"; anything else names a local folder
        if cfg.mode == "fast-electra" and _names_a_folder(g.path):
            need(Path(g.path).expanduser().is_dir(),
                 f"generator.path: {g.path} is not a directory; train a generator first "
                 f"(mode=mlm writes RUN_DIR/generator) or point to a HF masked-LM folder")
        if cfg.eval.every and cfg.mode != "mlm" and _names_a_folder(cfg.eval.judge):
            need(Path(cfg.eval.judge).expanduser().is_dir(),
                 f"eval.judge: {cfg.eval.judge} is not a directory; point it at a HF masked-LM "
                 f"folder (e.g. the generator of a mode=mlm run), or set eval.every=0")
    return out
