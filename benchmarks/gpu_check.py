"""One-shot GPU check: does everything GPU-only work, and how fast is it? (`make gpu-check`)

    python3 benchmarks/gpu_check.py [--output DIR] [--budget-minutes 8] [--wheels DIR]
    python3 benchmarks/gpu_check.py --dry-run          # the same code on a CPU, tiny shapes

On one H100 / H200, in at most --budget-minutes (8) plus the report, in this order:

  1. packages  what the project imports. A GPU machine without network (no DeepSpeed, megatron-
               core, datasets, pandas or pydantic there) installs the missing ones from the
               wheels in .whl/ (`make gpu-wheels` downloads them, on a machine with network)
               into /tmp/gpu-check-site, for this process and its children.
  2. kernels   every Triton kernel variant compiled for this GPU and loaded on it: registers
               and spills as ptxas and the CUDA driver count them (benchmarks/
               kernel_resources.py --device -> DIR/kernel_resources_cuda.md); a spill fails.
  3. tests     pytest on the GPU: the kernel tests, now on the compiled kernels against their
               torch references (draws independent of the launch config included), the
               ahead-of-time compile tests with this machine's Triton, and every test marked
               `gpu`: the kernels at realistic sizes, the fp16 frozen generator through
               DeepSpeed-Inference, bf16 ZeRO-2 training of every mode under NCCL with the
               fused kernels, then resumed.
  4. sampler   the fused Triton sampler against eager torch (sample_reference) and
               torch.compile of it, at M = 20k rows, V = 30k, H = 768, bf16: time (do_bench
               median) and the extra memory of a call.
  5. steps     step time, tokens/s and MFU of disc-only, fast-electra and electra, at the small
               and base recipes (their micro-batch and seq_len, bf16 ZeRO-2, fused kernels,
               attention `auto`: the best path installed), eager and with train.compile. MFU =
               our FLOPs of the step (method/flops.py) / step time / the GPU's dense bf16 peak.

Writes DIR/bench_cuda.md, bench_cuda.csv and bench_cuda_steps.png (DIR: benchmarks/results).
Nothing is skipped silently: a failing or skipped GPU test, a part that raises, or a part left
out for lack of time is named in the report, and the exit status is 1. A part still running when
the budget is spent is interrupted and reported, so the whole script, installs included, ends
within --budget-minutes and about a minute more: under the device tool's 10 minutes. Targets
(issue 13, checked in the report, never asserted): fast/disc-only <= 1.10 at base,
discriminator (disc-only) MFU >= 40%, the fused sampler >= 2x faster than eager torch with
<= 1/20 of its memory.

--dry-run runs every part on the CPU at tiny shapes, to DIR (default: a temporary folder): the
kernels are compiled for sm_90 without loading them, the GPU tests are only collected, the
sampler is compared eager against compiled with torch.compile's aot_eager backend (the fused
kernel needs a GPU, or Triton's interpreter in its own process: tests/test_kernels_sampler.py),
the steps run at the tiny recipe, eager only (a compiled step differs by its train.compile
override alone). Inductor on CPU is tests/test_compile.py's: its C++ is not what a GPU runs, and
here it cost a minute and a half of CPU with cold caches. It shows that the
script works, not how fast anything is.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / ".whl"
SITE = Path("/tmp/gpu-check-site")
# import name -> distribution, for what the library and its GPU tests import beyond what the GPU
# machine has (torch, transformers, triton, tokenizers, safetensors, pyarrow, numpy, pytest,
# matplotlib, tensorboard and their dependencies), with the dependencies of each
# (benchmarks/gpu_wheels.sh downloads exactly these)
NEEDED = {"deepspeed": "deepspeed", "megatron.core": "megatron-core", "datasets": "datasets",
          "pydantic": "pydantic", "pydantic_core": "pydantic-core",
          "annotated_types": "annotated-types", "typing_inspection": "typing-inspection",
          "hjson": "hjson", "einops": "einops", "msgpack": "msgpack", "ninja": "ninja",
          "psutil": "psutil", "cpuinfo": "py-cpuinfo", "dill": "dill",
          "multiprocess": "multiprocess", "pandas": "pandas", "tzdata": "tzdata",
          "xxhash": "xxhash"}
# the kernel tests and the `gpu` tests; the kernel tests run on CUDA wherever CUDA is present
GPU_TESTS = ["tests/test_kernels_sampler.py", "tests/test_kernels_rtd.py",
             "tests/test_kernel_compile.py",
             "tests/test_fused_training.py", "tests/test_gpu_training.py",
             "tests/test_generator.py::test_frozen_generator_on_cuda_matches_cpu"]
# skips that are by design on a GPU machine: the interpreter re-run is for CPU machines only
EXPECTED_SKIPS = ("the kernel tests run in this process",)
# dense bf16 peak of the GPUs this check is sized for, FLOP/s (NVIDIA's data sheets, SXM)
BF16_PEAK = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "B200": 2250e12}
TARGETS = {"fast_disc_base": 1.10, "disc_mfu": 0.40, "sampler_speedup": 2.0,
           "sampler_memory": 1 / 20}


class PartTimeout(Exception):
    """Raised in a part when the check's time budget is spent."""


