"""The benchmark suite: what Fast-ELECTRA saves per training step, computed and measured.

    python benchmarks/bench.py [--quick | --smoke] [--device cpu|cuda] [--config small]
                               [--threads N] [--output DIR]

(`make bench` runs --quick.) Written to DIR/bench_<device>[_<suite>].md, .csv and _*.png: a
headline, the benchmark's targets (met or missed, by how much and why; never asserted), then

  1. compute  FLOPs per sequence of the main and auxiliary models (suite/cost_model.py), joint
              ELECTRA vs Fast-ELECTRA: the paper's table beside its accounting reproduced and
              beside ours, at the paper's base and large shapes and at every bundled recipe; and
              FlopCounterMode's count of one real training step of each mode at the timed shape
              beside the analytic.
  2. memory   analytic (weights, gradients, optimizer state, activations), and measured: each
              mode trains a few steps in a fresh process (so peaks do not mix; suite/measure.py).
  3. time     step time and tokens/s of every mode, measured side by side in this one process:
              repetitions that run each mode for a few steps in turn (order rotated), medians.

The modes (suite/modes.py), each one full training step through a real DeepSpeed engine on the
same batches: electra, fast-electra, disc-only (uniform replacements, no generator: the bound
Fast-ELECTRA approaches) and the electra-pytorch peer when it is installed. Batches are synthetic
full-length token ids, masked before the clock starts (suite/workload.py).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.suite import measure, plots, report  # noqa: E402
from benchmarks.suite.modes import MODES, PEER_PACKAGE, build_mode, peer_available  # noqa: E402
from benchmarks.suite.workload import (CPU_THREADS, ELECTRA_VOCAB, Spec,  # noqa: E402
                                       make_batches, save_frozen_generator, set_threads)
from fast_electra_ds.config import load_config  # noqa: E402
from fast_electra_ds.errors import UserError  # noqa: E402


@dataclass(frozen=True)
class Suite:
    """How much to measure. batch / seq_len None: the recipe's micro-batch and seq_len."""

    name: str
    recipe: str
    batch: int | None
    seq_len: int | None
    vocab_size: int
    reps: int  # timing repetitions (each runs every mode steps_per_rep steps)
    steps_per_rep: int
    warmup_steps: int  # per mode, before the clock
    memory_steps: int  # training steps of each memory child process
    memory_rounds: int  # fresh processes per mode (medians over them)


SUITES = {
    "smoke": Suite("smoke", "tiny", batch=2, seq_len=32, vocab_size=1000, reps=2,
                   steps_per_rep=1, warmup_steps=1, memory_steps=1, memory_rounds=1),
    "quick": Suite("quick", "small", batch=8, seq_len=128, vocab_size=ELECTRA_VOCAB, reps=12,
                   steps_per_rep=1, warmup_steps=1, memory_steps=3, memory_rounds=3),
    "full": Suite("full", "small", batch=None, seq_len=None, vocab_size=ELECTRA_VOCAB, reps=9,
                  steps_per_rep=3, warmup_steps=2, memory_steps=5, memory_rounds=3),
}


def suite_spec(suite: Suite, recipe: str | None, device: str, generator_dir: str,
               threads: int | None = None) -> Spec:
    """The suite's shape on `recipe` (default: the suite's). threads None: CPU_THREADS on a CPU,
    torch's default on a GPU."""
    recipe = recipe or suite.recipe
    cfg = load_config(recipe)
    if threads is None:
        threads = CPU_THREADS if device == "cpu" else 0
    return Spec(recipe=recipe, batch=suite.batch or cfg.train.micro_batch_size,
                seq_len=suite.seq_len or cfg.data.seq_len, vocab_size=suite.vocab_size,
                device=device, threads=threads, generator_dir=generator_dir)


