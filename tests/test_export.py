"""`fast-electra export`: a committed checkpoint of any ZeRO stage and mode -> HF folders whose
weights equal the trained module's, and bad input refused with a message saying what to do.

Runs are single-process (a world of one over gloo) so the trained module can be compared with
the export directly; tests/test_launch.py exports 2-rank ZeRO-2 and ZeRO-3 runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fast_electra_ds.cli import main
from fast_electra_ds.config import load_config
from fast_electra_ds.training import loop


def _pretrain(run_dir: Path, dataset: Path, *overrides: str):
    cfg = load_config("tiny", [f"run_dir={run_dir}", f"data.paths={dataset}", "device=cpu",
                               "train.steps=2", "train.global_batch_size=8",
                               "train.micro_batch_size=8", "eval.every=0", *overrides])
    cfg.validate()
    return loop.pretrain(cfg)


def _module_state(engine) -> dict[str, torch.Tensor]:
    """The engine's trained module weights, gathered from their shards under ZeRO-3."""
    import deepspeed

    module = engine.module
    with deepspeed.zero.GatheredParameters(list(module.parameters())):
        return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("mode, ds_config, folders", [
    ("fast-electra", "cpu_fp32", ["discriminator"]),  # ZeRO-0: the module file itself
    ("fast-electra", "cpu_zero3_fp32", ["discriminator"]),
    ("electra", "cpu_zero2_fp32", ["discriminator", "generator"]),
    ("electra", "cpu_zero3_fp32", ["discriminator", "generator"]),
    ("mlm", "cpu_zero2_fp32", ["generator"]),
    ("mlm", "cpu_bf16", ["generator"]),  # ZeRO-0 bf16: the bf16 working weights, in fp32
])
def test_export_equals_the_trained_module(tmp_path, tiny_dataset, tiny_generator, mode,
                                          ds_config, folders):
    from transformers import (
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        ElectraForPreTraining,
    )

    result = _pretrain(tmp_path / "run", tiny_dataset, f"mode={mode}",
                       f"generator.path={tiny_generator}",
                       f"ds_config=ds_configs/{ds_config}.json")
    trained = _module_state(result.engine)
    out = tmp_path / "export"
    assert main(["export", "--run", str(tmp_path / "run"), "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*folders, "export.json"])
    info = json.loads((out / "export.json").read_text())
    assert (info["tag"], info["mode"], info["folders"]) == ("step000000002", mode, folders)
    assert info["weights_from"] == ("torch.bfloat16" if "bf16" in ds_config else "torch.float32")

    loaders = {"discriminator": ElectraForPreTraining, "generator": AutoModelForMaskedLM}
    for part in folders:
        hf = loaders[part].from_pretrained(out / part).state_dict()
        expected = {k[len(part) + 1:]: v for k, v in trained.items()
                    if k.startswith(part + ".")}
        assert set(hf) == set(expected), part
        for k, v in hf.items():
            assert v.dtype == torch.float32 and torch.equal(v, expected[k].float()), (part, k)
        tok = AutoTokenizer.from_pretrained(out / part)
        assert len(tok) == loaders[part].from_pretrained(out / part).config.vocab_size
    if "discriminator" in folders:
        # the path HF's run_glue.py --model_name_or_path takes
        clf = AutoModelForSequenceClassification.from_pretrained(out / "discriminator",
                                                                 num_labels=3)
        for k, v in clf.state_dict().items():
            if k.startswith("electra."):
                assert torch.equal(v, trained["discriminator." + k]), k


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_dataset, tiny_generator) -> Path:
    run_dir = tmp_path_factory.mktemp("export") / "run"
    _pretrain(run_dir, tiny_dataset, f"generator.path={tiny_generator}",
              "checkpoint.save_every=1", "checkpoint.keep_last=2")
    return run_dir


def test_export_takes_the_newest_committed_checkpoint(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    # a newer save that never committed (interrupted) is not taken
    shutil.copytree(run / "checkpoints" / "step000000002", run / "checkpoints" / "step000000003")
    (run / "checkpoints" / "step000000003" / "COMMITTED.json").unlink()
    assert main(["export", "--run", str(run), "--output", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "export.json").read_text())["step"] == 2


def test_export_reads_a_run_that_holds_its_lock(finished_run, tmp_path, tiny_dataset,
                                                tiny_generator):
    """A running run holds run_dir's lock for its whole life; export and evaluate take no
    lock, so they read the committed checkpoints of a run still in progress."""
    from fast_electra_ds.training.run_lock import RunDirLock

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    with RunDirLock(run):
        assert main(["export", "--run", str(run), "--output", str(tmp_path / "out")]) == 0
        assert main(["evaluate", "--judge", str(tiny_generator), "--data", str(tiny_dataset),
                     "--num-sequences", "16", "--batch-size", "16", str(run)]) == 0
    assert json.loads((tmp_path / "out" / "export.json").read_text())["step"] == 2


def test_existing_output_is_refused_unless_overwrite(finished_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", "--run", str(finished_run), "--output", str(out)]) == 0
    before = (out / "discriminator" / "model.safetensors").stat().st_mtime_ns
    assert main(["export", "--run", str(finished_run), "--output", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", "--run", str(finished_run), "--output", str(out),
                 "--overwrite"]) == 0
    assert (out / "discriminator" / "model.safetensors").stat().st_mtime_ns != before
    assert not list(tmp_path.glob("out.tmp-*")) and not list(tmp_path.glob("out.old-*"))
    # a folder that export did not write is never replaced
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["export", "--run", str(finished_run), "--output", str(other),
                 "--overwrite"]) == 2
    assert "holds no export.json" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "mine"


def test_bad_run_directories_are_user_errors(finished_run, tmp_path, capsys):
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(finished_run / "config.yaml", no_ckpt / "config.yaml")
    uncommitted = tmp_path / "uncommitted"
    shutil.copytree(finished_run, uncommitted)
    for marker in uncommitted.glob("checkpoints/*/COMMITTED.json"):
        marker.unlink()
    cases = [
        (tmp_path / "nowhere", "does not exist"),
        (tmp_path, "holds no config.yaml"),
        (no_ckpt, "has no committed checkpoint"),
        (uncommitted, "has no committed checkpoint"),
    ]
    for run, needle in cases:
        code = main(["export", "--run", str(run), "--output", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and "Traceback" not in err, (run, err)
        assert "save_every" in err or needle != "has no committed checkpoint"
    assert not (tmp_path / "out").exists()
