"""Finding a system tool the benchmark runs (wrk, etcd), installing its Debian package when it is missing.

Installing needs root and apt-get; a fresh machine may have no package lists yet, so a failed install is
tried once more after `apt-get update`. apt-get runs non-interactively: a prompt would hang the bench.
"""

from __future__ import annotations

import os
import shutil
import subprocess


class ToolMissing(RuntimeError):
    """The tool is not on PATH and could not be installed; the message says which and why."""


def find_or_install(binary: str, package: str, install: bool = True) -> str:
    """The path of `binary`; installs Debian's `package` when it is missing, `install` is set and we are root."""
    path = shutil.which(binary)
    if path:
        return path
    hint = f"install it (Debian/Ubuntu: `apt-get install {package}`) and run again"
    if not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ToolMissing(f"{binary} is not installed: {hint}")
    done = _apt("install", "-y", package)
    if done.returncode != 0:
        _apt("update")
        done = _apt("install", "-y", package)
    path = shutil.which(binary)
    if not path:
        raise ToolMissing(f"`apt-get install -y {package}` did not give a {binary} binary "
                          f"({done.stdout.strip()[-300:]}); {hint}")
    return path


def _apt(*arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}  # never stop at a prompt
    return subprocess.run(["apt-get", *arguments], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=environment)