def run(*, suite_name: str, device: str, output: str, recipe: str | None, command: str,
        threads: int | None = None, log: Callable[[str], None] = print) -> list[Path]:
    """The whole benchmark; returns the files written."""
    from fast_electra_ds.training.ds_config import load_ds_config, precision
    from fast_electra_ds.training.engine import init_distributed

    suite = SUITES[suite_name]
    started = time.perf_counter()
    load_before = os.getloadavg()
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"bench_{device}" + ("" if suite_name == "quick" else f"_{suite_name}")
    modes = [m for m in MODES if m != "peer" or peer_available()]

    with tempfile.TemporaryDirectory(prefix="bench-generator-") as generator_dir:
        spec = suite_spec(suite, recipe, device, generator_dir, threads)
        set_threads(spec)
        env = init_distributed(spec.config())
        save_frozen_generator(spec)
        log(f"bench: {spec.describe()}")
        built = {name: build_mode(name, spec, env) for name in modes}
        batches = make_batches(spec, env.device)
        log("bench: counting FLOPs of one step per mode")
        flops = {name: measure.count_flops(mode, batches[0]) for name, mode in built.items()}
        log(f"bench: timing {', '.join(modes)} ({suite.reps} repetitions)")
        timings = measure.time_modes(built, batches, reps=suite.reps,
                                     steps_per_rep=suite.steps_per_rep,
                                     warmup_steps=suite.warmup_steps, device=env.device)
        breakdown = measure.corrupt_breakdown(built["fast-electra"].frozen_generator, batches,
                                              suite.reps, env.device)
        notes = {name: mode.note for name, mode in built.items()}
        del built
        log("bench: memory, one fresh process per mode")
        memory = measure.measure_memory(modes, spec, suite.memory_steps, suite.memory_rounds)

    load_after = os.getloadavg()
    about = {"Command": f"`{command}`",
             "Wall time": f"{time.perf_counter() - started:.0f} s; load average (1 min) "
                          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after",
             **machine_info(env.device, ("torch", "deepspeed", "transformers", PEER_PACKAGE))}
    if "peer" not in modes:
        about["peer"] = (f"`{PEER_PACKAGE}` is not installed; `make bench` installs it "
                         f"(`pip install --no-deps {PEER_PACKAGE}`)")
    ds_config = spec.config().ds_config
    measured = report.Measured(flops=flops, memory=memory, timings=timings, breakdown=breakdown,
                               notes=notes, reps=suite.reps, steps_per_rep=suite.steps_per_rep,
                               warmup_steps=suite.warmup_steps)
    text, rows = report.render(spec=spec, suite=suite_name, about=about, measured=measured,
                               precision=precision(load_ds_config(ds_config)),
                               ds_config=Path(ds_config).name)
    md_path, csv_path = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
    md_path.write_text(text)
    rows.write_csv(csv_path)
    paths = [md_path, csv_path, *plots.plot(out_dir / stem, rows)]
    log("bench: wrote " + ", ".join(str(p) for p in paths))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Analytic FLOPs and memory per step of the main and auxiliary models (joint "
                    "ELECTRA vs Fast-ELECTRA, beside the paper's tables), FlopCounterMode's "
                    "count, peak memory of each mode in a fresh process, and step time of "
                    "electra, fast-electra, a discriminator-only bound and the electra-pytorch "
                    "peer, measured side by side. Writes markdown, CSV and PNG plots.")
    suite = parser.add_mutually_exclusive_group()
    suite.add_argument("--quick", action="store_true",
                       help="the quick suite: reduced micro-batch (8), a few minutes on a CPU "
                            "(what `make bench` runs)")
    suite.add_argument("--smoke", action="store_true",
                       help="the smallest case (tiny recipe, micro-batch 2 x 32), for tests")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when a GPU is visible, else cpu")
    parser.add_argument("--config", default=None, metavar="RECIPE",
                        help="recipe whose shape is timed (default: small; tiny with --smoke)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch intra-op threads (default: 1 on cpu, where a shared machine "
                             "makes more threads spin-wait and the times vary several-fold; "
                             "torch's own on cuda; 0 = torch's default)")
    parser.add_argument("--output", default="benchmarks/results", metavar="DIR",
                        help="where bench_<device>[_<suite>].md/.csv/_*.png go "
                             "(default benchmarks/results)")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA GPU is visible; use --device cpu")
    suite_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    # the command as the results record it: every option, defaults included
    command = ["python", "benchmarks/bench.py",
               *([f"--{suite_name}"] if suite_name != "full" else []), "--device", device,
               *(["--config", args.config] if args.config else []),
               *(["--threads", str(args.threads)] if args.threads is not None else []),
               "--output", args.output]
    try:
        run(suite_name=suite_name, device=device, output=args.output, recipe=args.config,
            threads=args.threads, command=shlex.join(command))
    except UserError as e:  # a bad --config, say: the message, as the fast-electra CLI says it
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
