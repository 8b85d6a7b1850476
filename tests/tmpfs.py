"""A small file system of a test's own: a real mount point, and a disk that really fills up."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """A `size_bytes` tmpfs mounted at `path` for the block; writes past it fail with ENOSPC.

    Mounting needs root with CAP_SYS_ADMIN (a developer container, CI as root). A full disk
    made any other way (a size limit on the process, a mocked write) fails differently, so
    these tests do not pretend: without the privilege they fail and say why.
    """
    path.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(path)]
    mounted = subprocess.run(mount, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(
            f"cannot mount a tmpfs at {path} ({mounted.stderr.strip()}); this test needs root "
            "with CAP_SYS_ADMIN",
            pytrace=False,
        )
    try:
        yield path
    finally:
        # Lazy: a process of the test that still holds a file there does not keep it mounted.
        subprocess.run(["umount", "--lazy", str(path)], check=True)
