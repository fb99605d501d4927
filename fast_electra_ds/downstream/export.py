"""A run's newest committed checkpoint -> Hugging Face model folders.

    OUTPUT/discriminator/   ElectraForPreTraining + the data's tokenizer   (fast-electra, electra)
    OUTPUT/generator/       ElectraForMaskedLM + the data's tokenizer      (electra, mlm)
    OUTPUT/export.json      where it came from: run, tag, step, mode, ZeRO stage, world size

The discriminator folder is what downstream tasks start from: `AutoModelForSequenceClassification
.from_pretrained(OUTPUT/discriminator, num_labels=N)` (HF's run_glue.py
`--model_name_or_path`, or `fast-electra finetune`) keeps the encoder and adds a fresh head.

Weights: ZeRO stages 1-3 keep the fp32 master weights sharded over the ranks' optimizer files;
DeepSpeed's zero_to_fp32 (`get_fp32_state_dict_from_zero_checkpoint`) consolidates them from the
files alone, on CPU, with no process group and any number of saved ranks. ZeRO-0 saves the whole
module in mp_rank_00_model_states.pt; with a bf16/fp16 DeepSpeed config those are the
half-precision working weights (cast to fp32 here, with a warning, and noted in export.json).
Shapes come from RUN_DIR/config.yaml, the vocabulary and the tokenizer from the data's manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import torch

from fast_electra_ds.config import RunConfig, load_config, resolve_path
from fast_electra_ds.data.corpus import check_output_dir, staged_output_dir
from fast_electra_ds.errors import UserError
from fast_electra_ds.training.checkpoint import MARKER, committed_tags

EXPORT_MARKER = "export.json"
# which of the engine module's sub-models each mode exports (objectives.py names them)
_PARTS = {"fast-electra": ("discriminator",), "electra": ("discriminator", "generator"),
          "mlm": ("generator",)}


def export(run_dir: str, output: str, *, overwrite: bool = False, log=print) -> dict:
    """Write the HF folders of `run_dir`'s newest committed checkpoint into `output`; returns
    the contents of export.json."""
    run, out = Path(run_dir), Path(output)
    cfg = _run_config(run)
    ckpt_dir = run / "checkpoints"
    tags = committed_tags(ckpt_dir)
    if not tags:
        raise UserError(f"{run} has no committed checkpoint (no {ckpt_dir}/step*/{MARKER}); "
                        f"pretraining commits one every checkpoint.save_every steps and at its "
                        f"last step: let the run reach one (or resume it with the same run_dir), "
                        f"then export again")
    tag = tags[-1]
    marker = json.loads((ckpt_dir / tag / MARKER).read_text())
    check_output_dir(out, overwrite=overwrite, marker=EXPORT_MARKER, inputs=[run])
    tokenizer, vocab_size, pad_id = _data_tokenizer(cfg)

    state, saved_dtype = consolidated_state_dict(ckpt_dir, tag, zero_stage=marker["zero_stage"])
    if saved_dtype != torch.float32:
        log(f"warning: ZeRO-0 with {saved_dtype} saves the module's working weights in "
            f"{saved_dtype} only; they are exported as fp32 but carry {saved_dtype} precision "
            f"(ZeRO stages 1-3 keep fp32 master weights, which export uses)")
    models = {part: _load_part(part, state, cfg, vocab_size=vocab_size, pad_id=pad_id)
              for part in _PARTS[cfg.mode]}
    info = {"run_dir": str(run.resolve()), "tag": tag, "step": marker["step"],
            "mode": cfg.mode, "zero_stage": marker["zero_stage"],
            "world_size": marker["world_size"], "weights_from": str(saved_dtype),
            "tokenizer": str(tokenizer.name_or_path), "folders": sorted(models),
            "started_from": {part: start for part, start in (
                ("discriminator", cfg.model.init_from), ("generator", cfg.generator.init_from))
                if start and part in models}}
    with staged_output_dir(out) as tmp:
        for part, model in models.items():
            model.save_pretrained(tmp / part, safe_serialization=True)
            tokenizer.save_pretrained(tmp / part)
        (tmp / EXPORT_MARKER).write_text(json.dumps(info, indent=2) + "\n")
    return info


def load_discriminator(target: str | Path):
    """(ElectraForPreTraining in eval mode, {"name", "source", "step"}) from a run directory
    (its newest committed checkpoint), an export folder, or a HF discriminator folder."""
    from transformers import ElectraForPreTraining

    path = Path(target)
    if (path / "config.yaml").is_file():  # a run directory
        cfg = _run_config(path)
        if "discriminator" not in _PARTS[cfg.mode]:
            raise UserError(f"{path} is a mode={cfg.mode} run: it trained no discriminator")
        ckpt_dir = path / "checkpoints"
        tags = committed_tags(ckpt_dir)
        if not tags:
            raise UserError(f"{path} has no committed checkpoint yet (no {ckpt_dir}/step*/"
                            f"{MARKER}); evaluate it once it has saved one")
        marker = json.loads((ckpt_dir / tags[-1] / MARKER).read_text())
        state, _ = consolidated_state_dict(ckpt_dir, tags[-1], zero_stage=marker["zero_stage"])
        _, vocab_size, pad_id = _data_tokenizer(cfg)
        model = _load_part("discriminator", state, cfg, vocab_size=vocab_size, pad_id=pad_id)
        return model, {"name": path.name, "source": f"{ckpt_dir / tags[-1]}",
                       "step": marker["step"]}
    info = {}
    if (path / EXPORT_MARKER).is_file():  # an export: its discriminator folder
        info = json.loads((path / EXPORT_MARKER).read_text())
        path = path / "discriminator"
    if not (path / "config.json").is_file():
        raise UserError(f"{target} is neither a run directory (config.yaml), an export "
                        f"({EXPORT_MARKER}) nor a HF model folder (config.json)")
    try:
        model, loading = ElectraForPreTraining.from_pretrained(path, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load an ELECTRA discriminator from {path}: {e}") from None
    if loading["missing_keys"]:
        raise UserError(f"{path} is not an ELECTRA discriminator (ElectraForPreTraining): "
                        f"{', '.join(sorted(loading['missing_keys'])[:4])} would be random")
    name = Path(target).name if info else path.name
    return model.eval(), {"name": name, "source": str(path), "step": info.get("step")}


def _run_config(run: Path) -> RunConfig:
    if not run.is_dir():
        raise UserError(f"run directory {run} does not exist; pass the run_dir of a "
                        f"pretraining run")
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} holds no config.yaml, so it is not a pretraining run directory "
                        f"(pretrain writes RUN_DIR/config.yaml when it starts); pass the run_dir "
                        f"of a pretraining run")
    return load_config(str(run / "config.yaml"))


def _data_tokenizer(cfg: RunConfig):
    """(tokenizer, vocab size, pad id) of the data the run was trained on."""
    from fast_electra_ds.data.prepare import read_manifest
    from fast_electra_ds.data.tokenizer import load_tokenizer

    if not cfg.data.paths:
        raise UserError("the run's config.yaml names no data.paths, so its tokenizer is unknown")
    manifest = read_manifest(resolve_path(cfg.data.paths[0]))
    return (load_tokenizer(manifest["tokenizer"]), manifest["vocab_size"],
            manifest["special_token_ids"]["pad"])


def consolidated_state_dict(ckpt_dir: Path, tag: str, *, zero_stage: int
                            ) -> tuple[dict[str, torch.Tensor], torch.dtype]:
    """The engine module's full state dict in fp32 (keys `discriminator.*`, `generator.*`), and
    the dtype the weights were saved in."""
    tag_dir = ckpt_dir / tag
    if zero_stage == 0:
        path = tag_dir / "mp_rank_00_model_states.pt"
        if not path.is_file():
            raise UserError(f"{path} is missing: checkpoint {tag_dir} is incomplete")
        module = torch.load(path, map_location="cpu", weights_only=False)["module"]
        half = {v.dtype for v in module.values() if v.is_floating_point()} - {torch.float32}
        saved = half.pop() if half else torch.float32
        return {k: v.float() if v.is_floating_point() else v for k, v in module.items()}, saved

    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    # zero_to_fp32 narrates every shard (prints, progress bars); the result is what matters here
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag), torch.float32
        except (FileNotFoundError, ValueError) as e:
            raise UserError(f"cannot consolidate ZeRO-{zero_stage} checkpoint {tag_dir}: {e}"
                            ) from None


def _load_part(part: str, state: dict[str, torch.Tensor], cfg: RunConfig, *, vocab_size: int,
               pad_id: int):
    """A freshly built HF model of `part` holding that part's weights from `state`."""
    from fast_electra_ds.method.models import build_discriminator, build_generator

    # built from the shapes alone: a run started from init_from has that checkpoint's shapes in
    # its config, and its weights are in `state`; the starting point is not read again
    model_cfg = dataclasses.replace(cfg.model, init_from="")
    if part == "discriminator":
        model = build_discriminator(model_cfg, vocab_size=vocab_size, pad_id=pad_id)
    else:
        model = build_generator(dataclasses.replace(cfg.generator, init_from=""), model_cfg,
                                vocab_size=vocab_size, pad_id=pad_id)
    prefix = f"{part}."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # a tensor of another shape
        raise UserError(f"the checkpoint's {part} does not fit the shapes in config.yaml (was it "
                        f"edited after training?): {e}") from None
    # The generator's output layer is tied to its word embeddings, so a checkpoint may hold the
    # table under one name only; after loading, the tie makes both names the same tensor.
    tied = {name for name in missing if _is_tied(model, name)}
    missing = [m for m in missing if m not in tied]
    if missing or unexpected:
        raise UserError(f"the checkpoint's {part} does not fit the model config.yaml describes "
                        f"(missing {missing[:5]}, unexpected {unexpected[:5]}): was config.yaml "
                        f"edited after training?")
    return model.eval()


def _is_tied(model, name: str) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    canonical = dict(model.named_parameters())
    return name in params and name not in canonical
