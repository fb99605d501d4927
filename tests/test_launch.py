"""The launch scripts: bash and Python at once, started both ways on 2 CPU ranks, and exported.

`deepspeed --num_gpus 2 launch_scripts/pretrain_tiny.sh` (the launcher runs the file with Python
on every rank) trains a ZeRO-2 fast-electra run; `bash launch_scripts/pretrain_tiny.sh` (the file
starts the launcher itself, here from a hostfile with one launcher per node, as the SLURM example
does) trains a ZeRO-3 electra run. Both runs are then exported and checked against the weights
that DeepSpeed's own zero_to_fp32.py script (saved next to every checkpoint) writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fast_electra_ds.cli import main
from fast_electra_ds.errors import UserError
from fast_electra_ds.training import launch
from helpers.ports import free_port

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "launch_scripts"
POLYGLOTS = sorted(p for p in SCRIPTS.glob("*.sh") if p.name != "demo.sh")
BIN = Path(sys.executable).parent
# a few steps of the tiny recipe, 8 sequences per rank
STEPS = ["train.steps=3", "train.global_batch_size=16", "train.micro_batch_size=8",
         "eval.every=0", "logging.log_every=1", "device=cpu"]


def test_every_launch_script_is_valid_bash_and_valid_python(tmp_path):
    assert {p.name for p in POLYGLOTS} >= {"pretrain_small.sh", "pretrain_base.sh",
                                           "pretrain_large.sh", "pretrain_tiny.sh",
                                           "train_generator.sh"}
    for script in [*POLYGLOTS, SCRIPTS / "slurm_pretrain.sbatch"]:
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, (script.name, check.stderr)
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path)}  # no __pycache__ in the repo
    for script in POLYGLOTS:
        check = subprocess.run([sys.executable, "-m", "py_compile", str(script)], env=env,
                               capture_output=True, text=True)
        assert check.returncode == 0, (script.name, check.stderr)
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


def test_rank_command_line_from_script_environment_and_arguments():
    env = {"DATA": "d1,d2", "RUN_DIR": "runs/x", "GENERATOR": "g", "DS_CONFIG": "ds.json"}
    argv = launch.rank_argv("large", ["mode=fast-electra"],
                            ["--local_rank=3", "optim.lr=1e-4"], env)
    assert argv == ["--local_rank=3", "pretrain", "--config", "large", "mode=fast-electra",
                    "data.paths=d1,d2", "generator.path=g", "run_dir=runs/x",
                    "ds_config=ds.json", "optim.lr=1e-4"]
    # the recipe: the script's, then RECIPE, then --recipe=; settings may name it
    assert launch.rank_argv("small", ["run_dir=runs/{recipe}-mlm"], [], {}) == \
        ["pretrain", "--config", "small", "run_dir=runs/small-mlm"]
    assert launch.rank_argv("small", ["run_dir=runs/{recipe}-mlm"], [],
                            {"RECIPE": "base"})[2:] == ["base", "run_dir=runs/base-mlm"]
    assert launch.rank_argv("small", [], ["--recipe=large"], {"RECIPE": "base"}) == \
        ["pretrain", "--config", "large"]


def test_launcher_command_from_environment(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-1 slots=8\nnode-2 slots=8\n")
    cmd = launch.launcher_command(
        "launch_scripts/pretrain_large.sh", ["optim.lr=1e-4"],
        {"HOSTFILE": str(hostfile), "GPUS_PER_NODE": "8", "MASTER_ADDR": "node-1",
         "NODE_RANK": "1", "DATA": "data/owt", "RECIPE": "base"})
    assert cmd[:4] == [sys.executable, "-u", "-m", "deepspeed.launcher.runner"]
    assert cmd[4:] == [f"--hostfile={hostfile}", "--master_addr=node-1", "--num_gpus=8",
                       "--no_ssh", "--node_rank=1", "launch_scripts/pretrain_large.sh",
                       "--recipe=base", "data.paths=data/owt", "optim.lr=1e-4"]
    assert launch.launcher_command("s.sh", [], {"NUM_GPUS": "2"})[4:] == ["--num_gpus=2", "s.sh"]

    for env, needle in [
        ({"HOSTFILE": str(tmp_path / "nowhere")}, "does not exist"),
        ({"GPUS_PER_NODE": "eight"}, "GPUS_PER_NODE='eight': expected a whole number"),
        ({"GPUS_PER_NODE": "0"}, ">= 1"),
        ({"GPUS_PER_NODE": "4", "NUM_GPUS": "8"}, "disagree"),
        ({"NODE_RANK": "0"}, "needs HOSTFILE"),
    ]:
        with pytest.raises(UserError, match=needle):
            launch.launcher_command("s.sh", [], env)


def test_bash_form_reports_a_bad_variable_without_starting_anything(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "HOSTFILE": str(tmp_path / "nowhere")}
    run = subprocess.run(["bash", str(SCRIPTS / "pretrain_tiny.sh")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "HOSTFILE=" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


# --------------------------------------------------------------------------------------------
# Real runs: 2 CPU ranks over gloo


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHON": sys.executable,
                "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env}
    result = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=600,
                            cwd=REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


# no dropout: its draws differ across ranks by design, and the ZeRO-2 run is compared with one
# rank below
NO_DROPOUT = ["model.hidden_dropout=0", "model.attention_dropout=0"]


@pytest.fixture(scope="module")
def deepspeed_zero2_run(tmp_path_factory, tiny_dataset, tiny_generator):
    """`deepspeed --num_gpus 2 launch_scripts/pretrain_tiny.sh`, fast-electra, ZeRO-2."""
    run_dir = tmp_path_factory.mktemp("launch") / "zero2"
    result = _run([str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", free_port(),
                   "launch_scripts/pretrain_tiny.sh", *STEPS, *NO_DROPOUT],
                  {"DATA": str(tiny_dataset), "GENERATOR": str(tiny_generator),
                   "RUN_DIR": str(run_dir), "DS_CONFIG": "ds_configs/cpu_zero2_fp32.json"})
    return run_dir, result.stdout


@pytest.fixture(scope="module")
def bash_zero3_electra_run(tmp_path_factory, tiny_dataset):
    """`bash launch_scripts/pretrain_tiny.sh mode=electra`, ZeRO-3: the script starts the
    launcher itself, from a hostfile, as one node of a no-ssh multi-node job (NODE_RANK)."""
    tmp = tmp_path_factory.mktemp("launch")
    hostfile = tmp / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    run_dir = tmp / "zero3"
    result = _run(["bash", "launch_scripts/pretrain_tiny.sh", "mode=electra", *STEPS],
                  {"DATA": str(tiny_dataset), "RUN_DIR": str(run_dir),
                   "DS_CONFIG": "ds_configs/cpu_zero3_fp32.json", "HOSTFILE": str(hostfile),
                   "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": free_port()})
    return run_dir, result.stdout + result.stderr


def _check_run(run_dir: Path, log: str, *, zero: int, mode: str, data: Path) -> None:
    assert "ranks=2" in log and f"zero={zero}" in log and f"mode={mode}" in log, log[-3000:]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["data"]["paths"] == [str(data)] and cfg["train"]["steps"] == 3
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text()
             .splitlines() if json.loads(line)["split"] == "train"]
    assert steps == [1, 2, 3]
    assert (run_dir / "checkpoints" / "step000000003" / "COMMITTED.json").is_file()


def test_deepspeed_launcher_runs_the_script_on_every_rank(deepspeed_zero2_run, tiny_dataset):
    run_dir, log = deepspeed_zero2_run
    _check_run(run_dir, log, zero=2, mode="fast-electra", data=tiny_dataset)


def test_two_ranks_under_zero2_match_one_rank(deepspeed_zero2_run, tiny_dataset, tiny_generator,
                                              tmp_path):
    """The launcher's 2 ranks x 8 under ZeRO-2 and 1 rank x 2 micro-batches of 8, the same
    global batch of 16: data, masks, sampling noise and the calibrated T0 are keyed by global
    sample id or read the same way on every rank, so only float summation order differs. (Each
    micro-batch's loss is its own token mean, as in DeepSpeed and HF, so 1 x 16 would be another
    estimator when the micro-batches' token counts differ: the same micro-batches on both
    sides.)"""
    from fast_electra_ds.config import load_config
    from fast_electra_ds.training import loop

    run_dir, _ = deepspeed_zero2_run
    one = tmp_path / "one"
    loop.pretrain(load_config("tiny", [
        f"data.paths={tiny_dataset}", f"generator.path={tiny_generator}", f"run_dir={one}",
        "ds_config=ds_configs/cpu_zero2_fp32.json", *STEPS, *NO_DROPOUT]))

    def losses(run: Path) -> list[float]:
        return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text()
                                       .splitlines()) if r["split"] == "train"]

    assert len(losses(run_dir)) == len(losses(one)) == 3
    # fp32: after 3 AdamW steps the trajectories agree to ~1e-6 (tolerance 1e-4 relative)
    assert losses(run_dir) == pytest.approx(losses(one), rel=1e-4)


def test_the_module_form_takes_the_launchers_local_rank(capsys):
    """`deepspeed --module fast_electra_ds pretrain ...` runs `python -m fast_electra_ds
    --local_rank=N pretrain ...` on each rank: the CLI accepts the flag before the command."""
    assert main(["--local_rank=1", "config", "--config", "tiny"]) == 0
    assert "run_dir" in capsys.readouterr().out


def test_bash_form_starts_the_launcher_itself(bash_zero3_electra_run, tiny_dataset):
    run_dir, log = bash_zero3_electra_run
    assert "deepspeed.launcher.runner --hostfile=" in log and "--no_ssh --node_rank=0" in log
    _check_run(run_dir, log, zero=3, mode="electra", data=tiny_dataset)


def _zero_to_fp32_script(run_dir: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The consolidated weights as DeepSpeed's offline script (saved with the checkpoint)
    writes them."""
    out = tmp_path / "fp32"
    ckpt = run_dir / "checkpoints"
    subprocess.run([sys.executable, str(ckpt / "zero_to_fp32.py"), str(ckpt), str(out),
                    "--tag", "step000000003"], check=True, capture_output=True,
                   env={**os.environ, "DS_ACCELERATOR": "cpu"})
    return torch.load(out / "pytorch_model.bin", map_location="cpu", weights_only=True)