@dataclass
class Check:
    """Everything the report is made of."""

    dry_run: bool
    started: float = field(default_factory=time.perf_counter)
    budget_s: float = 480.0
    failures: list[str] = field(default_factory=list)  # each names what broke or was left out
    sections: list[str] = field(default_factory=list)  # Markdown
    rows: list[dict] = field(default_factory=list)  # the CSV
    targets: list[str] = field(default_factory=list)  # Markdown list items

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left_s(self) -> float:
        return self.budget_s - self.elapsed()

    def fail(self, what: str) -> None:
        self.failures.append(what)
        print(f"gpu-check: FAILED: {what}", flush=True)

    def row(self, part: str, name: str, metric: str, value: float | str, unit: str = "") -> None:
        self.rows.append({"part": part, "name": name, "metric": metric, "value": value,
                          "unit": unit})

    def run_part(self, name: str, fn, *args) -> None:
        """A part that raises is a failure with its traceback in the report, and the rest runs.
        A part still running when the budget is spent is interrupted (SIGALRM: between Python
        bytecodes, so a long CUDA call or a subprocess finishes first) and reported as such. The
        budget is the GPU machine's time: a dry run is not held to it."""
        print(f"gpu-check: {name} ({self.elapsed():.0f} s in)", flush=True)
        if not self.dry_run and self.left_s() <= 0:
            self.fail(f"{name}: not run (the {self.budget_s:.0f} s budget is spent)")
            return

        def stop(signum, frame):
            raise PartTimeout(f"stopped at the end of the {self.budget_s:.0f} s budget")

        previous = signal.signal(signal.SIGALRM, stop)
        if not self.dry_run:
            signal.setitimer(signal.ITIMER_REAL, self.left_s())
        try:
            fn(self, *args)
        except Exception as exc:  # noqa: BLE001 (reported, and the exit status says so)
            self.fail(f"{name}: {type(exc).__name__}: {exc}")
            self.sections.append(f"## {name}\n\nFAILED:\n\n```\n{traceback.format_exc()}```\n")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------------------------
# 1. packages


