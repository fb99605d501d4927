"""Crash safety, exact resume and fault handling (issue 5), on CPU with 2 ranks over gloo.

What is guaranteed, and the test that shows it:
  * a resume in a fresh process repeats the uninterrupted run's steps bit for bit (ZeRO 0/2/3
    x fp32/bf16), and the test notices a missing RNG restore
                                                 test_resume_is_bit_identical_at_every_zero_*
  * kill -9 part-way, then resume=auto: the following steps' losses are bit-identical to an
    uninterrupted run                                    test_kill9_resume_is_bit_identical
  * a crash between the shard writes and the commit leaves the previous checkpoint as the one
    that loads                                           test_crash_before_commit_falls_back
  * a truncated shard, or a `latest` that points nowhere, is a clear error naming the file
                                                         test_broken_checkpoints_are_named
  * an incompatible checkpoint (shapes, vocab, seq_len) is an error, a changed LR a warning
                                                         test_checkpoint_compatibility
  * NaN on one rank: every rank skips that step together; the weights stay finite; K skips in
    a row stop the run                                   test_nan_on_one_rank_*
  * SIGTERM mid-run leaves a committed, loadable checkpoint  test_sigterm_saves_and_exits
  * a 2-rank ZeRO-2 checkpoint resumes on 1 rank (universal conversion)
                                                         test_two_rank_checkpoint_resumes_on_one
  * ...and after the kill -9, metrics.jsonl holds each step once, equal to the uninterrupted
    run's; the interrupted attempt's later entries are kept aside
                                                         test_kill9_resume_is_bit_identical
  * a second run started on a run_dir in use stops before any compute, naming the first; the
    first is untouched and finishes                      test_second_run_on_a_run_dir_in_use_*
  * a save that fails part-way (ENOSPC on one rank, ZeRO-2, 2 ranks) stops the run with an
    error naming the file and the cause; the previous checkpoint is what loads
                                                         test_failing_save_keeps_the_previous_*
  * resuming onto re-prepared data is refused, naming what changed, and allowed with
    checkpoint.allow_data_change=true                    test_resume_onto_other_data_*
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from fast_electra_ds.cli import main
from fast_electra_ds.config import load_config
from fast_electra_ds.training import checkpoint, loop, resume
from helpers.ports import free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HELPER = REPO / "tests" / "helpers" / "fault_run.py"
MANY_RUNS = REPO / "tests" / "helpers" / "many_runs.py"


def _common(dataset, generator, run_dir, *extra):
    return [f"data.paths={dataset}", f"generator.path={generator}", f"run_dir={run_dir}",
            "device=cpu", "eval.every=0", "logging.log_every=1",
            "train.global_batch_size=8", "train.micro_batch_size=4", *extra]


def _torchrun(args: list[str], script: Path = HELPER, **popen) -> subprocess.Popen:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port",
                             free_port(), str(script), *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)


def _run(args: list[str], script: Path = HELPER) -> str:
    proc = _torchrun(args, script=script)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return out


def _records(run_dir: Path, split: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def _losses(run_dir: Path) -> dict[int, float]:
    """step -> loss, the last record of each step (a resumed run appends)."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["split"] == "train":
            out[rec["step"]] = rec["loss"]
    return out


ZERO_DTYPES = ["cpu_fp32", "cpu_bf16", "cpu_zero2_fp32", "cpu_zero2_bf16", "cpu_zero3_fp32",
               "cpu_zero3_bf16"]
KILLED = "cpu_zero2_bf16"  # the configuration the real kill -9 runs with (launch_scripts' ZeRO)


def _eight_steps(ds_config: str) -> list[str]:
    return ["train.steps=8", "checkpoint.save_every=4", f"ds_config=ds_configs/{ds_config}.json"]


def _run_many(tmp_path: Path, name: str, runs: list[list[str]]) -> str:
    """Several runs one after another in one fresh 2-rank launch (helpers/many_runs.py)."""
    spec = tmp_path / f"{name}.json"
    spec.write_text(json.dumps(runs))
    return _run([str(spec)], script=MANY_RUNS)


@pytest.fixture(scope="module")
def references(tmp_path_factory, tiny_dataset, tiny_generator) -> dict[str, Path]:
    """Each ZeRO stage x dtype's 8 uninterrupted steps (checkpoints at 4 and 8): the runs that
    the resumes below must repeat, all in one launch."""
    root = tmp_path_factory.mktemp("references")
    dirs = {c: root / c for c in ZERO_DTYPES}
    _run_many(root, "references", [_common(tiny_dataset, tiny_generator, dirs[c], *_eight_steps(c))
                                    for c in ZERO_DTYPES])
    return dirs


