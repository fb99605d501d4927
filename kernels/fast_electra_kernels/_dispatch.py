"""When a public wrapper runs its Triton kernel rather than its plain-torch reference."""

from __future__ import annotations

import importlib.util
import os

import torch

# Triton's own reading of the flag (a C++ getenv_bool): these spellings mean "on".
_TRUE = ("1", "true", "on", "yes")


def interpreting() -> bool:
    """True when TRITON_INTERPRET asks for @triton.jit kernels to run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE


def use_triton_for(use_triton: bool | None, *tensors: torch.Tensor) -> bool:
    """Resolve a wrapper's `use_triton` argument.

    None picks Triton when it is installed and either every tensor is on a CUDA device or the
    interpreter is on and every tensor is on the CPU (how the tests run the kernels); otherwise the
    plain-torch reference. True or False is obeyed as given.
    """
    if use_triton is not None:
        return use_triton
    if importlib.util.find_spec("triton") is None:
        return False
    if all(t.is_cuda for t in tensors):
        return True
    return interpreting() and all(t.device.type == "cpu" for t in tensors)


# Passed to every kernel launch: whether the compiler may fuse a * b + c into one FMA. Triton's
# default was on and changes to off in 3.10 (Triton 3.9 warns); the kernels' results, and so a
# draw at a near-tie, would change with the Triton version. Fixed here, at the old default.
FP_FUSION = True