def _importable(module: str) -> bool:
    """find_spec without importing: for "megatron.core" it imports "megatron" first, and raises
    ModuleNotFoundError, not None, where that parent is missing."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def ensure_packages(check: Check, wheel_dir: Path) -> None:
    missing = [mod for mod in NEEDED if not _importable(mod)]
    lines = ["## 1. Packages", ""]
    if missing:
        wheels = sorted(wheel_dir.glob("*.whl"))
        if not wheels:
            raise RuntimeError(f"missing {', '.join(NEEDED[m] for m in missing)} and no wheels "
                               f"in {wheel_dir}: run `make gpu-wheels` on a machine with network "
                               "and bring .whl/ along, or pip install them")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(SITE),
                        *map(str, wheels)], check=True)
        sys.path.insert(0, str(SITE))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(SITE), os.environ.get("PYTHONPATH")]))
        # the wheels' executables (ninja, which DeepSpeed's just-in-time op builds run)
        os.environ["PATH"] = os.pathsep.join([str(SITE / "bin"), os.environ.get("PATH", "")])
        importlib.invalidate_caches()
        still = [m for m in missing if not _importable(m)]
        if still:
            raise RuntimeError(f"still missing after installing {wheel_dir}: {', '.join(still)}")
        lines.append(f"Installed from {wheel_dir.name}/ (into {SITE}): "
                     f"{', '.join(NEEDED[m] for m in missing)}.")
    import torch

    versions = {"python": sys.version.split()[0], "torch": torch.__version__}
    for dist in ("transformers", "triton", "deepspeed", "megatron-core", "datasets", "pydantic"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        versions["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, " \
                          f"{props.multi_processor_count} SMs"
    elif not check.dry_run:
        raise RuntimeError("no CUDA device: this check is for a GPU machine (--dry-run on CPU)")
    lines += ["", "| what | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in versions.items()]
    for k, v in versions.items():
        check.row("packages", k, "version", v)
    check.sections.append("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# 2. kernels


def check_kernels(check: Check, out_dir: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import kernel_resources

    out = out_dir / "kernel_resources_cuda.md"
    # dry run: the static path for sm_90 (H100 / H200), nothing loaded
    bad = kernel_resources.run(out, targets=[90] if check.dry_run else None,
                               device=not check.dry_run, candidates=False,
                               workers=len(os.sched_getaffinity(0)),
                               command=" ".join(sys.argv))
    lines = ["## 2. Kernels", "",
             f"Every Triton kernel variant compiled for "
             f"{'sm_90 (dry run: not loaded)' if check.dry_run else 'this GPU and loaded'}: "
             f"registers, spills, shared memory, occupancy in [{out.name}]({out.name}).", "",
             f"{bad} default launches spill or fail to compile."]
    if bad:
        check.fail(f"kernels: {bad} default launches spill or fail (see {out.name})")
    check.rows.append({"part": "kernels", "name": "default launches", "metric": "spill_or_fail",
                       "value": bad, "unit": ""})
    check.sections.append("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# 3. tests


def run_tests(check: Check, out_dir: Path) -> None:
    junit = out_dir / "gpu_tests.xml"
    if check.dry_run:  # only show that the GPU tests are collected
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu or not gpu", "--collect-only", "-q",
               *GPU_TESTS]
    else:
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu or not gpu", "-q", "-rs",
               f"--junitxml={junit}", *GPU_TESTS]
    timeout = max(60.0, check.left_s() - 150)  # leave time for the measurements
    env = {**os.environ, "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), str(REPO / "kernels"),
                                                       os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        check.fail(f"tests: pytest ran past {timeout:.0f} s")
        check.sections.append(f"## 3. Tests\n\npytest ran past {timeout:.0f} s and was stopped\n")
        return
    seconds = time.perf_counter() - start
    tail = (proc.stdout + proc.stderr)[-3000:]
    lines = ["## 3. Tests", "", f"`{shlex.join(cmd[2:])}` ({seconds:.0f} s)", ""]
    if check.dry_run:
        if proc.returncode != 0:
            check.fail("tests: the GPU tests were not collected")
        lines += ["Dry run: collected only.", "", "```", tail.strip()[-1500:], "```"]
        check.sections.append("\n".join(lines) + "\n")
        return
    counts, problems = junit_outcomes(junit)
    if proc.returncode != 0 or problems or not counts["passed"]:
        check.fail(f"tests: {counts['failed']} failed, {counts['skipped']} skipped "
                   f"(pytest exit {proc.returncode})")
    lines.append(f"{counts['passed']} passed, {counts['failed']} failed, "
                 f"{counts['skipped']} skipped (a skip of a GPU test is a failure here)")
    lines += [f"- {p}" for p in problems]
    lines += ["", "<details><summary>pytest output (end)</summary>", "", "```", tail.strip(),
              "```", "", "</details>"]
    for k, v in counts.items():
        check.row("tests", "gpu tests", k, v)
    check.sections.append("\n".join(lines) + "\n")


def junit_outcomes(junit: Path) -> tuple[dict[str, int], list[str]]:
    """({passed, failed, skipped}, a line per failed or skipped test) from pytest's JUnit XML.
    Every skip counts, except EXPECTED_SKIPS: on a GPU machine a GPU test has no reason to."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    problems = []
    if not junit.is_file():
        return counts, [f"no test report at {junit}"]
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        failed = case.find("failure")
        if failed is None:
            failed = case.find("error")
        skipped = case.find("skipped")
        if failed is not None:
            counts["failed"] += 1
            problems.append(f"{name}: {failed.get('message', '')[:300]}")
        elif skipped is not None:
            reason = skipped.get("message", "")
            if any(r in reason for r in EXPECTED_SKIPS):
                continue
            counts["skipped"] += 1
            problems.append(f"{name} SKIPPED: {reason[:300]}")
        else:
            counts["passed"] += 1
    return counts, problems


