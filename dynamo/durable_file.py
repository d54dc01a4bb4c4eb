"""Replacing a small state file so that a crash leaves either the old or the new text, never a mix.

Write a temporary file beside it, fsync it, rename it over the old one, then fsync the directory so the
rename itself survives a power failure. For node.json (identity), ring.json (membership) and staged.json
(force-removals staged on a node).
"""

from __future__ import annotations

import os
import pathlib


def write_durably(path: pathlib.Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
