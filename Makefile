# make setup  - create or refresh .venv (torch first, then DeepSpeed built against it, then us)
# make demo   - the bundled demo: tokenizer, data, a tiny generator, fast-electra vs electra
# make test   - the test suite (CPU; GPU tests are behind the `gpu` marker)
# make bench  - the quick benchmark suite: electra vs fast-electra (benchmarks/results)
# make gpu-check  - on a GPU machine: GPU tests, the fused sampler, step time and MFU
#                   (benchmarks/gpu_check.py -> benchmarks/results/bench_cuda.md)
# make gpu-wheels - wheels of what gpu-check needs, for a GPU machine without network (.whl/)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PIPQ   := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.setup-done

.PHONY: setup demo test bench gpu-check gpu-wheels clean-demo

setup: $(STAMP)

# Re-runs only when the dependency lists change (or the venv is gone), so `make test` is quick.
# torch goes first and alone: DeepSpeed's build imports it, and without build isolation pip builds
# DeepSpeed against *this* torch instead of downloading another one (several GB of CUDA wheels).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
	$(PIPQ) torch
	$(PIPQ) numpy ninja packaging psutil py-cpuinfo pydantic hjson msgpack
	$(PIPQ) --no-build-isolation --no-cache-dir deepspeed
	$(PIPQ) --no-build-isolation -e '.[dev]'
	@$(PY) -c "import torch, deepspeed, transformers, megatron.core, datasets; print('setup ok: torch', torch.__version__, '| deepspeed', deepspeed.__version__)" 2>/dev/null
	@# DeepSpeed JIT-builds its CPU shared-memory allreduce op the first time a CPU run starts its
	@# process group (~30 s of two compilers): built here, once, as runs look for it
	@# (training/engine.py: with the venv's ninja, in VENV/torch_extensions).
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" TORCH_EXTENSIONS_DIR="$${TORCH_EXTENSIONS_DIR:-$(CURDIR)/$(VENV)/torch_extensions}" DS_ACCELERATOR=cpu $(PY) -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load(verbose=False); print('DeepSpeed CPU comm op built')" 2>/dev/null \
	  || echo "DeepSpeed CPU comm op not built now (no C++ compiler?): the first CPU run will try"
	@touch $@

demo: setup
	bash launch_scripts/demo.sh

# Two workers on two cores: much of the suite waits on launches, rendezvous and the ranks of
# 2-rank runs, which leaves a core idle. Each test file stays on one worker (--dist loadfile),
# so a file's module fixtures are built once; conftest gives each worker one thread, and orders
# the files longest first, which --no-loadscope-reorder keeps (xdist would sort by test count).
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The peer, electra-pytorch, is installed here and without its dependencies: its metadata pins
# transformers==3.0.2 and the retired `sklearn` package, which no resolver can satisfy beside our
# pins (pip would fall back to 0.0.1, a pre-release whose loss cannot run); its code needs only
# torch. constraints.txt pins the version.
bench: setup
	$(PIPQ) --no-deps electra-pytorch
	$(PY) benchmarks/bench.py --quick

# The GPU machine's own Python (with its CUDA torch), not the CPU venv: no `setup` here. What it
# lacks is installed from .whl/ (gpu-wheels) by the script itself.
# GPU_CHECK_ARGS: e.g. make gpu-check GPU_CHECK_ARGS="--output $OUT" (the shell expands $OUT;
# the device tool brings back only what is under it)
GPU_PYTHON ?= python3
GPU_CHECK_ARGS ?=
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

gpu-wheels: setup
	bash benchmarks/gpu_wheels.sh

clean-demo:
	rm -rf .demo
