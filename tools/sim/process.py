"""What a simulated process is: any sans-IO core behind a small adapter.

Theory of operation: the world calls `start(now)` once per incarnation, `deliver(src, message, now)` for each
message that reaches the process and `fire(name, now)` when one of its timers expires. Each call returns a
list of actions: `Send` a message to another node, arm a `Timer` (a timer of the same name is replaced, so a
core with one "next tick" time needs one name), or `Note` a line for the log and trace. A crash discards
the process and its timers; a restart calls the factory again with the node's durable dict, the only thing
that survives (a gossip node keeps its generation counter there; a storage node would keep its store).
Adapters hold no threads, sockets or clocks: the world is the only source of time and randomness.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Send:
    to: str
    message: Any


@dataclass(frozen=True, slots=True)
class Timer:
    name: str
    at_s: float


@dataclass(frozen=True, slots=True)
class Note:
    text: str


Action = Send | Timer | Note


class Process(Protocol):
    def start(self, now: float) -> list[Action]: ...

    def deliver(self, src: str, message: Any, now: float) -> list[Action]: ...

    def fire(self, name: str, now: float) -> list[Action]: ...


# factory(node id, durable dict (survives crashes; the process may write to it), a seeded Random) -> Process
Factory = Callable[[str, dict[str, Any], random.Random], Process]
