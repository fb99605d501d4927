"""One writer per run directory: an exclusive lock that a training run holds for its whole life.

A cluster starts the same job twice more often than one would think: a SLURM requeue while the
old allocation drains, a user re-submitting, two launch scripts pointed at one RUN_DIR. Without a
lock both runs resume from the same checkpoint, then save under the same tags and append to one
metrics.jsonl. So rank 0 takes `fcntl.flock(LOCK_EX | LOCK_NB)` on RUN_DIR/run.lock before
anything else is written, and holds it until the run ends. The kernel drops the lock when the
process dies, however it dies, so there is never a stale lock to clean up; the file itself stays
and says who held it last. (flock works across the hosts of a shared filesystem where that
filesystem supports it: NFSv4 and Lustre with `flock` mounted do; a local disk is one host.)

A run refused before it wrote anything takes its trace back on `release`: the run.lock it
created, and run_dir (with its parents) where `acquire` created it. A folder that was there
before, and whatever it held, stays.

Readers take no lock: `export` and `evaluate` read committed checkpoints, which a running run only
ever adds (and deletes beyond keep_last, after a newer commit).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

from fast_electra_ds.errors import UserError

LOCK_FILE = "run.lock"


class RunDirLock:
    """Held from `acquire()` until `release()` or the process's end."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None
        self._created: list[Path] = []  # the folders acquire() made, run_dir first
        self._found: set[str] | None = None  # what run_dir held before, if it had no lock file

    def acquire(self) -> None:
        """Take the lock, or raise UserError naming the run that holds it."""
        folder, created = self.path.parent, []
        while not folder.exists():
            created.append(folder)
            folder = folder.parent
        self.path.parent.mkdir(parents=True, exist_ok=True)
        found = set(os.listdir(self.path.parent))
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(
                f"run_dir {self.path.parent} is in use by another run ({holder}): two runs in "
                f"one run_dir would mix their checkpoints and metrics. Wait for it to finish or "
                f"stop it (it saves on SIGTERM), or give this run another run_dir") from None
        # ours now: say who holds it (a reader of the file sees the last holder once we end)
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "command": shlex.join(sys.argv)}
        data = (json.dumps(holder) + "\n").encode()
        os.pwrite(fd, data, 0)  # then cut what a longer previous holder line left behind
        os.ftruncate(fd, len(data))
        os.fsync(fd)
        self._fd = fd
        self._created, self._found = created, (found if LOCK_FILE not in found else None)

    def release(self) -> None:
        """Unlock. If nothing new appeared in run_dir but the lock file that acquire() created
        (the run was refused before it wrote anything), that file goes again, and so do run_dir
        and its parents where acquire() created them."""
        if self._fd is None:
            return
        if (self._found is not None
                and set(os.listdir(self.path.parent)) == self._found | {LOCK_FILE}):
            self.path.unlink()  # still holding the lock: no other run is using the folder
            for folder in self._created:
                try:
                    folder.rmdir()
                except OSError:  # not empty: something was put there meanwhile; it stays
                    break
        self._created, self._found = [], None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """'pid P on host H since T: COMMAND' from the lock file, as well as it can be read."""
    try:
        info = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
        return (f"pid {info['pid']} on host {info['host']} since {info['started']}: "
                f"{info['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown: the lock file does not say"
