"""Run folders: runs/<task>/<name>, numbered exp, exp2, exp3 ... unless --exist-ok."""
from __future__ import annotations

from pathlib import Path


def increment_path(path, exist_ok: bool = False, mkdir: bool = True) -> Path:
    path = Path(path)
    if path.exists() and not exist_ok:
        n = 2
        while Path(f"{path}{n}").exists():
            n += 1
        path = Path(f"{path}{n}")
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path