# --------------------------------------------------------------------------------------------
# 4. the sampler


def measure_sampler(check: Check) -> None:
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    import kernel_sampler as ks

    if check.dry_run:
        M, V, H, dtype, device, methods = 256, 1000, 64, torch.float32, "cpu", ("eager",
                                                                              "compiled")
    else:
        M, V, H, dtype, device = 20000, 30000, 768, torch.bfloat16, "cuda"
        methods = ("fused", "eager", "compiled")
    inputs = ks.make_inputs(M, V, H, dtype, device)
    results, outputs = {}, {}
    # The dry run compiles with aot_eager: dynamo's capture and the comparison are checked;
    # inductor's code for a CPU (C++, ~30 s to build on a cold cache) is not what a GPU runs,
    # and tests/test_compile.py checks it
    backend = "aot_eager" if check.dry_run else "inductor"
    for method in methods:
        fn = ks.sampler(method, backend)
        if device == "cuda":
            outputs[method], extra, ms = ks.measure_cuda(fn, inputs)
        else:
            fn(*inputs)  # compile outside the measurement
            outputs[method] = fn(*inputs)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn(*inputs)
                times.append(time.perf_counter() - t0)
            ms, extra = 1000 * statistics.median(times), float("nan")
        results[method] = (ms, extra)
        check.row("sampler", method, "time", ms, "ms")
        check.row("sampler", method, "extra_memory", extra, "bytes")
    eager_ms, eager_extra = results["eager"]
    lines = ["## 4. Sampler", "",
             f"M={M}, V={V}, H={H}, {str(dtype).removeprefix('torch.')}, T=1.5, on {device}: "
             "the decoder matmul, the two-level Gumbel-max draw, logsumexp and E[z]. Time: "
             + ("triton.testing.do_bench median" if device == "cuda" else "median of 3 calls")
             + "; extra memory: max_memory_allocated during a call minus before it. "
             f"compiled: torch.compile, backend {backend}.", "",
             "| method | time | speed-up vs eager | extra memory | vs eager |",
             "|---|---|---|---|---|"]
    for method, (ms, extra) in results.items():
        memory = "n/a (CPU)" if device == "cpu" else \
            f"{extra / 2**20:,.1f} MiB | {extra / eager_extra:.4f}"
        lines.append(f"| {method} | {ms:.2f} ms | {eager_ms / ms:.2f}x | {memory} |")
    for method in methods:
        if method != "eager":
            same = (outputs[method].tokens == outputs["eager"].tokens).float().mean().item()
            lines.append(f"\n{method}: tokens equal to eager's on {same:.4%} of rows (near-ties "
                         "may be reordered by another summation order)")
            check.row("sampler", method, "tokens_equal_share", same)
            if same < 0.99:
                check.fail(f"sampler: {method} draws differ from eager on {1 - same:.2%} of rows")
    if "fused" in results:
        speedup, memory = eager_ms / results["fused"][0], results["fused"][1] / eager_extra
        lines += ["", _target("fused sampler speed-up vs eager", speedup,
                              TARGETS["sampler_speedup"], at_least=True),
                  _target("fused sampler memory / eager", memory, TARGETS["sampler_memory"])]
    else:
        lines += ["", "Dry run: the fused kernel is not run here (no GPU)."]
    check.sections.append("\n".join(lines) + "\n")


