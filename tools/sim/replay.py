"""Seeds for simulation tests, and the replay line a failing test prints.

`seeds(defaults)` returns the seeds a test runs: the defaults, or only `SIM_SEED` when that environment
variable is set. `replayable(seed)` wraps a run: on failure it prints and attaches (as an exception note)
the seed and a command line that runs the same test with that one seed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator


def seeds(defaults: Iterable[int]) -> list[int]:
    chosen = os.environ.get("SIM_SEED")
    return [int(chosen)] if chosen else list(defaults)


def replay_line(seed: int) -> str:
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    test = current.split(" ")[0].split("[")[0] or "tests/sim"
    return f"SIM_SEED={seed} {sys.executable} -m pytest '{test}'"


@contextlib.contextmanager
def replayable(seed: int) -> Iterator[None]:
    try:
        yield
    except BaseException as error:
        line = f"simulation failed with seed {seed}; replay: {replay_line(seed)}"
        print(line)
        error.add_note(line)
        raise
