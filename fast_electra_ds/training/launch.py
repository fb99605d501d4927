"""What the launch scripts share: environment variables -> DeepSpeed launcher flags and run config.

This docstring is the one explanation the scripts point to. Every `launch_scripts/*.sh` but
demo.sh is a bash script and a Python program at once, so one file serves both ways of starting
a run:

  bash launch_scripts/pretrain_large.sh [key=value ...]
      bash reads the top of the file and runs
      `python -m fast_electra_ds.training.launch FILE [args]`, i.e. `start_launcher` below: it
      starts the DeepSpeed launcher on that same FILE, with --hostfile/--num_gpus/... taken from
      the environment.
  deepspeed [launcher flags] launch_scripts/pretrain_large.sh [key=value ...]
      the launcher runs `python -u FILE --local_rank=N [args]` on every rank; Python skips the
      bash part (a string literal) and calls `cli.run_rank`, which hands the script's recipe, its
      settings, the environment's and the command line's overrides to `fast-electra pretrain`.

The arguments are run-config overrides (`fast-electra config --list` shows every key) and
`--recipe=NAME`. Without a GPU, DS_ACCELERATOR=cpu runs the ranks on CPU processes
(GPUS_PER_NODE of them), as the tests do with pretrain_tiny.sh.

How one file is both. The first line after the header comment is 3 double quotes, a colon and a
double quote. To bash that is the no-op command `:` (the empty string "" followed by ":"); to
Python it opens a string literal, which a line of a double quote, a colon and 3 double quotes
closes a few lines below. In between are the bash lines: they choose the interpreter (PYTHON,
below) and `exec` this module on the file, so bash reads no further. The last bash line,
`: <<'# end of the Python part'`, makes the rest of the file, down to that comment on its last
line, a here-document, so that `bash -n` passes on the whole file. Python skips the bash lines
as the string, puts the checkout on sys.path (a rank may run without the package installed) and
calls `cli.run_rank(recipe, settings)` (the command line: `rank_argv` below). Scripts differ only
in their header, recipe and settings.

Run config from the environment (read on each rank; the bash form also turns them into
command-line arguments, which the launcher passes to every node, remote ones included):

  DATA        data.paths: prepared dataset folder(s), comma-separated
  GENERATOR   generator.path: the frozen generator (a HF masked-LM folder); train_generator.sh
              writes runs/<recipe>-mlm/generator, where each recipe's generator.path points
  RUN_DIR     run_dir: where config, logs and checkpoints go
  DS_CONFIG   ds_config: the DeepSpeed JSON (speed and memory settings)
  RECIPE      the run recipe (a bundled name or a YAML path) instead of the script's own;
              travels as `--recipe=NAME`, which the scripts also take on the command line

Unset, each comes from the recipe (RECIPE: the script's). Read by the bash form only:

  PYTHON           the interpreter that has this package and DeepSpeed; the launcher and its
                   ranks run with it (default: the checkout's .venv/bin/python, else python3)
  HOSTFILE         --hostfile: MPI-style lines `node-1 slots=8`; unset = this machine only
  GPUS_PER_NODE    --num_gpus (NUM_GPUS is accepted too): ranks per node; default: every
                   visible GPU
  NUM_NODES        --num_nodes: use the first N hosts of the hostfile
  MASTER_ADDR      --master_addr: address of the first node (else DeepSpeed asks it over ssh)
  MASTER_PORT      --master_port
  NODE_RANK        --no_ssh --node_rank: start one launcher per node yourself (e.g. `srun`)
                   instead of DeepSpeed reaching the other nodes over ssh (pdsh)
  LAUNCHER         --launcher: pdsh (default), openmpi, mvapich, slurm, mpich, impi
  LAUNCHER_ARGS    --launcher_args: extra arguments for that backend, one quoted string

Several nodes. Over ssh (a HOSTFILE of several hosts), the ranks on the other nodes see none of
this environment except what DeepSpeed forwards (NCCL*, PYTHON*, UCX*, ...) and what
`.deepspeed_env` lists, in the working directory or $HOME, one KEY=VALUE per line: put there what
they need (HF_HOME, WANDB_*, LD_LIBRARY_PATH, ...) and, with the `deepspeed` form, DATA,
GENERATOR, RUN_DIR and DS_CONFIG too (or pass them as overrides). With NODE_RANK, one launcher
per node and no ssh, as launch_scripts/slurm_pretrain.sbatch does under SLURM (srun carries the
whole environment). README, "Running on a cluster", has an example `.deepspeed_env`.

Later sources win: the recipe, then the script's settings, then the environment, then the
command-line arguments. A script's settings may name the recipe as `{recipe}` (its file stem),
e.g. `run_dir=runs/{recipe}-mlm`.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from fast_electra_ds.errors import UserError

# environment variable -> run config key
CONFIG_VARIABLES = {
    "DATA": "data.paths",
    "GENERATOR": "generator.path",
    "RUN_DIR": "run_dir",
    "DS_CONFIG": "ds_config",
}
# environment variable -> DeepSpeed launcher flag; all take a value
_LAUNCHER_FLAGS = {
    "HOSTFILE": "--hostfile",
    "NUM_NODES": "--num_nodes",
    "MASTER_ADDR": "--master_addr",
    "MASTER_PORT": "--master_port",
    "LAUNCHER": "--launcher",
    "LAUNCHER_ARGS": "--launcher_args",
}
_INTEGER_VARIABLES = ("GPUS_PER_NODE", "NUM_GPUS", "NUM_NODES", "MASTER_PORT", "NODE_RANK")


def env_overrides(environ: Mapping[str, str] = os.environ) -> list[str]:
    """`key=value` config overrides for the variables of CONFIG_VARIABLES that are set."""
    return [f"{key}={environ[var]}" for var, key in CONFIG_VARIABLES.items() if environ.get(var)]


def rank_argv(recipe: str, settings: Sequence[str], argv: Sequence[str],
              environ: Mapping[str, str] = os.environ) -> list[str]:
    """The `fast-electra` command line of one rank.

    `argv` is what the DeepSpeed launcher gave the script: `--local_rank=N` (first) and the
    user's arguments. The CLI takes --local_rank before the subcommand only, so it moves there;
    `--recipe=NAME` is ours and chooses the recipe.
    """
    local_rank = [a for a in argv if a.startswith(("--local_rank=", "--local-rank="))]
    recipes = [a.split("=", 1)[1] for a in argv if a.startswith("--recipe=")]
    rest = [a for a in argv if a not in local_rank and not a.startswith("--recipe=")]
    recipe = recipes[-1] if recipes else environ.get("RECIPE") or recipe
    settings = [s.replace("{recipe}", Path(recipe).stem) for s in settings]
    return [*local_rank, "pretrain", "--config", recipe, *settings, *env_overrides(environ),
            *rest]


def _integer(environ: Mapping[str, str], var: str) -> str | None:
    value = environ.get(var)
    if not value:
        return None
    if not value.isdigit() or (var != "NODE_RANK" and int(value) == 0):
        raise UserError(f"{var}={value!r}: expected a whole number"
                        f"{'' if var == 'NODE_RANK' else ' >= 1'}")
    return value


def launcher_command(script: str, args: Sequence[str],
                     environ: Mapping[str, str] = os.environ) -> list[str]:
    """`python -m deepspeed.launcher.runner [flags from the environment] SCRIPT [overrides] ARGS`.

    The launcher is started with this interpreter (the one that has DeepSpeed and this package),
    and it starts the ranks with the same one.
    """
    for var in _INTEGER_VARIABLES:
        _integer(environ, var)
    if environ.get("GPUS_PER_NODE") and environ.get("NUM_GPUS") \
            and environ["GPUS_PER_NODE"] != environ["NUM_GPUS"]:
        raise UserError(f"GPUS_PER_NODE={environ['GPUS_PER_NODE']} and "
                        f"NUM_GPUS={environ['NUM_GPUS']} disagree; set one of them")
    hostfile = environ.get("HOSTFILE")
    if hostfile and not Path(hostfile).is_file():
        raise UserError(f"HOSTFILE={hostfile} does not exist; write one line per node, e.g. "
                        f"`node-1 slots=8`, or unset HOSTFILE to run on this machine")
    if environ.get("NODE_RANK") and not (hostfile and environ.get("MASTER_ADDR")):
        raise UserError("NODE_RANK (one launcher per node, no ssh) needs HOSTFILE (every node) "
                        "and MASTER_ADDR (the first node's address) as well")

    cmd = [sys.executable, "-u", "-m", "deepspeed.launcher.runner"]
    for var, flag in _LAUNCHER_FLAGS.items():
        if environ.get(var):
            cmd.append(f"{flag}={environ[var]}")
    gpus = environ.get("GPUS_PER_NODE") or environ.get("NUM_GPUS")
    if gpus:
        cmd.append(f"--num_gpus={gpus}")
    if environ.get("NODE_RANK"):
        cmd += ["--no_ssh", f"--node_rank={environ['NODE_RANK']}"]
    # The config variables travel as arguments: the launcher gives them to every rank, also on
    # nodes whose environment does not have them.
    recipe = [f"--recipe={environ['RECIPE']}"] if environ.get("RECIPE") else []
    return [*cmd, script, *recipe, *env_overrides(environ), *args]


def start_launcher(script: str, args: Sequence[str]) -> None:
    """The bash side of a launch script: replace this process by the DeepSpeed launcher, so that
    signals (Ctrl-C, a scheduler's SIGTERM) reach it directly."""
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise UserError(f"{sys.executable} has no DeepSpeed; set PYTHON to the interpreter of the "
                        f"environment that has it (e.g. PYTHON=.venv/bin/python)")
    cmd = launcher_command(script, args)
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    os.execv(cmd[0], cmd)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print("usage: python -m fast_electra_ds.training.launch LAUNCH_SCRIPT [key=value ...] "
              "(the bash part of launch_scripts/*.sh runs this)", file=sys.stderr)
        return 2
    try:
        start_launcher(argv[0], argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0  # not reached: execv does not return


if __name__ == "__main__":
    sys.exit(main())
