"""Paths as a person reads them: relative to the working directory where they are inside it."""

from __future__ import annotations

import os
from pathlib import Path


def shown(path: str | os.PathLike) -> str:
    """`path` relative to the working directory when it lies inside it (what a user typed,
    and what a README sample can show on any machine), else as it is. A hub id, which is no
    path on disk, comes back unchanged."""
    text = os.fspath(path)
    p = Path(text)
    if not p.is_absolute():
        return text
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return text
