"""Running trio code as a deterministic simulation: one seed, one virtual clock, a repeatable scheduler.

Theory of operation
- Time: trio.testing.MockClock(autojump_threshold=0). Virtual time stands still while any task can run
  and jumps to the next deadline when none can, so a simulated minute costs only the work done in it.
- Scheduling: trio runs each batch of runnable tasks in a random order. Hypothesis' trio plugin makes that
  order a function of a seed (sort the batch by task creation, shuffle with trio's module Random); this
  module does the same for any run (`deterministic_scheduling`). It is trio's private API, so it lives in
  that one function, restored on exit.
- Wall clock: the node takes its Unix clock as an argument (Node(wall_clock_ns=...)); the simulated
  cluster hands it the virtual clock after EPOCH_NS (last-modified times, hint times, gossip generations).
- `run_simulation(seed, scenario)`: one trio run of `await scenario(cluster)` on a fresh cluster.
- `SimSession(seed)`: the same cluster kept alive in a trio run on a thread of its own, stepped from
  synchronous code (a Hypothesis state machine): `session.run(afn, *args)` runs `await afn(cluster,
  *args)` there and returns its result (or raises its exception). Between steps the simulation is paused
  exactly: the session waits until every task is blocked, turns the clock's autojump off and only then
  hands control back, so real time spent in the test thread never reaches the simulation.
With the same seed (and the same PYTHONHASHSEED, since the node iterates sets of strings) a run repeats
exactly: the cluster's `digest()` over every delivered message and every client reply is the same.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import trio
import trio.testing

from tools.sim.node_cluster import SimCluster, open_cluster

T = TypeVar("T")
STEP_TIMEOUT_S = 300.0  # real seconds a step may take before the session gives up on the simulation


@contextlib.contextmanager
def deterministic_scheduling(seed: int) -> Iterator[None]:
    """Make trio's scheduler order a function of `seed` for trio runs inside the block.

    Uses trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING and _run._r, as Hypothesis' trio plugin does:
    private names, so everything that touches them is here, and both are restored afterwards."""
    from trio._core import _run

    saved_flag, saved_state = _run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r.getstate()
    _run._ALLOW_DETERMINISTIC_SCHEDULING = True
    _run._r.seed(seed)
    try:
        yield
    finally:
        _run._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag
        _run._r.setstate(saved_state)


@contextlib.contextmanager
def simulation(seed: int) -> Iterator[None]:
    with deterministic_scheduling(seed):
        yield


def run_simulation(seed: int, scenario: Callable[[SimCluster], Awaitable[T]], **cluster_options: Any) -> T:
    """Run `await scenario(cluster)` on a fresh simulated cluster (open_cluster's options) and return its
    result. Everything, the cluster included, is a function of `seed`."""

    async def main() -> T:
        async with open_cluster(seed, **cluster_options) as cluster:
            return await scenario(cluster)

    with simulation(seed):
        return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


class SimSession:
    """A simulated cluster stepped from synchronous code; see the module docstring. Close it when done."""

    def __init__(self, seed: int, **cluster_options: Any) -> None:
        self.seed = seed
        self._options = cluster_options
        self._clock = trio.testing.MockClock(autojump_threshold=0)
        self._commands: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._main, name=f"sim-{seed}", daemon=True)
        self._closed = False
        self.cluster: SimCluster | None = None  # for reading state between steps (the sim is paused)
        self._thread.start()
        self._take()

    def run(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`await afn(cluster, *args)` inside the simulation; its result, or its exception re-raised."""
        if self._closed or not self._thread.is_alive():
            raise RuntimeError("the simulation is not running")
        self._commands.put((afn, args))
        return self._take()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._commands.put(None)
            self._thread.join(STEP_TIMEOUT_S)

    def _take(self) -> Any:
        deadline_s = time.monotonic() + STEP_TIMEOUT_S
        while True:
            try:
                kind, value = self._results.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._results.empty():
                    raise RuntimeError("the simulation ended") from None
                if time.monotonic() > deadline_s:
                    raise RuntimeError(f"a simulation step took over {STEP_TIMEOUT_S} s") from None
        if kind == "error":
            raise value
        return value

    def _main(self) -> None:
        try:
            with simulation(self.seed):
                trio.run(self._serve, clock=self._clock)
        except BaseException as error:  # the run itself failed (a bug in a node): the test sees it
            self._results.put(("error", error))

    async def _serve(self) -> None:
        async with open_cluster(self.seed, **self._options) as cluster:
            self.cluster = cluster
            result: tuple[str, Any] = ("ok", None)
            while True:
                await self._pause()
                self._results.put(result)
                command = await trio.to_thread.run_sync(self._commands.get)
                self._clock.autojump_threshold = 0
                if command is None:
                    return
                afn, args = command
                try:
                    result = ("ok", await afn(cluster, *args))
                except Exception as error:
                    result = ("error", error)

    async def _pause(self) -> None:
        """Return once every other task is blocked, with the clock's autojump off: the simulation is then
        frozen until the next command arrives, however long the test thread takes."""
        self._clock.autojump_threshold = math.inf
        await trio.testing.wait_all_tasks_blocked()