def test_resume_is_bit_identical_at_every_zero_stage_and_dtype(tmp_path, tiny_dataset,
                                                                tiny_generator, references):
    """ZeRO 0/2/3 x fp32/bf16: a fresh process resuming from the step-4 checkpoint repeats the
    uninterrupted run's steps 5-8 bit for bit (the checkpoint holds everything a step draws on:
    weights, optimizer, scheduler, data position, every rank's RNG). The resumes run in one
    launch that never saw the references. Negative control, in the same launch: the same resume
    with each rank's RNG states replaced by fresh ones; dropout draws differ, and so must the
    losses, or this test could not fail."""
    control = tmp_path / "no-rng-checkpoint" / "step000000004"
    shutil.copytree(references["cpu_zero2_fp32"] / "checkpoints" / "step000000004", control)
    states = control / "mp_rank_00_model_states.pt"
    blob = torch.load(states, weights_only=False)
    torch.manual_seed(12345)
    blob["rng_states"] = [checkpoint.rng_state() for _ in blob["rng_states"]]
    torch.save(blob, states)
    marker = json.loads((control / checkpoint.MARKER).read_text())
    marker["files"][states.name] = states.stat().st_size
    (control / checkpoint.MARKER).write_text(json.dumps(marker))

    resumed = {c: tmp_path / c for c in ZERO_DTYPES}
    runs = [_common(tiny_dataset, tiny_generator, resumed[c], *_eight_steps(c),
                    f"checkpoint.resume={references[c] / 'checkpoints' / 'step000000004'}")
            for c in ZERO_DTYPES]
    runs.append(_common(tiny_dataset, tiny_generator, tmp_path / "no-rng",
                        *_eight_steps("cpu_zero2_fp32"), f"checkpoint.resume={control}"))
    out = _run_many(tmp_path, "resumes", runs)
    assert out.count("resumed from") == len(runs)
    for c in ZERO_DTYPES:
        ref, got = _losses(references[c]), _losses(resumed[c])
        assert sorted(got) == [5, 6, 7, 8], (c, sorted(got))
        assert [got[s] for s in range(5, 9)] == [ref[s] for s in range(5, 9)], c
    assert _losses(tmp_path / "no-rng")[5] != _losses(references["cpu_zero2_fp32"])[5]


def _kill9_tree(proc: subprocess.Popen) -> None:
    """SIGKILL to the launcher and every process under it, at once, as a node failure does.
    Not killpg: torchrun starts each rank in a session of its own, so a rank outlives a kill of
    the launcher's group, trains on and commits later checkpoints behind the test's back."""
    launcher = psutil.Process(proc.pid)
    tree = [launcher, *launcher.children(recursive=True)]
    for p in tree:
        p.kill()
    psutil.wait_procs(tree, timeout=60)
    proc.wait()


def test_kill9_resume_is_bit_identical(tmp_path, tiny_dataset, tiny_generator, references):
    """kill -9 of the launcher and every rank mid-step after step 4's checkpoint, then
    resume=auto in the same run_dir: steps 5-8 are the uninterrupted run's, and metrics.jsonl
    holds one history, the killed attempt's later entries kept aside."""
    crashed = tmp_path / "crashed"
    args = _common(tiny_dataset, tiny_generator, crashed, *_eight_steps(KILLED))
    proc = _torchrun(["--slow-after-step", "4", *args])
    marker = crashed / "checkpoints" / "step000000004" / checkpoint.MARKER
    deadline = time.time() + 300
    while not (marker.is_file() and 5 in _losses(crashed)) and time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.1)
    _kill9_tree(proc)
    assert max(_losses(crashed)) < 8  # it really died part-way
    out = _run(args)
    assert "resumed from" in out and "step 4" in out, out[-3000:]
    ref, got = _losses(references[KILLED]), _losses(crashed)
    assert [got[s] for s in range(5, 9)] == [ref[s] for s in range(5, 9)]
    # one history: every step once, in order, each the uninterrupted run's
    steps = [r["step"] for r in _records(crashed)]
    assert steps == list(range(1, 9)), steps
    assert got == ref
    discarded = crashed / "metrics.discarded-after-step4.jsonl"
    assert 5 in {r["step"] for r in map(json.loads, discarded.read_text().splitlines())}


def _in_process(tmp_path, dataset, generator, name, *extra):
    cfg = load_config("tiny", _common(dataset, generator, tmp_path / name, *extra))
    cfg.validate()
    return cfg


