"""Registers, spills, shared memory and occupancy of every Triton kernel variant, per GPU target.

    python benchmarks/kernel_resources.py [--output FILE] [--candidates] [--workers N]
    python benchmarks/kernel_resources.py --device [--output FILE]     # on a GPU machine

Each variant the wrappers launch (fast_electra_kernels.variants) is compiled for sm_80, sm_90
and sm_100 (where the installed Triton's ptxas knows it) with `triton.compile(ASTSource,
GPUTarget)`: no GPU is needed, and the numbers are ptxas's static report of the cubin that would
run (`ptxas -v`: registers per thread, bytes of spill stores / loads, stack frame), Triton's
shared memory, and the theoretical occupancy they allow (`occupancy`). --candidates adds the
fused sampler under every config of sampler_triton.CANDIDATES, the table its defaults were
picked from (the first that spills nowhere). --device compiles for the GPU present, loads each
kernel and adds the driver's count of registers and spills; the exit status is 1 if a default
launch spills.

Writes FILE (default benchmarks/results/kernel_resources.md).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


@dataclass(frozen=True)
class SMLimits:
    """Per-SM limits of a GPU family (NVIDIA's CUDA C++ Programming Guide, compute capability
    tables: 8.0 A100, 9.0 H100 / H200, 10.0 B200)."""

    registers: int = 65536
    max_warps: int = 64
    max_blocks: int = 32
    shared: int = 0  # bytes usable by blocks, the carve-out at its maximum
    shared_reserved_per_block: int = 1024  # what the system takes per resident block


LIMITS = {80: SMLimits(shared=164 * 1024), 90: SMLimits(shared=228 * 1024),
          100: SMLimits(shared=228 * 1024)}


def occupancy(capability: int, registers: int, shared: int, num_warps: int) -> tuple[int, str]:
    """(resident blocks per SM, what limits it) by the CUDA occupancy calculator's rules:
    registers are allocated per warp in units of 256, each of an SM's 4 sub-partitions holding
    a quarter of the register file and a whole number of warps."""
    limits = LIMITS[capability]
    per_warp = math.ceil(registers * 32 / 256) * 256
    warps_by_registers = 4 * ((limits.registers // 4) // per_warp)
    bounds = {
        "registers": warps_by_registers // num_warps,
        "shared memory": limits.shared // (shared + limits.shared_reserved_per_block),
        "warps": limits.max_warps // num_warps,
        "blocks": limits.max_blocks,
    }
    limiter = min(bounds, key=bounds.get)
    return bounds[limiter], limiter


def _row(variant, capability, result, *, driver=None, chosen: str = "") -> str:
    if isinstance(result, str):
        return (f"| {variant.kernel_name} | {variant.name} | {variant.launch} | sm_{capability} "
                f"| compile FAILED: {result.splitlines()[0][:120]} | | | | | | |")
    blocks, limiter = occupancy(capability, result.registers, result.shared, variant.num_warps)
    warps = blocks * variant.num_warps
    cells = [variant.kernel_name, variant.name, variant.launch + chosen, f"sm_{capability}",
             str(result.registers), f"{result.spill_stores} / {result.spill_loads}",
             str(result.stack), f"{result.shared:,}",
             f"{blocks} x {variant.num_warps} warps ({warps / 64:.0%}, {limiter})"]
    if driver is not None:
        cells.append(f"{driver[0]} / {driver[1]}")
    return "| " + " | ".join(cells) + " |"


HEADER = ("| kernel | variant | launch | target | registers | spill stores / loads (bytes) | "
          "stack (bytes) | shared memory (bytes) | blocks per SM (occupancy, limited by) |")


def load_on_device(variant, capability: int) -> tuple[int, int]:
    """(registers, spills) that the CUDA driver reports for the variant's cubin, loaded on the
    current GPU (Triton's CompiledKernel reads them when it loads a kernel)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fast_electra_kernels._dispatch import FP_FUSION

    source = ASTSource(variant.kernel, variant.signature, variant.constexprs,
                       {(variant.kernel.arg_names.index(a),): [["tt.divisibility", 16]]
                        for a in variant.multiple_of_16})
    kernel = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                            options=dict(num_warps=variant.num_warps,
                                         num_stages=variant.num_stages,
                                         enable_fp_fusion=FP_FUSION))
    kernel._init_handles()
    return kernel.n_regs, kernel.n_spills


