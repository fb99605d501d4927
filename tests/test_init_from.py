"""model.init_from / generator.init_from: a run that starts from a released ELECTRA checkpoint.

The "released" checkpoints are folders in the hub's layout (config.json, model.safetensors, the
tokenizer's files) with the data's tokenizer and a shape unlike the tiny recipe's, so that the
shape must come from the checkpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import (
    AutoTokenizer,
    ElectraConfig,
    ElectraForMaskedLM,
    ElectraForPreTraining,
    ElectraModel,
)

from fast_electra_ds.cli import main
from fast_electra_ds.config import load_config
from fast_electra_ds.errors import UserError
from fast_electra_ds.method.modes import validate_config
from fast_electra_ds.training import loop

REPO = Path(__file__).resolve().parent.parent
SHAPE = dict(embedding_size=24, hidden_size=48, num_hidden_layers=3, num_attention_heads=2,
             intermediate_size=96, max_position_embeddings=128)


def _released(folder: Path, cls, tokenizer: Path, *, vocab_delta: int = 0, **shape) -> Path:
    tok = AutoTokenizer.from_pretrained(tokenizer)
    torch.manual_seed(3)
    model = cls(ElectraConfig(vocab_size=len(tok) + vocab_delta, **{**SHAPE, **shape}))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _cfg(run_dir: Path, dataset: Path, *overrides: str):
    cfg = load_config("tiny", [f"run_dir={run_dir}", f"data.paths={dataset}", "device=cpu",
                               "train.global_batch_size=8", "train.micro_batch_size=8",
                               "eval.every=0", "logging.wandb=disabled", *overrides])
    validate_config(cfg)
    return cfg


def test_fast_electra_starts_from_a_released_discriminator(tmp_path, tiny_dataset,
                                                           tiny_tokenizer, tiny_generator,
                                                           capsys):
    start = _released(tmp_path / "released", ElectraForPreTraining, tiny_tokenizer)
    saved = ElectraForPreTraining.from_pretrained(start).state_dict()
    run = tmp_path / "run"
    same = [f"model.init_from={start}", f"generator.path={tiny_generator}",
            "model.hidden_dropout=0.0", "model.attention_dropout=0.0"]
    result = loop.pretrain(_cfg(run, tiny_dataset, *same, "train.steps=2", "optim.lr=1e-12",
                                "optim.weight_decay=0.0"))
    out = capsys.readouterr().out
    assert re.search(rf"model.init_from={start}: shape from the checkpoint \(num_layers \d+ -> 3;",
                     out)
    # its weights, not a fresh initialization (an lr of 1e-12 moves nothing visible)
    trained = result.engine.module.discriminator.state_dict()
    for name, tensor in saved.items():
        torch.testing.assert_close(trained[name], tensor, atol=1e-6, rtol=0, msg=name)
    # the run records where it started and the shape it trained
    model = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert model["init_from"] == str(start)
    assert (model["num_layers"], model["hidden_size"], model["embedding_size"]) == (3, 48, 24)

    # resumes like any run, and exports with the record of where it started
    resumed = loop.pretrain(_cfg(run, tiny_dataset, *same, "train.steps=4", "optim.lr=1e-12",
                                 "optim.weight_decay=0.0"))
    assert resumed.state.step == 4 and "resumed from" in capsys.readouterr().out
    assert main(["export", "--run", str(run), "--output", str(tmp_path / "out")]) == 0
    info = json.loads((tmp_path / "out" / "export.json").read_text())
    assert info["started_from"] == {"discriminator": str(start)}
    exported = ElectraForPreTraining.from_pretrained(tmp_path / "out" / "discriminator")
    assert exported.config.num_hidden_layers == 3


def test_a_bare_encoder_starts_with_a_fresh_head(tmp_path, tiny_dataset, tiny_tokenizer,
                                                 tiny_generator, capsys):
    start = _released(tmp_path / "encoder", ElectraModel, tiny_tokenizer)
    loop.pretrain(_cfg(tmp_path / "run", tiny_dataset, f"model.init_from={start}",
                       f"generator.path={tiny_generator}", "train.steps=1"))
    assert "has no discriminator_predictions: that head starts fresh" in capsys.readouterr().out


def test_electra_mode_starts_both_models(tmp_path, tiny_dataset, tiny_tokenizer, capsys):
    disc = _released(tmp_path / "disc", ElectraForPreTraining, tiny_tokenizer)
    gen = _released(tmp_path / "gen", ElectraForMaskedLM, tiny_tokenizer, hidden_size=16,
                    num_attention_heads=1, intermediate_size=32, num_hidden_layers=2)
    run = tmp_path / "run"
    loop.pretrain(_cfg(run, tiny_dataset, "mode=electra", f"model.init_from={disc}",
                       f"generator.init_from={gen}", "train.steps=1"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["generator"]["num_layers"], config["generator"]["hidden_size"]) == (2, 16)
    assert config["generator"]["init_from"] == str(gen)
    # the two share one embedding table, so the widths must agree
    wide = _released(tmp_path / "wide", ElectraForMaskedLM, tiny_tokenizer, embedding_size=32,
                     hidden_size=16, num_attention_heads=1, intermediate_size=32)
    with pytest.raises(UserError, match="has embeddings 32 wide, the discriminator 24"):
        loop.pretrain(_cfg(tmp_path / "run2", tiny_dataset, "mode=electra",
                           f"model.init_from={disc}", f"generator.init_from={wide}"))


def _refused(tmp_path, dataset, *overrides) -> str:
    run = tmp_path / "refused"
    with pytest.raises(UserError) as e:
        loop.pretrain(_cfg(run, dataset, *overrides))
    assert not run.exists()  # nothing was written: a refused run takes its lock file back
    return str(e.value)


def test_a_checkpoint_that_does_not_fit_the_data_is_refused(tmp_path, tiny_dataset,
                                                            tiny_tokenizer, tiny_generator):
    gen = f"generator.path={tiny_generator}"
    bigger = _released(tmp_path / "bigger", ElectraForPreTraining, tiny_tokenizer, vocab_delta=5)
    (bigger / "tokenizer.json").unlink()  # the config alone says it: vocabulary size
    message = _refused(tmp_path, tiny_dataset, f"model.init_from={bigger}", gen)
    assert "has a vocabulary of" in message and "prepare-data --tokenizer" in message

    # same size, other special tokens: [MASK] and [CLS] swapped in its tokenizer
    swapped = _released(tmp_path / "swapped", ElectraForPreTraining, tiny_tokenizer)
    tok = json.loads((swapped / "tokenizer.json").read_text())
    for entry in tok["added_tokens"]:
        entry["content"] = {"[MASK]": "[CLS]", "[CLS]": "[MASK]"}.get(entry["content"],
                                                                      entry["content"])
    vocab = tok["model"]["vocab"]
    vocab["[MASK]"], vocab["[CLS]"] = vocab["[CLS]"], vocab["[MASK]"]
    (swapped / "tokenizer.json").write_text(json.dumps(tok))
    message = _refused(tmp_path, tiny_dataset, f"model.init_from={swapped}", gen)
    assert "was trained with another tokenizer than the data" in message
    assert "[MASK] is id" in message and f"prepare-data --tokenizer {swapped}" in message

    # a masked LM (a generator) where a discriminator belongs
    mlm = _released(tmp_path / "mlm", ElectraForMaskedLM, tiny_tokenizer)
    message = _refused(tmp_path, tiny_dataset, f"model.init_from={mlm}", gen)
    assert "holds ElectraForMaskedLM" in message and "a masked LM is a generator" in message


def test_init_from_outside_its_modes_is_a_config_error(tmp_path, tiny_dataset, tiny_generator):
    with pytest.raises(UserError, match="model.init_from starts a discriminator, which mode=mlm"):
        _cfg(tmp_path / "r", tiny_dataset, "mode=mlm", "model.init_from=some/where")
    with pytest.raises(UserError, match="mode=fast-electra's generator is frozen"):
        _cfg(tmp_path / "r", tiny_dataset, f"generator.path={tiny_generator}",
             "generator.init_from=some/where")


def test_a_hub_id_without_network_is_a_clear_error(tmp_path, tiny_dataset, tiny_generator):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "fast-electra"), "pretrain", "--config", "tiny",
         f"run_dir={tmp_path / 'run'}", f"data.paths={tiny_dataset}", "device=cpu",
         f"generator.path={tiny_generator}", "model.init_from=no-such-org/electra-nowhere",
         "logging.wandb=disabled"], capture_output=True, text=True, timeout=300, env=env,
        cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model.init_from: cannot read a model config from no-such-org/electra-nowhere" \
        in proc.stderr
    assert "reachable" in proc.stderr and "Traceback" not in proc.stderr