def test_crash_before_commit_falls_back(tmp_path, tiny_dataset, tiny_generator, monkeypatch):
    cfg = _in_process(tmp_path, tiny_dataset, tiny_generator, "run", "train.steps=4",
                      "checkpoint.save_every=2")
    real_write = checkpoint.atomic_write

    def crash_on_second_commit(path, text):
        if path.name == checkpoint.MARKER and "step000000004" in str(path):
            raise RuntimeError("injected crash between shard writes and commit")
        real_write(path, text)

    monkeypatch.setattr(checkpoint, "atomic_write", crash_on_second_commit)
    with pytest.raises(RuntimeError, match="injected crash"):
        loop.pretrain(cfg)
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "step000000004").is_dir()  # shards written, never committed
    assert (ckpts / "latest").read_text() == "step000000002"
    monkeypatch.setattr(checkpoint, "atomic_write", real_write)
    from fast_electra_ds.data.loader import open_datasets

    vocab = open_datasets([str(tiny_dataset)], "train")[1].vocab_size
    plan = resume.plan_resume(cfg, world_size=1, vocab_size=vocab, log=print,
                              data=resume.data_record([str(tiny_dataset)], None))
    assert plan.tag == "step000000002"


def test_broken_checkpoints_are_named(tmp_path, tiny_dataset, tiny_generator, capsys):
    args = _common(tiny_dataset, tiny_generator, tmp_path / "run", "train.steps=2",
                   "checkpoint.save_every=2")
    assert main(["pretrain", "--config", "tiny", *args]) == 0
    ckpts = tmp_path / "run" / "checkpoints"
    again = args[:-2] + ["train.steps=4", "checkpoint.save_every=2"]

    def files() -> dict[str, int]:
        return {str(p.relative_to(tmp_path)): p.stat().st_size
                for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name != "run.lock"}

    (ckpts / "latest").write_text("step000000999")
    before = files()
    capsys.readouterr()
    assert main(["pretrain", "--config", "tiny", *again]) == 2
    err = capsys.readouterr().err
    assert str(ckpts / "latest") in err and "step000000999" in err and "does not exist" in err
    assert files() == before  # a refused run writes nothing

    (ckpts / "latest").write_text("step000000002")
    shard = ckpts / "step000000002" / "mp_rank_00_model_states.pt"
    shard.write_bytes(shard.read_bytes()[:1000])
    before = files()
    assert main(["pretrain", "--config", "tiny", *again]) == 2
    err = capsys.readouterr().err
    assert str(shard) in err and "truncated" in err
    assert files() == before

    assert main(["pretrain", "--config", "tiny", *again[:-2],
                 f"checkpoint.resume={tmp_path / 'nothing'}"]) == 2
    assert "no committed checkpoint there" in capsys.readouterr().err
    assert files() == before


def test_checkpoint_compatibility(tmp_path, tiny_dataset, tiny_generator, capsys):
    args = _common(tiny_dataset, tiny_generator, tmp_path / "run", "train.steps=2")
    assert main(["pretrain", "--config", "tiny", *args]) == 0
    capsys.readouterr()
    assert main(["pretrain", "--config", "tiny", *args, "model.hidden_size=32",
                 "model.num_heads=2"]) == 2
    err = capsys.readouterr().err
    assert "does not fit this run" in err and "model.hidden_size: checkpoint 64, now 32" in err
    assert main(["pretrain", "--config", "tiny", *args[:-1], "train.steps=3",
                 "optim.lr=5e-4"]) == 0
    out = capsys.readouterr().out
    assert "warning: resuming with changed settings" in out and "optim.lr: 0.001 -> 0.0005" in out


def test_nan_on_one_rank_every_rank_skips_together(tmp_path, tiny_dataset, tiny_generator):
    run = tmp_path / "nan"
    _run(["--nan-rank", "1", "--nan-steps", "3,4",
          *_common(tiny_dataset, tiny_generator, run, "train.steps=6",
                   "ds_config=ds_configs/cpu_zero2_fp32.json")])
    results = [json.loads((run / f"fault_result_rank{r}.json").read_text()) for r in (0, 1)]
    for r in results:
        assert r["finite"] and r["step"] == 6
        assert r["updates_applied"] == 4  # 6 steps, 2 skipped, on both ranks
    records = _records(run)
    assert [r["step"] for r in records] == [1, 2, 5, 6]  # skipped steps are not averaged in
    assert records[-1]["skipped_steps"] == 2
    assert all(r["loss"] == r["loss"] for r in records)  # no NaN reached the logs


