"""Validation of a run config before any work: every out-of-range value and missing file in one
error. What only one mode needs, the mode's class says (method/modes.py); config imports nothing
of method/ (nor of data/, training/, downstream/), so `method.modes.validate_config` joins the
two lists."""

from __future__ import annotations

from pathlib import Path

from fast_electra_ds.config.schema import REPO_ROOT, RunConfig


def resolve_path(path: str) -> Path:
    """Relative paths in a config are relative to the working directory, else the repo root
    (so that bundled recipes name `ds_configs/...` and work from anywhere)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p if (REPO_ROOT / p).exists() else p


def names_a_folder(path_or_hub_id: str) -> bool:
    """A hub id is "name" or "org/name"; anything else names a local folder."""
    return path_or_hub_id.startswith((".", "/", "~")) or path_or_hub_id.count("/") >= 2


def problems(cfg: RunConfig, check_files: bool) -> list[str]:
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
    need(0.0 < t.start_entropy < 1.0,
         f"temperature.start_entropy must be in (0, 1), got {t.start_entropy}")
    need(t.t_end >= 1.0 or t.schedule in ("exponential", "calibrated", "constant"),
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

    budgets = [name for name, v in (("train.budget_minutes", tr.budget_minutes),
                                    ("train.budget_flops", tr.budget_flops)) if v]
    need(tr.budget_minutes >= 0 and tr.budget_flops >= 0,
         "train.budget_minutes and train.budget_flops must be >= 0")
    need(len(budgets) <= 1, "train.budget_minutes and train.budget_flops are both set: a run is "
                            "as long as one budget; keep one")
    if budgets:
        need(tr.steps == 0, f"{budgets[0]} is set together with train.steps={tr.steps}: a run is "
                            f"as long as its steps or its budget, not both; set train.steps=0 to "
                            f"train by the budget, or drop {budgets[0]}")
    else:
        need(tr.steps >= 1, f"train.steps must be >= 1 (or 0 with train.budget_minutes or "
                            f"train.budget_flops), got {tr.steps}")
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
    need(tr.max_consecutive_skips >= 1, "train.max_consecutive_skips must be >= 1")
    need(tr.time_limit_minutes >= 0, "train.time_limit_minutes must be >= 0")
    need(tr.dist_timeout_minutes > 0, "train.dist_timeout_minutes must be > 0")
    need(cfg.checkpoint.save_every >= 0, "checkpoint.save_every must be >= 0")
    need(cfg.checkpoint.keep_last >= 1, "checkpoint.keep_last must be >= 1")
    need(cfg.logging.log_every >= 1, "logging.log_every must be >= 1")
    need(cfg.logging.plateau_patience >= 0,
         "logging.plateau_patience must be >= 0 (0 = never warn)")

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
    return out
