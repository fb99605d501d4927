"""The Triton kernels compiled for real GPUs, ahead of time and without one.

Every variant that the wrappers launch (fast_electra_kernels.variants: each dtype, the tiles of
each path) is compiled for sm_80 (A100), sm_90 (H100 / H200) and sm_100 (B200,
where the installed Triton's ptxas knows it) by `triton.compile(ASTSource, GPUTarget)`, which
runs the whole GPU pipeline down to ptxas: what the CPU interpreter of the kernel tests skips. A
variant that does not compile fails its own test, which names kernel, variant and target. The
default launches must not spill registers on any of these targets (sm_80 and sm_90 are what the
sampler's configs were chosen for; sm_100 uses sm_90's).

Budget: 1-3 s per compile on one core of an AMD EPYC, 17 variants per target. They are compiled
once per session (a module fixture), in as many processes as this process may use CPUs.
"""

from __future__ import annotations

import inspect
import os
import pkgutil
import re

import fast_electra_kernels
import pytest
import torch
from fast_electra_kernels import rtd_loss_triton, sampler_triton, variants
from fast_electra_kernels._dispatch import FP_FUSION
from triton.runtime import JITFunction

TARGETS = variants.supported_targets()
CASES = [(c, i, v) for c in TARGETS for i, v in enumerate(variants.variants(c))]


def _case_id(case) -> str:
    capability, _, variant = case
    return f"sm{capability}-{variant.kernel_name}-{variant.name}".replace(" ", "_")


@pytest.fixture(scope="module")
def compiled():
    return variants.compile_all(TARGETS, workers=len(os.sched_getaffinity(0)))


def test_sm80_and_sm90_are_targets():
    assert {80, 90} <= set(TARGETS)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_compiles_without_spills(compiled, case):
    capability, index, variant = case
    result = compiled[capability, index]
    if isinstance(result, str):
        pytest.fail(f"{variant.label(capability)} does not compile:\n{result}")
    assert 0 < result.registers <= 255, result
    assert result.spill_stores == result.spill_loads == 0, \
        f"{variant.label(capability)} spills registers: {result}"


# --------------------------------------------------------------------------------------------
# the variants are the kernels' launches


def _jit_functions() -> dict[str, JITFunction]:
    """Every @triton.jit function defined in the package, by name."""
    found = {}
    for info in pkgutil.iter_modules(fast_electra_kernels.__path__):
        module = __import__(f"fast_electra_kernels.{info.name}", fromlist=["_"])
        for name, obj in vars(module).items():
            if isinstance(obj, JITFunction) and obj.fn.__module__ == module.__name__:
                found[name] = obj
    return found


def test_every_jit_function_is_compiled():
    """Each kernel has variants; each helper is called from a kernel that has (so compiled)."""
    functions = _jit_functions()
    launched = {v.kernel_name for _, _, v in CASES}
    assert launched <= set(functions)
    reached, frontier = set(launched), list(launched)
    while frontier:
        source = inspect.getsource(functions[frontier.pop()].fn)
        for name in functions:
            if name not in reached and re.search(rf"\b{name}\(", source):
                reached.add(name)
                frontier.append(name)
    assert reached == set(functions), f"never compiled: {sorted(set(functions) - reached)}"


class _Recorder:
    """Stands in for a JITFunction: `kernel[grid](*args, **kwargs)` records the call."""

    def __init__(self, kernel: JITFunction):
        self.kernel = kernel
        self.calls = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((args, kwargs))


_TRITON_TYPE = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32",
                torch.int64: "*i64", torch.int32: "*i32"}


def _as_launched(kernel: JITFunction, args, kwargs):
    """(signature, constexprs, arguments Triton marks as multiples of 16, launch options) of a
    recorded call, typed as Triton types launch arguments."""
    options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages", "enable_fp_fusion")}
    names = kernel.arg_names
    signature, multiple = {}, set()
    for name, value in zip(names, args):
        if isinstance(value, torch.Tensor):
            signature[name] = _TRITON_TYPE[value.dtype]
            multiple.update([name] if value.data_ptr() % 16 == 0 else [])
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            assert -2**31 <= value < 2**31 and value != 1, (name, value)
            signature[name] = "i32"
            multiple.update([name] if value % 16 == 0 else [])
    signature.update(dict.fromkeys(kwargs, "constexpr"))
    signature = {n: signature[n] for n in names}
    return signature, kwargs, multiple, options


def _assert_is_variant(recorded, variant):
    signature, constexprs, multiple, options = recorded
    assert signature == variant.signature
    assert constexprs == variant.constexprs
    assert multiple == set(variant.multiple_of_16)
    assert options == dict(num_warps=variant.num_warps, num_stages=variant.num_stages,
                           enable_fp_fusion=FP_FUSION)


@pytest.mark.parametrize("capability", [80, 90])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("H", [96, 100])  # a multiple of 16, and not
def test_the_sampler_launches_its_variant(monkeypatch, capability, dtype, H):
    # CPU tensors and the GPU's capability: the wrapper's choices for that GPU, nothing runs.
    # (bf16 is left out: on CPU the wrapper widens it to fp32 for the interpreter.)
    variant = variants.sampler_variant(capability, dtype, aligned=H % 16 == 0)
    recorder = _Recorder(sampler_triton._fused_sample_kernel)
    monkeypatch.setattr(sampler_triton, "_fused_sample_kernel", recorder)
    monkeypatch.setattr(sampler_triton, "capability_of", lambda device: capability)
    M, V = 50, 300  # not multiples of 16, as the variants assume
    h, W, b = torch.randn(M, H, dtype=dtype), torch.randn(V, H, dtype=dtype), \
        torch.randn(V, dtype=dtype)
    sampler_triton.sample(h, W, b, 1.5, 2**40 + 3, torch.arange(M) + 2**33)  # seed word >= 2**31
    (args, kwargs), = recorder.calls
    _assert_is_variant(_as_launched(recorder.kernel, args, kwargs), variant)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("H", [64, 256, 768])
def test_the_rtd_loss_launches_its_variants(monkeypatch, dtype, H):
    expected = variants.rtd_forward_variant(dtype, H), variants.rtd_input_grad_variant(dtype, H)
    forward = _Recorder(rtd_loss_triton._rtd_forward_kernel)
    grad = _Recorder(rtd_loss_triton._rtd_input_grad_kernel)
    monkeypatch.setattr(rtd_loss_triton, "_rtd_forward_kernel", forward)
    monkeypatch.setattr(rtd_loss_triton, "_rtd_input_grad_kernel", grad)
    N = 2 * 333  # micro-batch x seq_len, not a multiple of 16
    x, w, b = torch.randn(N, H, dtype=dtype), torch.randn(H, dtype=dtype), \
        torch.randn(1, dtype=dtype)
    labels = torch.rand(N).round()  # rtd_labels: float32
    mask = torch.ones(N, dtype=torch.int64)  # the loader's attention mask
    rtd_loss_triton.forward(x, w, b, labels, mask, compute_grad=True)
    rtd_loss_triton.input_grad(torch.zeros(N), w, torch.ones(()), dtype)
    (args, kwargs), = forward.calls
    _assert_is_variant(_as_launched(forward.kernel, args, kwargs), expected[0])
    (args, kwargs), = grad.calls
    _assert_is_variant(_as_launched(grad.kernel, args, kwargs), expected[1])