def run(output: Path, *, candidates: bool, device: bool, workers: int,
        targets: list[int] | None = None, command: str | None = None) -> int:
    """Write the report; returns the number of default launches that spill (or fail). targets:
    the capabilities to compile for (default: every one the installed ptxas knows; with device,
    the GPU's own)."""
    import torch

    from benchmarks.machine import cpu_name
    from fast_electra_kernels import variants

    started = time.perf_counter()
    if device:
        major, minor = torch.cuda.get_device_capability()
        targets = [10 * major + minor]
        machine = f"{torch.cuda.get_device_name()} (sm_{targets[0]}); CPU {cpu_name()}"
    else:
        targets = targets or variants.supported_targets()
        machine = (f"{cpu_name()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable "
                   f"here), no GPU used")
    compiled = variants.compile_all(targets, workers=workers)
    bad = []
    lines = [HEADER + (" driver registers / spills |" if device else ""),
             "|---" * (10 if device else 9) + "|"]
    for capability in targets:
        for index, variant in enumerate(variants.variants(capability)):
            result = compiled[capability, index]
            driver = load_on_device(variant, capability) if device and \
                not isinstance(result, str) else None
            if isinstance(result, str) or result.spill_stores or result.spill_loads or \
                    (driver is not None and driver[1]):
                bad.append(variant.label(capability))
            lines.append(_row(variant, capability, result, driver=driver))

    ptxas = ", ".join(f"sm_{c}: {variants.ptxas_version(c)}" for c in targets)
    report = [
        "# Triton kernels: registers, spills, shared memory, occupancy", "",
        f"Machine: {machine}  ",
        f"Triton {importlib.metadata.version('triton')} (ptxas {ptxas}), torch "
        f"{torch.__version__}  ",
        f"Command: `{command or ' '.join(['python', *sys.argv])}`  ",
        f"Wall time: {time.perf_counter() - started:.0f} s", "",
        ("Compiled for this GPU and loaded on it: registers and spills as ptxas reported them "
         "and as the CUDA driver reports them (last column)." if device else
         "Static counts, no GPU involved: each variant is compiled with `triton.compile("
         "ASTSource, GPUTarget)` and the numbers are what ptxas (`-v`) reported for that cubin: "
         "registers per thread, bytes of spill stores / loads, stack frame; shared memory as "
         "Triton launches it."),
        "Occupancy is theoretical: resident blocks per SM allowed by registers (allocated per "
        "warp in units of 256, 4 sub-partitions), shared memory (at the maximum carve-out, 1 KB "
        "reserved per block), 64 warps and 32 blocks per SM; the fraction is resident warps / "
        "64.", "",
        "Variants (fast_electra_kernels/variants.py): what the wrappers launch. Pointers are "
        "16-byte aligned; M, V, N are not multiples of 16; `H%16=0`: H and the row strides are "
        "multiples of 16 (every ELECTRA / BERT size), `H%16!=0` the other case.", "",
        "## Default launches", "",
        f"{len(bad)} of {len(lines) - 2} spill or fail{': ' + '; '.join(bad) if bad else '.'}",
        "", *lines, ""]

    if candidates and not device:
        report += candidate_section(targets, workers)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(report))
    print(f"kernel_resources: wrote {output} ({len(bad)} default launches spill or fail)")
    return len(bad)


def candidate_section(targets, workers: int) -> list[str]:
    """The fused sampler under every candidate config, per case and target."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    from fast_electra_kernels import sampler_triton, variants

    cases = [(c, dtype, aligned, config)
             for c in targets
             for dtype in (torch.float16, torch.float32)
             for aligned in (True, False)
             for config in sampler_triton.CANDIDATES]
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_compile_candidate, cases))
    else:
        results = [_compile_candidate(case) for case in cases]
    lines = ["## The sampler's candidate configs", "",
             "`_fused_sample_kernel` under each of sampler_triton.CANDIDATES (fp16 stands for "
             "bf16 too: the same code but for one conversion). `*` marks the default on that "
             "target; the first candidate (64 x 128, 8 warps, 3 stages) was the default of "
             "every case before, and is the 'before' of each case.", "",
             HEADER, "|---" * 9 + "|"]
    for (capability, dtype, aligned, config), result in zip(cases, results):
        variant = variants.sampler_variant(capability, dtype, aligned=aligned, config=config)
        fp32_dot = sampler_triton.uses_fp32_dot(dtype, on_cuda=True)
        chosen = " *" if sampler_triton.launch_config(capability, fp32_dot, aligned) == config \
            else ""
        lines.append(_row(variant, capability, result, chosen=chosen))
    return lines + [""]


def _compile_candidate(case):
    from fast_electra_kernels import variants

    capability, dtype, aligned, config = case
    try:
        return variants.compile_variant(
            variants.sampler_variant(capability, dtype, aligned=aligned, config=config),
            capability)
    except Exception as exc:  # noqa: BLE001 (reported in the table)
        return f"{type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=RESULTS / "kernel_resources.md",
                        help="the report (default benchmarks/results/kernel_resources.md)")
    parser.add_argument("--candidates", action="store_true",
                        help="add the sampler under every candidate config (CPU targets only)")
    parser.add_argument("--device", action="store_true",
                        help="compile for the GPU present and load each kernel on it")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="compile in this many processes (default: the usable cores)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    command = " ".join(["python", "benchmarks/kernel_resources.py", *(argv or sys.argv[1:])])
    return 1 if run(args.output, candidates=args.candidates, device=args.device,
                    workers=args.workers, command=command) else 0


if __name__ == "__main__":
    sys.exit(main())