def _target(name: str, value: float, limit: float, *, at_least: bool = False) -> str:
    met = value >= limit if at_least else value <= limit
    return f"- {name}: {value:.3f} ({'>=' if at_least else '<='} {limit:g}: " \
           f"{'met' if met else 'missed'})"


# --------------------------------------------------------------------------------------------
# 5. training steps


STEP_MODES = ("disc-only", "fast-electra", "electra")


def measure_steps(check: Check, plan: list[tuple[str, bool]]) -> None:
    import torch

    from benchmarks.suite import measure
    from benchmarks.suite.modes import build_mode
    from benchmarks.suite.workload import ELECTRA_VOCAB, Spec, make_batches, \
        save_frozen_generator
    from fast_electra_ds.config import load_config
    from fast_electra_ds.training.engine import init_distributed

    device = "cpu" if check.dry_run else "cuda"
    peak = None
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in BF16_PEAK.items() if k in name), None)
    mfu_note = (f"MFU: our FLOPs of the step / step time / {peak / 1e12:.0f} TFLOP/s dense bf16."
                if peak else "MFU: n/a (no known bf16 peak for this device).")
    lines = ["## 5. Training steps", "",
             "One DeepSpeed engine per mode on the same synthetic full-length batches, timed side "
             "by side (measure.time_modes: repetitions rotate the order of the modes; medians). "
             + mfu_note, "",
             "| recipe | compile | mode | step | tokens/s | MFU | step / disc-only's | note |",
             "|---|---|---|---|---|---|---|---|"]
    env = None
    try:  # the table so far is reported even when the budget stops the part
        for recipe, compiled in plan:
            # a compiled recipe costs its compilation too: leave it out, by name, when time is short
            need_s = 150 if compiled else 60
            if not check.dry_run and check.left_s() < need_s:
                check.fail(f"steps: {recipe} {'compiled' if compiled else 'eager'} left out "
                           f"({check.left_s():.0f} s of the budget left)")
                lines.append(f"| {recipe} | {compiled} | - | not run: time budget | | | | |")
                continue
            cfg = load_config(recipe)
            batch, seq_len = (2, 32) if check.dry_run else (cfg.train.micro_batch_size,
                                                            cfg.data.seq_len)
            overrides = ("train.compile=true",) if compiled else ()
            if device == "cuda":
                overrides += ("kernels=on",)
            with tempfile.TemporaryDirectory(prefix="gpu-check-generator-") as generator_dir:
                spec = Spec(recipe=recipe, batch=batch, seq_len=seq_len,
                            vocab_size=1000 if check.dry_run else ELECTRA_VOCAB, device=device,
                            threads=0, generator_dir=generator_dir, overrides=overrides)
                if env is None:
                    env = init_distributed(spec.config())
                save_frozen_generator(spec)
                built = {m: build_mode(m, spec, env) for m in STEP_MODES}
                batches = make_batches(spec, env.device)
                reps = 2 if check.dry_run else 6
                timings = measure.time_modes(built, batches, reps=reps, steps_per_rep=2,
                                             warmup_steps=3, device=env.device)
                disc = statistics.median(timings["disc-only"].step_s)
                for mode in STEP_MODES:
                    step_s = statistics.median(timings[mode].step_s)
                    tokens = batch * seq_len / step_s
                    mfu = built[mode].step_flops / step_s / peak if peak else None
                    ratio = step_s / disc
                    lines.append(
                        f"| {recipe} | {compiled} | {mode} | {1000 * step_s:.1f} ms | "
                        f"{tokens:,.0f} "
                        f"| {'n/a' if mfu is None else f'{mfu:.1%}'} | {ratio:.3f} | "
                        f"{built[mode].note} |")
                    key = f"{recipe}{' compiled' if compiled else ''} {mode}"
                    check.row("steps", key, "step_time", 1000 * step_s, "ms")
                    check.row("steps", key, "tokens_per_s", tokens, "1/s")
                    check.row("steps", key, "mfu", "" if mfu is None else mfu)
                    check.row("steps", key, "over_disc_only", ratio)
                    if recipe == "base" and mode == "fast-electra":
                        check.targets.append(_target(
                            f"fast/disc-only, base, {'compiled' if compiled else 'eager'}", ratio,
                            TARGETS["fast_disc_base"]))
                    if recipe == "base" and mode == "disc-only" and mfu is not None:
                        check.targets.append(_target(
                            f"discriminator (disc-only) MFU, base, "
                            f"{'compiled' if compiled else 'eager'}", mfu, TARGETS["disc_mfu"],
                            at_least=True))
                del built
                if device == "cuda":
                    torch.cuda.empty_cache()
    finally:
        check.sections.append("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# the report


def write_report(check: Check, out_dir: Path, command: str) -> list[Path]:
    md, csv_path = out_dir / "bench_cuda.md", out_dir / "bench_cuda.csv"
    status = "all parts passed" if not check.failures else \
        f"FAILED ({len(check.failures)}):\n" + "\n".join(f"- {f}" for f in check.failures)
    from benchmarks.machine import cpu_name

    head = [f"# GPU check{' (dry run on CPU: not a measurement)' if check.dry_run else ''}", "",
            f"Command: `{command}`  ", f"Wall time: {check.elapsed():.0f} s  ",
            f"cpu: {cpu_name()}", "", f"Status: {status}", ""]
    if check.targets:
        head += ["## Targets", "", "Checked here, never asserted in tests.", "",
                 *check.targets, ""]
    md.write_text("\n".join(head + check.sections))
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["part", "name", "metric", "value", "unit"])
        writer.writeheader()
        writer.writerows(check.rows)
    paths = [md, csv_path]
    steps = [r for r in check.rows if r["part"] == "steps" and r["metric"] == "step_time"]
    if steps:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 0.35 * len(steps) + 1.5))
        ax.barh([r["name"] for r in steps], [r["value"] for r in steps])
        ax.set_xlabel("step time (ms, median)")
        ax.invert_yaxis()
        fig.tight_layout()
        png = out_dir / "bench_cuda_steps.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        paths.append(png)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="run every part on the CPU at tiny shapes (not a measurement)")
    parser.add_argument("--output", type=Path,
                        help="results folder (default: benchmarks/results; --dry-run: a "
                             "temporary folder)")
    parser.add_argument("--budget-minutes", type=float, default=8.0,
                        help="stop every part when this is spent, installs included (default 8)")
    parser.add_argument("--wheels", type=Path, default=WHEELS,
                        help="wheels of the missing packages (default .whl/, make gpu-wheels)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    sys.path.insert(1, str(REPO / "kernels"))
    os.environ.setdefault("WANDB_MODE", "disabled")
    out_dir = args.output or (Path(tempfile.mkdtemp(prefix="gpu-check-")) if args.dry_run
                              else REPO / "benchmarks" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    check = Check(dry_run=args.dry_run, budget_s=60 * args.budget_minutes)
    command = " ".join(["python3", "benchmarks/gpu_check.py", *(argv or sys.argv[1:])])

    check.run_part("packages", ensure_packages, args.wheels)
    if not check.failures:  # without the packages nothing else can run
        check.run_part("kernels", check_kernels, out_dir)
        check.run_part("tests", run_tests, out_dir)
        check.run_part("sampler", measure_sampler)
        plan = [("tiny", False)] if args.dry_run else \
            [("base", False), ("small", False), ("base", True), ("small", True)]
        check.run_part("steps", measure_steps, plan)
    paths = write_report(check, out_dir, command)
    print("gpu-check: wrote " + ", ".join(map(str, paths)))
    print("gpu-check: " + ("all parts passed" if not check.failures
                           else f"FAILED: {'; '.join(check.failures)}"))
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
