#!/usr/bin/env bash
# Fast-ELECTRA pretraining, ELECTRA-Small shape (recipe `small`: 12 layers, hidden 256,
# 1M steps of 128 x 128 tokens, ZeRO-2 bf16); fits one GPU, scales to many.
# Start it either way (the first starts the DeepSpeed launcher, flags from the environment):
#   bash launch_scripts/pretrain_small.sh [key=value ...]
#   deepspeed [launcher flags] launch_scripts/pretrain_small.sh [key=value ...]
# key=value: run-config overrides, e.g. train.steps=200000 optim.lr=1e-3.
# The environment variables, how this file is bash and Python at once, and multi-node runs:
# the docstring of fast_electra_ds/training/launch.py.
""":"
root=$(cd "$(dirname "$0")/.." && pwd)
[ -n "${PYTHON:-}" ] || { PYTHON="$root/.venv/bin/python"; [ -x "$PYTHON" ] || PYTHON=python3; }  # make setup's venv
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m fast_electra_ds.training.launch "$0" "$@"
: <<'# end of the Python part'
":"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout, not installed
from fast_electra_ds.cli import run_rank  # noqa: E402

sys.exit(run_rank("small", ["mode=fast-electra"]))
# end of the Python part
