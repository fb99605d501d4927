#!/usr/bin/env bash
# Fast-ELECTRA pretraining of the `tiny` recipe (2 layers, hidden 64): minutes on a CPU.
# The tests start it both ways; on a machine without a GPU set DS_ACCELERATOR=cpu and
# GPUS_PER_NODE (CPU ranks), e.g.
#   DS_ACCELERATOR=cpu GPUS_PER_NODE=2 DATA=data/kjv bash launch_scripts/pretrain_tiny.sh
#
#   bash launch_scripts/pretrain_tiny.sh [key=value ...]
#       starts the DeepSpeed launcher itself, configured by the variables below
#   deepspeed [launcher flags] launch_scripts/pretrain_tiny.sh [key=value ...]
#       the same run, launcher flags given by you
#
# key=value arguments are run-config overrides (`fast-electra config --list` shows every key),
# e.g. train.steps=50 mode=electra.
#
# Environment (all optional):
#   DATA           data.paths: prepared dataset folder(s), comma-separated
#   GENERATOR      generator.path: the frozen generator folder (train_generator.sh writes
#                  one); default runs/tiny-mlm/generator
#   RUN_DIR        run_dir: the output folder; default runs/tiny
#   DS_CONFIG      ds_config: the DeepSpeed JSON; default ds_configs/cpu_fp32.json
#   HOSTFILE       MPI-style hostfile, `node-1 slots=8` per line; unset = this machine only
#   GPUS_PER_NODE  ranks per node (alias NUM_GPUS; default: every visible GPU)
#   NUM_NODES, MASTER_ADDR, MASTER_PORT, NODE_RANK, LAUNCHER, LAUNCHER_ARGS, RECIPE: see
#                  fast_electra_ds/training/launch.py; PYTHON: the interpreter (default: the repo's .venv, else
#                  python3)
#   Multi-node: the bash form passes DATA..DS_CONFIG to every node on the command line; anything
#   else the remote ranks need (HF_HOME, WANDB_*, LD_LIBRARY_PATH, ...) goes into .deepspeed_env
#   in the working directory or $HOME, one KEY=VALUE per line (README: "Running on a cluster").
#
# This file is bash and Python at once. Bash runs the block below, which starts the launcher and
# never returns (the Python code after it is a here-document to bash, so `bash -n` passes too).
# Python reads that block as a string literal and runs the code after it, once per rank (the
# launcher starts every rank as `python -u THIS_FILE --local_rank=N ...`).
""":"
root=$(cd "$(dirname "$0")/.." && pwd)
[ -n "${PYTHON:-}" ] || { PYTHON="$root/.venv/bin/python"; [ -x "$PYTHON" ] || PYTHON=python3; }  # make setup's venv
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m fast_electra_ds.training.launch "$0" "$@"
: <<'# end of the Python part'
":"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout, not installed
from fast_electra_ds.training.launch import run_rank  # noqa: E402

sys.exit(run_rank("tiny", ["mode=fast-electra"]))
# end of the Python part
