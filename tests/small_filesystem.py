"""A real, small filesystem that fills up: tmpfs of a given size (root only), else a loop-mounted ext4 image.
Also for scripts (the fault drill): OSError says why when this machine cannot mount one."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True).returncode == 0


@contextmanager
def small_filesystem(folder, size_kib: int, options: str = "") -> Iterator[str]:
    """Mounts a ``size_kib`` KiB filesystem at ``folder/mnt`` (``options``: more mount options, e.g. "ro")."""
    mount = os.path.join(folder, "mnt")
    os.makedirs(mount, exist_ok=True)
    image = os.path.join(folder, "disk.img")
    extra = f",{options}" if options else ""
    if not _run("mount", "-t", "tmpfs", "-o", f"size={size_kib}k{extra}", "tmpfs", mount):
        mounted = (_run("truncate", "-s", f"{max(size_kib, 1024)}k", image)
                   and _run("mkfs.ext4", "-q", "-m", "0", image)
                   and _run("mount", "-o", f"loop{extra}", image, mount))
        if not mounted:
            raise OSError("cannot mount a small filesystem here (tmpfs and loop-mounted ext4 need root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", mount], check=True)