def _assert_same(hf_state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                 prefix: str) -> None:
    shared = [k for k in hf_state if prefix + k in reference]
    assert len(shared) >= len(hf_state) - 1, (prefix, set(hf_state) - set(shared))
    for k in shared:
        assert torch.equal(hf_state[k], reference[prefix + k]), k


def test_export_of_two_rank_zero2_run(deepspeed_zero2_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, ElectraForPreTraining

    run_dir, _ = deepspeed_zero2_run
    out = tmp_path / "export"
    assert main(["export", "--run", str(run_dir), "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["discriminator", "export.json"]
    reference = _zero_to_fp32_script(run_dir, tmp_path)
    disc = ElectraForPreTraining.from_pretrained(out / "discriminator")
    _assert_same(disc.state_dict(), reference, "discriminator.")
    clf = AutoModelForSequenceClassification.from_pretrained(out / "discriminator", num_labels=2)
    _assert_same({k: v for k, v in clf.state_dict().items() if k.startswith("electra.")},
                 reference, "discriminator.")


def test_export_of_two_rank_zero3_electra_run_gives_both_models(bash_zero3_electra_run,
                                                                tmp_path):
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

    run_dir, _ = bash_zero3_electra_run
    out = tmp_path / "export"
    assert main(["export", "--run", str(run_dir), "--output", str(out)]) == 0
    info = json.loads((out / "export.json").read_text())
    assert info["zero_stage"] == 3 and info["world_size"] == 2 and info["mode"] == "electra"
    reference = _zero_to_fp32_script(run_dir, tmp_path)
    gen = AutoModelForMaskedLM.from_pretrained(out / "generator")
    _assert_same(gen.state_dict(), reference, "generator.")
    clf = AutoModelForSequenceClassification.from_pretrained(out / "discriminator", num_labels=3)
    _assert_same({k: v for k, v in clf.state_dict().items() if k.startswith("electra.")},
                 reference, "discriminator.")
    # the shared embeddings come out equal in both models
    assert torch.equal(gen.electra.embeddings.word_embeddings.weight,
                       clf.electra.embeddings.word_embeddings.weight)
    tok = AutoTokenizer.from_pretrained(out / "discriminator")
    assert len(tok) == clf.config.vocab_size and tok.mask_token == "[MASK]"


@pytest.mark.skipif(not (BIN / "ninja").is_file(), reason="no ninja beside this interpreter")
def test_deepspeed_builds_its_ops_with_the_ninja_beside_the_interpreter(tmp_path, monkeypatch):
    """DeepSpeed JIT-builds its CPU shared-memory op when the process group starts, with the
    first `ninja` on PATH. A system ninja and the venv's hash build commands differently, so
    runs started with and without .venv/bin on PATH rebuilt the op at every alternation (~30 s
    of two compilers each), as did runs from two venvs (one build folder, two include paths).
    Starting the process group puts the venv's ninja first and, in a venv, builds into it
    unless TORCH_EXTENSIONS_DIR is set."""
    import shutil

    from fast_electra_ds.config import load_config
    from fast_electra_ds.training.engine import init_distributed

    other = tmp_path / "bin"
    other.mkdir()
    (other / "ninja").write_text("#!/bin/sh\nexit 1\n")
    (other / "ninja").chmod(0o755)
    monkeypatch.setenv("PATH", f"{other}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    assert shutil.which("ninja") == str(other / "ninja")
    init_distributed(load_config("tiny", ["device=cpu"]))
    assert shutil.which("ninja") == str(BIN / "ninja")
    if sys.prefix != sys.base_prefix:  # make setup's venv
        assert os.environ["TORCH_EXTENSIONS_DIR"] == os.path.join(sys.prefix, "torch_extensions")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "shared"))  # a cluster's choice
    init_distributed(load_config("tiny", ["device=cpu"]))
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "shared")
