"""Extra memory (and on a GPU, time) of the fused sampler against materializing the logits.

  python benchmarks/kernel_sampler.py                  # CPU: analytic + measured small shape
  python benchmarks/kernel_sampler.py --device cuda    # GPU: measured at M=20k, V=30k, H=768

Methods, all computing (tokens, lse, E[z]) for M rows of h [M, H] against W [V, H], b [V]:
  fused      fast_electra_kernels sampler (Triton; on CPU the interpreter runs it)
  eager      sample_reference: materializes the logits and z [M, V] fp32, and the exponentials
             of the two-level draw (sampler.gumbel_max)
  compiled   torch.compile(sample_reference) (CUDA only)

"Extra memory" is what a call allocates beyond its inputs, outputs included.
  analytic  eager: the [M, V] fp32 logits + [M, V] fp32 z, a lower bound of what it allocates;
            fused: its partials ([4, S, M] fp32 + [S, M] int32), its outputs (tokens int64,
            lse and E fp32, [M] each) and the merge's temporaries (at most 3 [S, M] fp32 + 4 [M])
  CUDA      torch.cuda.max_memory_allocated() during the call minus memory_allocated() before it
  CPU       peak resident set size: each method runs in its own fresh process, which builds its
            inputs, warms up on a tiny shape, resets the kernel's high-water mark (writing 5 to
            /proc/self/clear_refs, Linux) and reports VmHWM after the call minus VmRSS before it
The target is fused / eager <= 1/20 at M = 20k, V = 30k, H = 768.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

TARGET_RATIO = 1 / 20
RESULTS = Path(__file__).parent / "results"


def analytic_bytes(M: int, V: int, num_splits: int) -> dict[str, int]:
    eager = 2 * M * V * 4
    fused = (4 * num_splits * M * 4 + num_splits * M * 4  # partials
             + M * (8 + 4 + 4)  # outputs
             + 3 * num_splits * M * 4 + 4 * M * 4)  # merge temporaries
    return {"eager": eager, "fused": fused}


def make_inputs(M: int, V: int, H: int, dtype: torch.dtype, device: str):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(M, H, generator=g).to(dtype=dtype, device=device)
    W = (torch.randn(V, H, generator=g) / H**0.5).to(dtype=dtype, device=device)
    b = torch.randn(V, generator=g).to(dtype=dtype, device=device)
    rows = torch.arange(M, device=device)
    return h, W, b, rows


def sampler(method: str, backend: str = "inductor"):
    """backend: torch.compile's, for method "compiled"."""
    from fast_electra_kernels.sampler import fused_sample, sample_reference

    if method == "fused":
        return lambda h, W, b, rows: fused_sample(h, W, b, temperature=1.5, seed=1, rows=rows,
                                                  use_triton=True)
    if method == "eager":
        return lambda h, W, b, rows: sample_reference(h, W, b, 1.5, 1, rows)
    compiled = torch.compile(sample_reference, dynamic=False, backend=backend)
    return lambda h, W, b, rows: compiled(h, W, b, 1.5, 1, rows)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_child(method: str, M: int, V: int, H: int) -> dict:
    """Runs in a fresh process (see --child): peak RSS growth and wall time of one call."""
    fn = sampler(method)
    fn(*make_inputs(8, 40, 16, torch.float32, "cpu"))  # warm-up: imports, interpreter rewrite
    inputs = make_inputs(M, V, H, torch.float32, "cpu")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    out = fn(*inputs)
    seconds = time.perf_counter() - start
    return {"extra_bytes": (_status_kib("VmHWM") - before) * 1024, "seconds": seconds,
            "tokens": out.tokens.tolist()}


def run_cpu(args) -> str:
    results = {}
    for method in ("fused", "eager"):
        child = subprocess.run(
            [sys.executable, __file__, "--child", method, "--M", str(args.M), "--V", str(args.V),
             "--H", str(args.H)],
            # the interpreter flag must be set before triton's first import in the process
            env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True,
            check=True)
        results[method] = json.loads(child.stdout.splitlines()[-1])
    agree = sum(a == b for a, b in zip(results["fused"]["tokens"], results["eager"]["tokens"]))
    analytic = analytic_bytes(args.M, args.V, 1)
    lines = [
        f"measured at M={args.M}, V={args.V}, H={args.H}, fp32, T=1.5 (peak RSS growth, one fresh "
        "process per method)",
        "",
        "| method | extra memory | wall time |",
        "|---|---|---|",
        f"| fused (Triton interpreter) | {_mib(results['fused']['extra_bytes'])} | "
        f"{results['fused']['seconds']:.1f} s (interpreter: not a performance number) |",
        f"| eager reference | {_mib(results['eager']['extra_bytes'])} | "
        f"{results['eager']['seconds']:.2f} s |",
        "",
        f"fused / eager = {results['fused']['extra_bytes'] / results['eager']['extra_bytes']:.4f}"
        f"; tokens equal on {agree} / {args.M} rows",
        f"(analytic at this shape: eager >= {_mib(analytic['eager'])}, fused "
        f"{_mib(analytic['fused'])}; the eager path also holds the draw's [M, V] exponentials, "
        "the interpreter its per-tile numpy arrays)",
    ]
    return "\n".join(lines)


