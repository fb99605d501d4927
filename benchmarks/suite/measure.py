"""What the benchmark measures, and how:

  FLOPs   FlopCounterMode on one whole training step of each mode (`count_flops`), with the CPU
          flash-attention kernel added to its table (`flop_counter`)
  time    every mode side by side in one process (`time_modes`): repetitions that run each mode
          a few steps in turn (order rotated), the corruption outside the engine timed apart;
          and the frozen generator's two halves, forward and sampling (`corrupt_breakdown`)
  memory  each mode trains a few steps in a fresh process (`measure_memory`, which runs this
          module: `python -m benchmarks.suite.measure --memory-child MODE ...`), so peaks do not
          mix; on CPU its peak resident set (VmHWM, reset after the imports by writing 5 to
          /proc/self/clear_refs) minus its resident set after the imports, on GPU
          torch.cuda.max_memory_allocated
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from benchmarks.suite.modes import MODES, BenchMode, build_mode
from benchmarks.suite.workload import Spec, make_batches, set_threads
from fast_electra_ds.data.masking import MaskedBatch
from fast_electra_ds.method import mlm_head, sampling
from fast_electra_ds.method.frozen_generator import FrozenGenerator

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# FLOPs


def flop_counter() -> FlopCounterMode:
    """FlopCounterMode that also counts the CPU flash-attention kernel, which torch's table
    lacks: SDPA picks it without dropout (eval mode, i.e. the frozen generator on CPU)."""
    def cpu_flash(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash})


def count_flops(mode: BenchMode, batch: MaskedBatch) -> int:
    """FLOPs of one whole training step on `batch`, counted by FlopCounterMode."""
    counter = flop_counter()
    with counter:
        mode.step(batch)
    return counter.get_total_flops()


# --------------------------------------------------------------------------------------------
# Time


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


def _seconds(entry: float | tuple) -> float:
    """A _Stopwatch entry in seconds (a pair of CUDA events: after a synchronization)."""
    if isinstance(entry, tuple):
        begin, end = entry
        return begin.elapsed_time(end) / 1000
    return entry


@dataclass
class Timing:
    step_s: list[float] = field(default_factory=list)  # every timed step
    rep_mean_s: list[float] = field(default_factory=list)  # per repetition
    # modes that corrupt outside the engine: seconds of each timed step's corruption
    corrupt_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.step_s)


def time_modes(modes: dict[str, BenchMode], batches: list[MaskedBatch], *, reps: int,
               steps_per_rep: int, warmup_steps: int, device: torch.device
               ) -> dict[str, Timing]:
    """Interleaved timing: every repetition runs each mode `steps_per_rep` steps, in an order
    rotated by one each repetition, so slow drifts (other processes on the cores, thermal)
    reach all modes alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    names = list(modes)
    for name in names:
        for i in range(warmup_steps):
            modes[name].step(batches[i % len(batches)])
    sync()
    watch = _Stopwatch(device)
    corrupt: dict[str, list] = {name: [] for name in names}
    timings = {name: Timing() for name in names}
    counter = 0
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            mode, times = modes[name], []
            for _ in range(steps_per_rep):
                batch = batches[counter % len(batches)]
                counter += 1
                start = time.perf_counter()
                if mode.corrupts_outside_engine:
                    watch.start()
                    inputs = mode.inputs(batch)
                    watch.stop(corrupt[name])
                    mode.train(inputs)
                else:
                    mode.step(batch)
                sync()
                times.append(time.perf_counter() - start)
            timings[name].step_s.extend(times)
            timings[name].rep_mean_s.append(sum(times) / len(times))
    for name, entries in corrupt.items():
        timings[name].corrupt_s = [_seconds(e) for e in entries]
    return timings


def paired_ratio(timings: dict[str, Timing], num: str, den: str) -> float:
    """Median over repetitions of num's mean step time / den's in the same repetition."""
    return statistics.median(a / b for a, b in zip(timings[num].rep_mean_s,
                                                   timings[den].rep_mean_s))


def corrupt_breakdown(frozen: FrozenGenerator, batches: list[MaskedBatch], reps: int,
                      device: torch.device) -> dict[str, float]:
    """Median seconds of the two halves of FrozenGenerator.corrupt, timed apart: the generator's
    forward (mlm_head.masked_logits) and the sampling (sampling.sample_replacements, the
    counter-based Gumbel-max draw over the vocabulary that joint mode runs as well), eager and
    through torch.compile (train.compile; the first call, which compiles, is the warm-up)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    forward_s, sampling_s, compiled_s = [], [], []
    with torch.no_grad():
        for i in range(reps + 1):  # the first is a warm-up
            b = batches[i % len(batches)]
            sync()
            start = time.perf_counter()
            logits = mlm_head.masked_logits(frozen.model, b.masked_ids, b.attention_mask,
                                            b.positions, b.token_type_ids)  # [B, K, V]
            sync()
            middle = time.perf_counter()
            sampling.sample_replacements(logits, temperature=2.0, seed=0,
                                         sample_ids=b.sample_ids, weights=b.weights)
            sync()
            end = time.perf_counter()
            sampling.sample_replacements(logits, temperature=2.0, seed=0, sample_ids=b.sample_ids,
                                         weights=b.weights, compiled=True)
            sync()
            if i:
                forward_s.append(middle - start)
                sampling_s.append(end - middle)
                compiled_s.append(time.perf_counter() - end)
    return {"forward_s": statistics.median(forward_s),
            "sampling_s": statistics.median(sampling_s),
            "sampling_compiled_s": statistics.median(compiled_s)}


# --------------------------------------------------------------------------------------------
# Memory


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def memory_child(mode: str, spec: Spec, steps: int) -> dict:
    """In a fresh process (see measure_memory): build one mode, train `steps` steps, report its
    peak."""
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
    built = build_mode(mode, spec, env)
    for i in range(steps):
        built.step(batches[i % len(batches)])
    if on_cuda:
        torch.cuda.synchronize(env.device)
        peak = torch.cuda.max_memory_allocated(env.device)
    else:
        peak = _status_kib("VmHWM") * 1024
    return {"mode": mode, "before_bytes": before, "peak_bytes": peak,
            "growth_bytes": peak - before, "steps": steps}


def measure_memory(modes: list[str], spec: Spec, steps: int, rounds: int
                   ) -> dict[str, list[dict]]:
    """`rounds` fresh child processes per mode: {mode: [memory_child's result per round]}.
    On CPU a round's children run at once (each reads only its own process's peak); on a GPU
    one after another, as they share its memory."""
    # a world of its own: not this process's rendezvous (its port is taken)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONWARNINGS"] = "ignore"
    # `benchmarks` is importable from the repository root, wherever this was started from
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))

    def start(mode: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "benchmarks.suite.measure", "--memory-child", mode,
             "--spec", json.dumps(dataclasses.asdict(spec)), "--steps", str(steps)],
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


def _child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite.measure",
                                     description="One memory child process (measure_memory).")
    parser.add_argument("--memory-child", required=True, choices=MODES)
    parser.add_argument("--spec", required=True, help="a workload.Spec as JSON")
    parser.add_argument("--steps", type=int, required=True)
    args = parser.parse_args(argv)
    result = memory_child(args.memory_child, Spec(**json.loads(args.spec)), args.steps)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
