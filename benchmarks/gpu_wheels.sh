#!/usr/bin/env bash
# Wheels for a GPU machine without network, into .whl/ (git-ignored): what `make gpu-check`
# (benchmarks/gpu_check.py) installs there when the machine's own Python lacks them. For
# CPython 3.12 on x86-64 Linux (GPU_PY_VERSION), at the versions this project's venv has (make
# setup first). Run on a machine with access to the package registry; carry .whl/ with the
# working tree (about 20 MB; the device tool carries 64 MiB at most).
#
# The GPU machine has torch, transformers, triton, tokenizers, safetensors, pyarrow, numpy,
# pytest, matplotlib and tensorboard (and what they depend on: pyyaml, tqdm, huggingface-hub,
# fsspec, filelock, packaging, python-dateutil). Here: everything else the library and its GPU
# tests import, with the dependencies of each:
#   deepspeed       einops hjson msgpack ninja psutil py-cpuinfo pydantic
#   pydantic        pydantic-core annotated-types typing-inspection
#   datasets        dill multiprocess pandas xxhash (pandas: tzdata)
#   megatron-core   (torch, numpy, packaging: present)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-.whl}
GPU_PY_VERSION=${GPU_PY_VERSION:-3.12}
mkdir -p "$OUT"

version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
pinned() { for name in "$@"; do echo "$name==$(version "$name")"; done; }

# compiled or pure-Python wheels from the registry, for the GPU machine's Python
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$GPU_PY_VERSION" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$OUT" \
  $(pinned pydantic pydantic-core annotated-types typing-inspection hjson megatron-core \
           datasets dill multiprocess pandas tzdata xxhash einops msgpack ninja psutil \
           py-cpuinfo)
# DeepSpeed publishes only an sdist: build its pure-Python wheel here, against the venv's torch
# (its ops are compiled just in time where they are used)
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation --no-cache-dir -w "$OUT" \
  "deepspeed==$(version deepspeed)"
ls -la "$OUT"
du -sh "$OUT"
