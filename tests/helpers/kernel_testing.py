"""Running the kernels' tests on a machine without a GPU, under Triton's interpreter.

The interpreter needs TRITON_INTERPRET=1 before triton's first import in the process: triton's own
tl.sum / tl.argmax are @triton.jit functions, interpreted or compiled as decided then. In a pytest
session other modules may already have imported triton (deepspeed does), so on a CPU machine a
kernel test module re-runs itself in a child process with the flag set, and skips its kernel tests
in the parent. A test module takes both pieces from here:

    from helpers.kernel_testing import kernel_test, test_kernels_in_interpreter_process

and marks its kernel tests @kernel_test (pytest collects the imported test in each module, and
`request.path` is that module's file). The child is pytest on that file from the repository root,
so it reads the same pytest settings, tests/ on its path included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fast_electra_kernels._dispatch import interpreting

# where the kernel tests put their tensors: compiled kernels on a GPU, else the interpreter on CPU
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RUN_IN_CHILD = KERNEL_DEVICE == "cpu" and not interpreting()
CHILD_REASON = "run by test_kernels_in_interpreter_process"


def assert_passes_in_interpreter_process(test_file: str) -> None:
    """Run `pytest test_file` in a child process with TRITON_INTERPRET=1; fail with its output."""
    child = subprocess.run(
        [sys.executable, "-m", "pytest", test_file, "-q"], cwd=Path(test_file).parents[1],
        env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True)
    assert child.returncode == 0, child.stdout[-6000:] + child.stderr[-3000:]


kernel_test = pytest.mark.skipif(RUN_IN_CHILD, reason=CHILD_REASON)


@pytest.mark.skipif(not RUN_IN_CHILD, reason="the kernel tests run in this process")
def test_kernels_in_interpreter_process(request):
    """On a CPU machine: the importing module's kernel tests, interpreted."""
    assert_passes_in_interpreter_process(str(request.path))


def draw_margin(z: torch.Tensor, seed: int, rows: torch.Tensor) -> torch.Tensor:
    """[n] fp32: how clearly the two-level draw of each row of z [n, V] (sampler.gumbel_max) is
    decided, the smaller of its two gaps: between the best and second-best group scores, and
    between the best and second-best perturbed logits in the winning group. Two paths that
    compute z or the group sums in another order may only draw differently where this is tiny.
    Recomputed here with torch.logsumexp, not with gumbel_max's own arithmetic."""
    from fast_electra_kernels import counter_rng, sampler

    n, v = z.shape
    groups = -(-v // sampler.GROUP)
    z3 = torch.nn.functional.pad(z.float(), (0, groups * sampler.GROUP - v),
                                 value=float("-inf")).view(n, groups, sampler.GROUP)
    keys = counter_rng.row_keys(seed, rows)
    group_ids = torch.arange(groups, device=z.device)
    group_score = torch.logsumexp(z3, -1) + counter_rng.gumbel_from_uniform(
        counter_rng.uniform_from_keys(counter_rng.group_keys(keys), group_ids))  # [n, groups]
    chosen = group_score.argmax(-1)
    noise = counter_rng.gumbel_noise(seed, rows, groups * sampler.GROUP)
    inner = (z3 + noise.view(n, groups, sampler.GROUP))[torch.arange(n), chosen]  # [n, GROUP]

    def gap(scores):
        if scores.shape[-1] < 2:
            return torch.full(scores.shape[:-1], float("inf"), device=scores.device)
        top2 = scores.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]

    return torch.minimum(gap(group_score), gap(inner))