def test_nan_on_one_rank_k_in_a_row_stop_the_run(tmp_path, tiny_dataset, tiny_generator):
    proc = _torchrun(["--nan-rank", "0", "--nan-steps", "2,3,4,5",
                      *_common(tiny_dataset, tiny_generator, tmp_path / "nan", "train.steps=6",
                               "train.max_consecutive_skips=3")])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "the loss was not finite for 3 steps in a row (up to step 4)" in out


def test_sigterm_saves_and_exits(tmp_path, tiny_dataset, tiny_generator):
    run = tmp_path / "term"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", free_port(),
         str(HELPER), "--slow-after-step", "2",
         *_common(tiny_dataset, tiny_generator, run, "train.steps=1000")],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    deadline = time.time() + 300
    while not (run / "metrics.jsonl").is_file() or 3 not in _losses(run):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    # as a cluster scheduler does: SIGTERM to every process of the job (the `deepspeed` runner
    # of a single node does not forward it; its launch.py and the ranks catch it)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert "SIGTERM received" in out, out[-3000:]
    results = [json.loads((run / f"fault_result_rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["stopped_early"] for r in results)
    tags = checkpoint.committed_tags(run / "checkpoints")
    assert tags and (run / "checkpoints" / "latest").read_text() == tags[-1]
    # loadable: resume it on 1 rank and train one more step
    stopped_at = results[0]["step"]
    cfg = load_config("tiny", _common(tiny_dataset, tiny_generator, run,
                                      f"train.steps={stopped_at + 1}"))
    result = loop.pretrain(cfg)
    assert result.state.step == stopped_at + 1


def test_two_rank_checkpoint_resumes_on_one(tmp_path, tiny_dataset, tiny_generator):
    cfg_args = ["ds_config=ds_configs/cpu_zero2_fp32.json", "model.hidden_dropout=0",
                "model.attention_dropout=0", "checkpoint.save_every=4"]
    two, moved = tmp_path / "two", tmp_path / "moved"
    _run_many(tmp_path, "two-ranks", [
        _common(tiny_dataset, tiny_generator, two, "train.steps=8", *cfg_args),
        _common(tiny_dataset, tiny_generator, moved, "train.steps=4", *cfg_args)])
    ref = _losses(two)
    cfg = load_config("tiny", _common(tiny_dataset, tiny_generator, moved, "train.steps=8",
                                      *cfg_args))
    result = loop.pretrain(cfg)  # 1 rank now: converted to a universal checkpoint and loaded
    assert result.state.step == 8 and result.state.consumed_samples == 64
    assert (moved / "checkpoints" / "universal" / "step000000004").is_dir()
    got = _losses(moved)
    # same global batches and weights; only the float summation order differs across layouts
    assert [got[s] for s in range(5, 9)] == pytest.approx([ref[s] for s in range(5, 9)],
                                                          rel=1e-4)


# --------------------------------------------------------------------------------------------
# one writer per run directory, failing saves, changed data


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def test_run_dir_lock_names_its_holder_and_dies_with_it(tmp_path):
    from fast_electra_ds.errors import UserError
    from fast_electra_ds.training.run_lock import RunDirLock

    run_dir = tmp_path / "run"
    held = RunDirLock(run_dir)
    held.acquire()
    with pytest.raises(UserError, match=rf"is in use by another run \(pid {os.getpid()} on host "):
        RunDirLock(run_dir).acquire()
    held.release()
    # a holder killed with the lock held (no clean-up ran): the kernel released it
    code = (f"import os; from fast_electra_ds.training.run_lock import RunDirLock; "
            f"RunDirLock({str(run_dir)!r}).acquire(); os.kill(os.getpid(), 9)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == -9
    assert json.loads((run_dir / "run.lock").read_text())["pid"] != os.getpid()
    with RunDirLock(run_dir):
        assert json.loads((run_dir / "run.lock").read_text())["pid"] == os.getpid()
    # a lock file that says nothing readable still gives a clear error
    held.acquire()
    (run_dir / "run.lock").write_text("garbage")
    with pytest.raises(UserError, match="holder unknown"):
        RunDirLock(run_dir).acquire()
    held.release()


def test_second_run_on_a_run_dir_in_use_stops_before_any_compute(tmp_path, tiny_dataset,
                                                                 tiny_generator, capsys):
    run_dir = tmp_path / "run"
    args = _common(tiny_dataset, tiny_generator, run_dir, "train.steps=10",
                   "checkpoint.save_every=5")
    release = tmp_path / "release"  # the first run holds after step 1 until the test is done
    first = _torchrun(["--hold-after-step", "1", "--release-file", str(release), *args])
    try:
        _wait_for(lambda: (run_dir / "metrics.jsonl").is_file() and _losses(run_dir), first)
        holder = json.loads((run_dir / "run.lock").read_text())
        capsys.readouterr()
        # the CLI's own entry point, in this process: the holder is the launch's rank 0
        assert main(["pretrain", "--config", "tiny", *args]) == 2
        second = capsys.readouterr()
        assert first.poll() is None  # the second stopped while the first still runs
        err = second.err
        assert f"run_dir {run_dir} is in use by another run" in err
        assert f"pid {holder['pid']} on host {holder['host']}" in err and "fault_run.py" in err
        assert "another run_dir" in err and "Traceback" not in err
        assert "resumed from" not in second.out and "[train step" not in second.out
    finally:
        release.touch()
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    assert [r["step"] for r in _records(run_dir)] == list(range(1, 11))
    assert (run_dir / "checkpoints" / "latest").read_text() == "step000000010"


def test_failing_save_keeps_the_previous_checkpoint_loadable(tmp_path, tiny_dataset,
                                                             tiny_generator):
    """ZeRO-2 on 2 ranks: rank 1's optimizer shard of the step-8 checkpoint hits a full disk."""
    run_dir = tmp_path / "run"
    args = _common(tiny_dataset, tiny_generator, run_dir, "train.steps=8",
                   "checkpoint.save_every=4", "ds_config=ds_configs/cpu_zero2_fp32.json")
    proc = _torchrun(["--fail-save-step", "8", "--fail-save-rank", "1", *args])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0
    ckpts = run_dir / "checkpoints"
    assert "CheckpointSaveError: saving checkpoint " + str(ckpts / "step000000008") in out
    assert "failed on rank 1: writing " in out and "No space left on device" in out
    assert "its partial files were removed" in out
    assert f"the previous committed checkpoint {ckpts / 'step000000004'} is the one" in out
    assert not (ckpts / "step000000008").exists()
    assert (ckpts / "latest").read_text() == "step000000004"
    assert checkpoint.committed_tags(ckpts) == ["step000000004"]
    # what loads is the previous checkpoint, and training goes on from it
    out = _run(args)
    assert "resumed from" in out and "step 4" in out
    assert [r["step"] for r in _records(run_dir)] == list(range(1, 9))


def test_resume_onto_other_data_is_refused_unless_allowed(tmp_path, tiny_dataset, tiny_corpus,
                                                          tiny_tokenizer, tiny_generator,
                                                          capsys):
    from fast_electra_ds.data.prepare import read_manifest, prepare_data
    from fast_electra_ds.errors import UserError

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    loop.pretrain(_in_process(tmp_path, data, tiny_generator, "run", "train.steps=2",
                              "checkpoint.save_every=2"))
    run_dir = tmp_path / "run"

    def files() -> dict[str, bytes]:  # the run's own files (the lock file names its holder)
        return {p.name: p.read_bytes() for p in run_dir.iterdir()
                if p.is_file() and p.name != "run.lock"}

    before = files()

    # re-prepared in between (here with another share held out for validation)
    manifest = read_manifest(data)
    shutil.rmtree(data)
    prepare_data([str(tiny_corpus)], tokenizer=str(tiny_tokenizer), seq_len=manifest["seq_len"],
                 output=str(data), valid_fraction=manifest["valid_fraction"] * 2)
    with pytest.raises(UserError) as refused:
        loop.pretrain(_in_process(tmp_path, data, tiny_generator, "run", "train.steps=4"))
    message = str(refused.value)
    assert "trained on other data than data.paths now holds" in message
    assert f"data.paths[0] ({data.resolve()})" in message and "num_sequences" in message
    assert "created_at" in message and "checkpoint.allow_data_change=true" in message
    # refused before anything was written
    assert files() == before
    assert (run_dir / "checkpoints" / "latest").read_text() == "step000000002"

    capsys.readouterr()
    result = loop.pretrain(_in_process(tmp_path, data, tiny_generator, "run", "train.steps=4",
                                       "checkpoint.allow_data_change=true"))
    assert result.state.step == 4
    out = capsys.readouterr().out
    assert "warning: resuming on other data than the checkpoint was trained on" in out
    # changed blend weights count too (the same folder twice, other weights)
    changes = resume.data_changes(resume.data_record([str(data)] * 2, [1.0, 1.0]),
                                  resume.data_record([str(data)] * 2, [3.0, 1.0]))
    assert changes == ["data.weights [1.0, 1.0] -> [3.0, 1.0]"]