def measure_cuda(fn, inputs) -> tuple:
    """(output, extra bytes a call allocates, median ms by triton.testing.do_bench) of one
    sampler on CUDA inputs, after a first call that compiles / autotunes."""
    import triton.testing

    fn(*inputs)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn(*inputs)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    return out, extra, triton.testing.do_bench(lambda: fn(*inputs), warmup=5, rep=50)


def run_cuda(args) -> str:
    dtype = getattr(torch, args.dtype)
    inputs = make_inputs(args.M, args.V, args.H, dtype, "cuda")
    rows = []
    outputs = {}
    for method in ("fused", "eager", "compiled"):
        outputs[method], extra, ms = measure_cuda(sampler(method), inputs)
        rows.append((method, extra, ms))
    eager_extra, eager_ms = rows[1][1], rows[1][2]
    agree = (outputs["fused"].tokens == outputs["eager"].tokens).float().mean().item()
    lse_err = (outputs["fused"].lse - outputs["eager"].lse).abs().max().item()
    lines = [
        f"measured at M={args.M}, V={args.V}, H={args.H}, {args.dtype}, T=1.5 "
        "(torch.cuda.max_memory_allocated; time: triton.testing.do_bench median)",
        "",
        "| method | extra memory | vs eager | time | speed-up vs eager |",
        "|---|---|---|---|---|",
    ]
    for method, extra, ms in rows:
        lines.append(f"| {method} | {_mib(extra)} | {extra / eager_extra:.5f} | {ms:.2f} ms | "
                     f"{eager_ms / ms:.2f}x |")
    lines += ["", f"tokens equal to eager on {agree:.4%} of rows; max |lse - eager lse| = "
              f"{lse_err:.2e}"]
    return "\n".join(lines)


def _mib(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:,.1f} MiB"


def machine(device: str) -> str:
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return (f"{props.name} ({props.total_memory / 2**30:.0f} GiB, "
                f"{props.multi_processor_count} SMs), torch {torch.__version__}")
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = f"{names[0]} x {len(names)} logical CPUs" if names else cpu
    return f"{cpu}, {platform.system()}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--M", type=int, help="rows (default: 1024 on cpu, 20000 on cuda)")
    parser.add_argument("--V", type=int, help="vocabulary (default: 8192 on cpu, 30000 on cuda)")
    parser.add_argument("--H", type=int, help="hidden size (default: 128 on cpu, 768 on cuda)")
    parser.add_argument("--dtype", default="bfloat16", help="cuda input dtype (cpu uses fp32)")
    parser.add_argument("--out", type=Path, help="markdown file to write (default: "
                        "benchmarks/results/kernel_sampler_<device>.md)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    small = args.device == "cpu"
    args.M = args.M or (1024 if small else 20000)
    args.V = args.V or (8192 if small else 30000)
    args.H = args.H or (128 if small else 768)
    if args.child:
        print(json.dumps(cpu_child(args.child, args.M, args.V, args.H)))
        return

    M, V = 20000, 30000
    if args.device == "cuda":
        from fast_electra_kernels.sampler_triton import capability_of, default_num_splits, \
            launch_config

        cuda = torch.device("cuda")
        config = launch_config(capability_of(cuda), False, True)  # bf16 at H = 768
        num_splits = default_num_splits(cuda, M, V, config.block_m, config.block_v)
    else:
        num_splits = 1
    analytic = analytic_bytes(M, V, num_splits)
    ratio = analytic["fused"] / analytic["eager"]
    measured = run_cpu(args) if args.device == "cpu" else run_cuda(args)
    report = "\n".join([
        f"# Fused sampler: extra memory{' and time' if args.device == 'cuda' else ''} "
        f"({args.device})",
        "",
        f"Machine: {machine(args.device)}",
        f"Command: `{' '.join(['python', 'benchmarks/kernel_sampler.py', *sys.argv[1:]])}`",
        "",
        f"## Analytic, M={M}, V={V}, H=768 (vocabulary splits S={num_splits})",
        "",
        "| path | extra bytes |",
        "|---|---|",
        f"| eager: [M, V] fp32 logits + z | {_mib(analytic['eager'])} |",
        f"| fused: partials + outputs + merge temporaries | {_mib(analytic['fused'])} |",
        "",
        f"fused / eager = {ratio:.2e} (target <= {TARGET_RATIO:.2f}: "
        f"{'met' if ratio <= TARGET_RATIO else 'NOT met'})",
        "",
        "## Measured",
        "",
        measured,
        "",
    ])
    out = args.out or RESULTS / f"kernel_sampler_{args.device}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
