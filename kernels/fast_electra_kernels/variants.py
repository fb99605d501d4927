"""Every compiled variant of this package's Triton kernels, and compiling them ahead of time.

A Triton kernel is compiled once per *variant*: its argument types, its constexprs, the integer
arguments Triton's specialization marks as multiples of 16, and the launch options (num_warps,
num_stages). `variants(capability)` lists the variants the wrappers launch on a GPU of that
capability, built from the same functions the wrappers take their launch parameters from
(`sampler_triton.launch_config`, `rtd_loss_triton.forward_blocks`, ...), so that what is compiled
here is what runs (tests/test_kernel_compile.py checks both). `compile_variant` compiles one
for a GPU that need not be present (`triton.compile` with a `GPUTarget`) and reads the ptxas
report: registers, spill stores / loads, stack, shared memory.

Specialization. At a launch Triton types each argument by its value and marks an integer that
is a multiple of 16 (or a pointer 16-byte aligned) as such, which lets it vectorize loads; an
integer equal to 1 becomes a constant. The variants here fix:
  - every pointer 16-byte aligned: the wrappers pass fresh allocations and parameters, which
    torch aligns to at least 256 bytes;
  - the sizes that only bound loops and masks (M, V, N) as not multiples of 16, the general case;
  - H and the row strides as multiples of 16 ("H%16=0": every ELECTRA / BERT size) or, for the
    sampler, not ("H%16!=0": a generator with an odd embedding size), the case that changes the
    loads and the registers most (sampler_triton._CONFIGS).
Other specializations (M a multiple of 16, a split of one tile) compile at run time as usual;
they change index arithmetic, not tiles.

Variants, per GPU:
  _fused_sample_kernel    fp16 / bf16 / fp32 operands (h, W and the bias, whose dtype the
                          decoder's is) x H%16 = 0 or not; tiles from launch_config
  _noise_kernel           the debug path's one launch
  _rtd_forward_kernel     bf16 (the GPU DeepSpeed configs) at the recipes' hidden sizes 64, 256
                          and 768 / 1024 (one BLOCK_H), fp16 and fp32 at 768; bf16 at 768
                          without gradients (a call under torch.no_grad)
  _rtd_input_grad_kernel  the same dtypes and sizes (BLOCK_H 64 or 256)
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from dataclasses import dataclass, field

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fast_electra_kernels import rtd_loss_triton, sampler, sampler_triton
from fast_electra_kernels._dispatch import FP_FUSION

# the GPUs compiled for: A100 (sm_80), H100 / H200 (sm_90), B200 (sm_100, where ptxas knows it)
TARGETS = (80, 90, 100)

_PTR = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32",
        torch.int64: "*i64", torch.int32: "*i32"}
_SHORT = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


@dataclass(frozen=True)
class Variant:
    """One compilation of one kernel, as a launch of its wrapper produces it."""

    kernel: triton.runtime.JITFunction
    name: str  # what distinguishes it among the kernel's variants, e.g. "fp16 bias H%16=0"
    signature: dict[str, str]  # argument -> Triton type ("*fp16", "i32", "constexpr", ...)
    constexprs: dict[str, object]
    multiple_of_16: tuple[str, ...]  # arguments specialized as multiples of 16 (or aligned)
    num_warps: int
    num_stages: int

    @property
    def kernel_name(self) -> str:
        return self.kernel.__name__

    @property
    def launch(self) -> str:
        """The tile constexprs and launch options, e.g. "BLOCK_M=64 BLOCK_V=128 w8 s3"."""
        blocks = " ".join(f"{k}={v}" for k, v in self.constexprs.items()
                          if k.startswith("BLOCK_"))
        return f"{blocks} w{self.num_warps} s{self.num_stages}"

    def label(self, capability: int) -> str:
        return f"{self.kernel_name} [{self.name}; {self.launch}] for sm_{capability}"


def _signature(kernel, types: dict[str, str], constexprs: dict) -> dict[str, str]:
    """The full signature in argument order; every argument must be typed (or a constexpr)."""
    sig = {}
    for arg in kernel.arg_names:
        if arg in constexprs:
            sig[arg] = "constexpr"
        else:
            sig[arg] = types[arg]  # a KeyError here: a kernel argument this table does not know
    return sig


def _pointers(kernel) -> tuple[str, ...]:
    return tuple(a for a in kernel.arg_names if a.endswith("_ptr"))


def sampler_variant(capability: int, dtype: torch.dtype, *, aligned: bool = True,
                    config: sampler_triton.LaunchConfig | None = None) -> Variant:
    """`_fused_sample_kernel` as `sampler_triton.sample` launches it on this GPU, or with another
    `config` (benchmarks/kernel_resources.py compares configs)."""
    kernel = sampler_triton._fused_sample_kernel
    fp32_dot = sampler_triton.uses_fp32_dot(dtype, on_cuda=True)
    config = config or sampler_triton.launch_config(capability, fp32_dot, aligned)
    constexprs = dict(DOT_IN_FP32=fp32_dot, BLOCK_M=config.block_m,
                      BLOCK_V=config.block_v, BLOCK_K=sampler_triton.default_block_k(fp32_dot),
                      GROUPS_PER_TILE=config.block_v // sampler.GROUP)
    operand = _PTR[dtype]
    types = {"h_ptr": operand, "w_ptr": operand, "b_ptr": operand, "rows_ptr": "*i64",
             "max_ptr": "*fp32", "sum_ptr": "*fp32", "dot_ptr": "*fp32", "best_ptr": "*fp32",
             "idx_ptr": "*i32", "high_ptr": "*fp32", "high_idx_ptr": "*i32",
             **dict.fromkeys(("M", "V", "H", "stride_hm", "stride_wv", "seed_word",
                              "tiles_per_split"), "i32"),
             "temperature": "fp32"}
    name = f"{_SHORT[dtype]} H%16{'=' if aligned else '!='}0"
    return Variant(kernel, name, _signature(kernel, types, constexprs), constexprs,
                   _pointers(kernel) + (("H", "stride_hm", "stride_wv") if aligned else ()),
                   config.num_warps, config.num_stages)


def noise_variant() -> Variant:
    kernel = sampler_triton._noise_kernel
    constexprs = dict(BLOCK_M=sampler_triton.NOISE_BLOCK_M, BLOCK_V=sampler_triton.NOISE_BLOCK_V)
    types = {"rows_ptr": "*i64", "u_ptr": "*fp32", "g_ptr": "*fp32", "M": "i32", "V": "i32",
             "seed_word": "i32"}
    return Variant(kernel, "debug noise", _signature(kernel, types, constexprs), constexprs,
                   _pointers(kernel), sampler_triton.NOISE_NUM_WARPS,
                   sampler_triton.NOISE_NUM_STAGES)


def rtd_forward_variant(dtype: torch.dtype, H: int, *, compute_grad: bool = True) -> Variant:
    """`_rtd_forward_kernel` for discriminator hidden size H: x, w, b in `dtype` (the engine's),
    labels fp32 (the corruption's rtd_labels) and the loader's int64 attention mask."""
    kernel = rtd_loss_triton._rtd_forward_kernel
    block_n, block_h = rtd_loss_triton.forward_blocks(H)
    constexprs = dict(COMPUTE_GRAD=compute_grad, BLOCK_N=block_n, BLOCK_H=block_h)
    operand = _PTR[dtype]
    types = {"x_ptr": operand, "w_ptr": operand, "b_ptr": operand, "y_ptr": "*fp32",
             "mask_ptr": "*i64", "n_real_ptr": "*fp32", "loss_ptr": "*fp32",
             "counts_ptr": "*i32", "dz_ptr": "*fp32", "dw_ptr": "*fp32", "db_ptr": "*fp32",
             "N": "i32", "H": "i32", "stride_xn": "i32"}
    name = f"{_SHORT[dtype]} H={H}{'' if compute_grad else ' no grad'}"
    return Variant(kernel, name, _signature(kernel, types, constexprs), constexprs,
                   _pointers(kernel) + ("H", "stride_xn"), rtd_loss_triton.NUM_WARPS,
                   rtd_loss_triton.NUM_STAGES)


def rtd_input_grad_variant(dtype: torch.dtype, H: int) -> Variant:
    """`_rtd_input_grad_kernel` writing dx in `dtype` (x's) with w in `dtype`."""
    kernel = rtd_loss_triton._rtd_input_grad_kernel
    block_n, block_h = rtd_loss_triton.input_grad_blocks(H)
    constexprs = dict(BLOCK_N=block_n, BLOCK_H=block_h)
    types = {"dz_ptr": "*fp32", "w_ptr": _PTR[dtype], "grad_ptr": "*fp32", "dx_ptr": _PTR[dtype],
             "N": "i32", "H": "i32"}
    return Variant(kernel, f"{_SHORT[dtype]} H={H}", _signature(kernel, types, constexprs),
                   constexprs, _pointers(kernel) + ("H",), rtd_loss_triton.NUM_WARPS,
                   rtd_loss_triton.NUM_STAGES)


# discriminator hidden sizes of the recipes (tiny and demo 64, small 256, base 768, large 1024:
# 768 and 1024 share BLOCK_H 1024, so 768 stands for both)
RTD_SIZES = (64, 256, 768)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def variants(capability: int) -> list[Variant]:
    """What the wrappers launch on a GPU of this capability (see the module docstring)."""
    out = [sampler_variant(capability, dtype, aligned=aligned)
           for dtype in DTYPES for aligned in (True, False)]
    out.append(noise_variant())
    out += [rtd_forward_variant(torch.bfloat16, H) for H in RTD_SIZES]
    out += [rtd_forward_variant(dtype, 768) for dtype in (torch.float16, torch.float32)]
    out.append(rtd_forward_variant(torch.bfloat16, 768, compute_grad=False))
    out += [rtd_input_grad_variant(torch.bfloat16, H) for H in (64, 256)]
    out += [rtd_input_grad_variant(dtype, 768) for dtype in (torch.float16, torch.float32)]
    return out


# --------------------------------------------------------------------------------------------
# compiling


@dataclass
class Compiled:
    """What ptxas reported for one variant on one target (static: no GPU involved)."""

    registers: int
    spill_stores: int  # bytes
    spill_loads: int  # bytes
    stack: int  # bytes of stack frame (spills live there)
    shared: int  # bytes of shared memory, as Triton launches it
    ptxas_log: str = field(repr=False, default="")


_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_FRAME = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def compile_variant(variant: Variant, capability: int) -> Compiled:
    """Compile for sm_<capability> with the installed Triton and its ptxas; raises what the
    compiler raises. Always compiles (no cache hit, which would skip ptxas and its report)."""
    from triton import knobs

    source = ASTSource(variant.kernel, variant.signature, variant.constexprs,
                       {(variant.kernel.arg_names.index(a),): [["tt.divisibility", 16]]
                        for a in variant.multiple_of_16})
    log = io.StringIO()
    with _knob(knobs.compilation, "always_compile", True), \
            _knob(knobs.nvidia, "dump_ptxas_log", True), contextlib.redirect_stdout(log):
        kernel = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                                options=dict(num_warps=variant.num_warps,
                                             num_stages=variant.num_stages,
                                             enable_fp_fusion=FP_FUSION))
    text = log.getvalue()
    regs, frame = _PTXAS_REGS.search(text), _PTXAS_FRAME.search(text)
    if regs is None or frame is None:
        raise RuntimeError(f"no ptxas report for {variant.label(capability)}:\n{text[-2000:]}")
    stack, stores, loads = map(int, frame.groups())
    return Compiled(int(regs.group(1)), stores, loads, stack, kernel.metadata.shared, text)


@contextlib.contextmanager
def _knob(group, name: str, value):
    old = getattr(group, name)
    setattr(group, name, value)
    try:
        yield
    finally:
        setattr(group, name, old)


def ptxas_for(capability: int) -> str:
    """Path of the ptxas that Triton runs for this target."""
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(capability).path


def ptxas_version(capability: int) -> str:
    """e.g. "12.9.86", of the ptxas Triton runs for this target."""
    out = subprocess.run([ptxas_for(capability), "--version"], capture_output=True, text=True,
                         check=True).stdout
    return re.search(r"V(\d+\.\d+\.\d+)", out).group(1)


def supported_targets() -> list[int]:
    """TARGETS that the ptxas shipped with this Triton knows: sm_100 needs CUDA 12.8 or later."""
    def known(capability: int) -> bool:
        major, minor = map(int, ptxas_version(capability).split(".")[:2])
        return capability < 100 or (major, minor) >= (12, 8)

    return [c for c in TARGETS if known(c)]


def _compile_job(job: tuple[int, int]) -> Compiled | str:
    """One (capability, index into variants(capability)): its Compiled, or why it failed."""
    capability, index = job
    variant = variants(capability)[index]
    try:
        return compile_variant(variant, capability)
    except Exception as exc:  # noqa: BLE001 (every failure is reported, named, by the caller)
        return f"{type(exc).__name__}: {exc}"


def compile_all(capabilities, workers: int = 1) -> dict[tuple[int, int], Compiled | str]:
    """Compile every variant for every capability: {(capability, index): Compiled, or the error
    as text}. workers > 1 compiles in that many fresh processes (spawned: the caller may hold
    threads that a fork would copy in a locked state); each job is independent, so one variant
    that fails does not stop the others."""
    jobs = [(c, i) for c in capabilities for i in range(len(variants(c)))]
    if workers <= 1 or len(jobs) <= 1:
        return {job: _compile_job(job) for job in jobs}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(workers, len(jobs)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        return dict(zip(jobs, pool.map(_compile_job, jobs)))
