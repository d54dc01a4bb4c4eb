"""The deterministic simulator: one clock, one event heap, one seeded random generator, many processes.

Theory of operation
- Everything that happens is an entry in a heap ordered by (time, sequence number): a message arriving, a
  timer firing, or a scheduled callback (a fault script). The sequence number breaks ties in the order
  things were scheduled, so a run is a pure function of the seed and the calls made on the world.
- One `random.Random(seed)` drives the network and seeds each process's own generator when it (re)starts;
  nothing iterates a set or dict whose order could depend on hashing.
- Nodes are slots: a factory, a durable dict and the current process (None while crashed). Each start
  raises the slot's incarnation; a message sent to an earlier incarnation, or timers it armed, are
  discarded, as a restart breaks connections and loses in-process state.
- The trace is a list of (time, kind, ...) tuples and a running hash of it; two runs with the same seed
  produce equal traces. Log lines carry the simulated time.
- A bounded history of delivered messages lets a test re-inject stale ones (`replay`).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tools.sim.network import Network, NetworkConfig
from tools.sim.process import Factory, Note, Process, Send, Timer

LOG = logging.getLogger("sim")
DELIVER, FIRE, CALL = 0, 1, 2


@dataclass(slots=True)
class Slot:
    factory: Factory
    durable: dict[str, Any]
    process: Process | None = None
    incarnation: int = 0
    timers: dict[str, int] = field(default_factory=dict)   # name -> sequence number of the live entry


@dataclass(slots=True)
class Stats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    bytes_sent: int = 0
    sent_by: dict[str, int] = field(default_factory=dict)
    bytes_by: dict[str, int] = field(default_factory=dict)


class World:
    def __init__(self, seed: int, network: NetworkConfig | None = None, *, keep_trace: bool = True,
                 sizer: Callable[[Any], int] | None = None, history_size: int = 256,
                 log_size: int = 10_000):
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.network = Network(self.rng, network)
        self.nodes: dict[str, Slot] = {}
        self.stats = Stats()
        self.trace: list[tuple] = []
        self.keep_trace = keep_trace
        self.sizer = sizer
        self.history: deque[tuple[str, str, Any]] = deque(maxlen=history_size)
        self.log_lines: deque[str] = deque(maxlen=log_size)
        self._trace_hash = hashlib.blake2b(digest_size=16)
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()

    # ---- nodes --------------------------------------------------------------------------------------

    def add(self, node: str, factory: Factory, durable: dict[str, Any] | None = None) -> Process:
        if node in self.nodes:
            raise ValueError(f"node {node!r} already exists")
        self.nodes[node] = Slot(factory, {} if durable is None else durable)
        return self.restart(node)

    def crash(self, node: str) -> None:
        slot = self.nodes[node]
        if slot.process is None:
            raise ValueError(f"node {node!r} is not running")
        slot.process = None
        slot.timers = {}
        self._record("crash", node)

    def restart(self, node: str) -> Process:
        slot = self.nodes[node]
        if slot.process is not None:
            self.crash(node)
        slot.incarnation += 1
        slot.process = slot.factory(node, slot.durable, random.Random(self.rng.getrandbits(64)))
        self._record("start", node, slot.incarnation)
        self.apply(node, slot.process.start(self.now))
        return slot.process

    def process(self, node: str) -> Process | None:
        slot = self.nodes.get(node)
        return None if slot is None else slot.process

    def running(self) -> list[str]:
        return [node for node, slot in self.nodes.items() if slot.process is not None]

    # ---- faults and injection -----------------------------------------------------------------------

    def partition(self, *groups: set[str] | list[str]) -> None:
        self.network.partition(groups)
        self._record("partition", tuple(tuple(sorted(g)) for g in groups))

    def heal(self) -> None:
        self.network.heal()
        self._record("heal")

    def clog(self, src: str, dst: str, duration_s: float) -> None:
        self.network.clog(src, dst, self.now + duration_s)
        self._record("clog", src, dst, duration_s)

    def inject(self, src: str, dst: str, message: Any, delay_s: float = 0.0) -> None:
        """Deliver `message` as if `src` had sent it now (bypasses loss and partitions)."""
        self._push(self.now + delay_s, DELIVER, (src, dst, self.nodes[dst].incarnation, message))

    def replay(self, index: int) -> tuple[str, str, Any] | None:
        """Re-deliver the index-th oldest remembered message (a stale duplicate from the past)."""
        if not self.history:
            return None
        src, dst, message = self.history[index % len(self.history)]
        self._record("replay", src, dst, type(message).__name__)
        self.inject(src, dst, message)
        return src, dst, message

    def at(self, at_s: float, callback: Callable[[], None]) -> None:
        self._push(at_s, CALL, callback)

    # ---- running ------------------------------------------------------------------------------------

    def run_until(self, until_s: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until_s:
            at_s, _, kind, payload = heapq.heappop(heap)
            self.now = at_s
            if kind == DELIVER:
                self._deliver(*payload)
            elif kind == FIRE:
                self._fire(*payload)
            else:
                payload()
        self.now = max(self.now, until_s)

    def run_for(self, duration_s: float) -> None:
        self.run_until(self.now + duration_s)

    def run_while(self, condition: Callable[[], bool], until_s: float, step_s: float) -> bool:
        """Run in steps of `step_s` while `condition()` holds; False if `until_s` came first."""
        while condition():
            if self.now >= until_s:
                return False
            self.run_until(min(until_s, self.now + step_s))
        return True

    # ---- trace and log ------------------------------------------------------------------------------

    def log(self, node: str, text: str) -> None:
        line = f"[{self.now:10.3f}s] {node}: {text}"
        self.log_lines.append(line)
        LOG.debug(line)

    def trace_digest(self) -> str:
        return self._trace_hash.hexdigest()

    def _record(self, kind: str, *details: Any) -> None:
        entry = (round(self.now, 9), kind) + details
        self._trace_hash.update(repr(entry).encode())
        if self.keep_trace:
            self.trace.append(entry)

    # ---- internals ----------------------------------------------------------------------------------

    def _push(self, at_s: float, kind: int, payload: Any) -> None:
        heapq.heappush(self._heap, (at_s, next(self._seq), kind, payload))

    def apply(self, node: str, actions: list) -> None:
        """Carry out a process's actions (also for operations a test calls on it between events)."""
        slot = self.nodes[node]
        for action in actions:
            if isinstance(action, Send):
                self._send(node, action.to, action.message)
            elif isinstance(action, Timer):
                seq = next(self._seq)
                slot.timers[action.name] = seq
                heapq.heappush(self._heap, (action.at_s, seq, FIRE, (node, slot.incarnation, action.name, seq)))
            elif isinstance(action, Note):
                self.log(node, action.text)
                self._record("note", node, action.text)
            else:
                raise TypeError(f"unknown action {action!r}")

    def _send(self, src: str, dst: str, message: Any) -> None:
        stats = self.stats
        stats.sent += 1
        stats.sent_by[src] = stats.sent_by.get(src, 0) + 1
        if self.sizer is not None:
            size = self.sizer(message)
            stats.bytes_sent += size
            stats.bytes_by[src] = stats.bytes_by.get(src, 0) + size
        slot = self.nodes.get(dst)
        times = self.network.route(src, dst, self.now) if slot is not None else []
        if not times:
            stats.dropped += 1
        stats.duplicated += len(times) > 1
        for at_s in times:
            self._push(at_s, DELIVER, (src, dst, slot.incarnation, message))

    def _deliver(self, src: str, dst: str, incarnation: int, message: Any) -> None:
        slot = self.nodes[dst]
        if slot.process is None or slot.incarnation != incarnation or not self.network.can_reach(src, dst):
            self.stats.dropped += 1
            return
        self.stats.delivered += 1
        self.history.append((src, dst, message))
        self._record("deliver", src, dst, type(message).__name__)
        self.apply(dst, slot.process.deliver(src, message, self.now))

    def _fire(self, node: str, incarnation: int, name: str, seq: int) -> None:
        slot = self.nodes[node]
        if slot.process is None or slot.incarnation != incarnation or slot.timers.get(name) != seq:
            return  # crashed, restarted, or the timer was re-armed since
        del slot.timers[name]
        self.apply(node, slot.process.fire(name, self.now))
