"""benchmarks/gpu_check.py (`make gpu-check`) on a machine without a GPU: its dry run works end
to end, and what must fail loudly does."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_dry_run_runs_every_part_on_cpu(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--output",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (out / "bench_cuda.md").read_text()
    assert "Status: all parts passed" in report
    for section in ("## 1. Packages", "## 2. Kernels", "## 3. Tests", "## 4. Sampler",
                    "## 5. Training steps"):
        assert section in report
    assert "0 default launches spill or fail to compile" in report
    kernels = (out / "kernel_resources_cuda.md").read_text()
    assert "| _fused_sample_kernel | fp16 H%16=0 |" in kernels and "sm_90" in kernels
    assert "test_bf16_zero2_trains_and_resumes_on_cuda[fast-electra]" in report  # collected
    for mode in ("disc-only", "fast-electra", "electra"):
        assert f"| tiny | False | {mode} |" in report
    assert "| tiny | True |" not in report  # compiled steps: the real check's, and test_compile's
    assert "compiled: tokens equal to eager's on 100.0000% of rows" in report
    assert "compiled: torch.compile, backend aot_eager." in report  # inductor: test_compile's
    assert (out / "bench_cuda.csv").is_file() and (out / "bench_cuda_steps.png").is_file()


def test_without_a_gpu_the_real_check_fails_and_says_why(tmp_path, capsys):
    assert gpu_check.main(["--output", str(tmp_path)]) == 1
    report = (tmp_path / "bench_cuda.md").read_text()
    assert "FAILED" in report and "no CUDA device" in report and "--dry-run" in report


def test_a_missing_package_without_wheels_fails_and_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "NEEDED", {"no_such_module_xyz": "no-such-dist"})
    # the default of --wheels, read when main() parses its arguments
    monkeypatch.setattr(gpu_check, "WHEELS", tmp_path / "no-wheels")
    assert gpu_check.main(["--dry-run", "--output", str(tmp_path / "out")]) == 1
    report = (tmp_path / "out" / "bench_cuda.md").read_text()
    assert "no-such-dist" in report and "make gpu-wheels" in report
    assert "## 5. Training steps" not in report  # nothing runs without its packages


def test_a_skipped_or_failed_gpu_test_is_a_failure(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text("""<?xml version="1.0"?><testsuites><testsuite>
      <testcase classname="tests.a" name="ok"/>
      <testcase classname="tests.a" name="broken"><failure message="boom"/></testcase>
      <testcase classname="tests.a" name="skipped"><skipped message="needs scipy"/></testcase>
      <testcase classname="tests.a" name="child">
        <skipped message="the kernel tests run in this process"/></testcase>
    </testsuite></testsuites>""")
    counts, problems = gpu_check.junit_outcomes(junit)
    assert counts == {"passed": 1, "failed": 1, "skipped": 1}
    assert any("broken: boom" in p for p in problems)
    assert any("skipped SKIPPED: needs scipy" in p for p in problems)
    assert gpu_check.junit_outcomes(tmp_path / "missing.xml")[1]  # no report is a problem too


def test_a_part_past_the_budget_is_stopped_and_the_rest_named():
    check = gpu_check.Check(dry_run=False, budget_s=1.0)
    start = time.perf_counter()
    check.run_part("slow", lambda c: time.sleep(30))
    assert time.perf_counter() - start < 5
    check.run_part("after", lambda c: None)
    assert any(f.startswith("slow: PartTimeout: stopped at the end of the 1 s budget")
               for f in check.failures)
    assert "after: not run (the 1 s budget is spent)" in check.failures
    assert any("## slow" in section for section in check.sections)


def test_a_missing_parent_package_counts_as_missing():
    # find_spec("megatron.core") raises where megatron is not installed (the GPU machine)
    assert not gpu_check._importable("no_such_parent_xyz.core")
    assert gpu_check._importable("xml.etree")
