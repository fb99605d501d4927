#!/usr/bin/env bash
# Train the generator that a Fast-ELECTRA run keeps frozen: mode=mlm on the generator shape of
# recipe RECIPE (default small; or --recipe=NAME), written as a HF masked-LM folder to
# runs/<recipe>-mlm/generator, the default GENERATOR of pretrain_<recipe>.sh.
# Start it either way (the first starts the DeepSpeed launcher, flags from the environment):
#   bash launch_scripts/train_generator.sh [key=value ...]
#   deepspeed [launcher flags] launch_scripts/train_generator.sh [key=value ...]
# key=value: run-config overrides, e.g. train.steps=100000 generator.num_layers=6.
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

# runs/<recipe>-mlm/generator is where each recipe's generator.path points
sys.exit(run_rank("small", ["mode=mlm", "run_dir=runs/{recipe}-mlm"]))
# end of the Python part
