"""A client-side history of reads and writes, and the checkers that judge it (pure: no trio, no I/O).

Shared by the real-process tests (tests/e2e/test_fault.py) and the simulator (tests/sim/test_sim_node_*).
Values are unique per write, so a value names the write that made it. A write records the values its read
returned (`seen`): its causal context covers exactly those, so a successful write supersedes them.

One checker per invariant; each returns a list of problems (empty when the history is fine):
- `check_history`: no value appeared that nobody wrote (read or final), and no acknowledged write is lost:
  each is in the final state, or an ancestor of something there (superseded by a write whose read saw it,
  transitively).
- `check_resurrections`: nothing an acknowledged write superseded (an overwrite or a delete that saw it) is
  in the final state. Only meaningful once replicas converged (final reads at r=all after heal).
"""

from __future__ import annotations

import dataclasses
import threading


@dataclasses.dataclass
class Write:
    key: str
    value: bytes  # b"" for a delete (a delete writes no value; it only supersedes what it saw)
    seen: frozenset[bytes]  # values the read before it returned: its context covers them
    outcome: str = "pending"  # ok | refused (never reached a node) | unknown (anything else)
    delete: bool = False


class History:
    """Every write attempt and every value any read returned (writer threads may share one)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writes: list[Write] = []
        self.reads: list[tuple[str, frozenset[bytes]]] = []

    def record_read(self, key: str, values: frozenset[bytes]) -> None:
        with self.lock:
            self.reads.append((key, values))

    def begin(self, write: Write) -> None:
        with self.lock:
            self.writes.append(write)

    def outcomes(self) -> dict[str, int]:
        return {o: sum(w.outcome == o for w in self.writes) for o in ("ok", "unknown", "refused", "pending")}


def check_history(history: History, final: dict[str, frozenset[bytes]]) -> list[str]:
    """No invented values, no lost acknowledged writes; see the module docstring."""
    problems = []
    by_value = {w.value: w for w in history.writes if not w.delete}
    possible = {w.value for w in history.writes if w.outcome != "refused" and not w.delete}
    for key, values in list(history.reads) + list(final.items()):
        for value in values - possible:
            problems.append(f"{key}: {value!r} was read but nobody wrote it (or its write never arrived)")
    # Deletes supersede too: an acknowledged write is also covered when a delete that saw it is an ancestor
    # of what is left, or when what is left is nothing but what deletes covered.
    supersede: dict[str, list[Write]] = {}
    for write in history.writes:
        if write.delete and write.outcome != "refused":
            supersede.setdefault(write.key, []).append(write)

    def ancestors(values: set[bytes], key: str) -> set[bytes]:
        found, stack = set(), list(values)
        while stack:
            write = by_value.get(stack.pop())
            for earlier in write.seen if write else ():
                if earlier not in found:
                    found.add(earlier)
                    stack.append(earlier)
        return found

    for key, values in final.items():
        covered = set(values) | ancestors(set(values), key)
        for delete in supersede.get(key, ()):
            covered |= delete.seen | ancestors(set(delete.seen), key)
        for write in history.writes:
            if write.key == key and write.outcome == "ok" and not write.delete and write.value not in covered:
                problems.append(f"{key}: acknowledged write {write.value!r} is lost (final {sorted(values)})")
    return problems


def check_resurrections(history: History, final: dict[str, frozenset[bytes]]) -> list[str]:
    """Nothing an acknowledged write or delete superseded is back in the converged final state."""
    problems = []
    for write in history.writes:
        if write.outcome != "ok":
            continue
        back = write.seen & final.get(write.key, frozenset())
        for value in sorted(back):
            what = "delete" if write.delete else f"write {write.value!r}"
            problems.append(f"{write.key}: {value!r} is back although acknowledged {what} superseded it")
    return problems
