"""The master's pidfile: written atomically, refused if a live master owns it."""
from __future__ import annotations

import os
import tempfile

import psutil


class PidfileError(Exception):
    """The pidfile names a live bbsupervise, or cannot be written."""


def owner(path: str) -> int | None:
    """The pid in ``path`` if it is a live bbsupervise master, else None."""
    try:
        with open(path, encoding="ascii") as fh:
            pid = int(fh.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        title = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return None
    return pid if "bbsupervise" in title else None


def write(path: str) -> None:
    """Write our pid via a temp file and rename, so readers never see half a file."""
    live = owner(path)
    if live is not None:
        raise PidfileError(f"pidfile {path} names a running bbsupervise (pid {live})")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".bbsupervise-", dir=directory)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(f"{os.getpid()}\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise PidfileError(f"cannot write pidfile {path}: {exc}") from None


def remove(path: str) -> None:
    """Remove the pidfile if it is still ours."""
    try:
        with open(path, encoding="ascii") as fh:
            if fh.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except (FileNotFoundError, ValueError):
        pass
