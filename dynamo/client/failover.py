"""Which node a call goes to next: the client's node list, its memory of their health, and retry rules.

Theory of operation: a `Roster` holds the nodes in the caller's order and, per node, a time before which
it is avoided: a node that refused a connection or broke one is avoided for `down_s`; a node that
answered 503 with Retry-After is avoided for that long. A `Failover` plans one call: the preferred nodes
first (token awareness), then the rest in order, avoided nodes last (better a node that may have come
back than no answer at all). The driver asks `next_step(now_s)` for a node to try or a pause to take,
reports each `answered` or `failed`, and ends with `outcome()`. Time comes in as arguments: no clock here.

Rules kept (a call is "safe" when sending it twice does no harm: reads, pings, props):
- Not connected (refused, unreachable, connect timeout): the request never left, so the next node is
  tried whatever the call.
- Lost after sending (reset, timeout waiting for the answer): a safe call moves on; a write stops there
  and raises, saying it may have been applied: sending it again would add a sibling behind the
  caller's back.
- 503 with Retry-After (an overloaded node): try the next node; when every node was busy, wait for the
  first to free up and go round again, at most `rounds_max` rounds and never past the deadline.
- Any other answer, errors included (a quorum 503, a 400, a 404), is final: another coordinator would
  see the same replicas, and the caller should hear it at once.
"""

from __future__ import annotations

import dataclasses
import threading
import urllib.parse
from collections.abc import Sequence

from dynamo.client.error import InvalidArgument, Timeout, Unavailable

DOWN_S_DEFAULT = 5.0
RETRY_AFTER_MAX_S = 5.0
ROUNDS_MAX_DEFAULT = 2


@dataclasses.dataclass(frozen=True)
class NodeAddress:
    url: str  # "http://host:port", no trailing slash
    host: str
    port: int

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"


def parse_node(text: str) -> NodeAddress:
    """A node's base URL ("http://127.0.0.1:8001", or "127.0.0.1:8001") as a NodeAddress."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument(f"a node must be a URL such as http://127.0.0.1:8001, got {text!r:.60}")
    raw = text.strip()
    parts = urllib.parse.urlsplit(raw if "//" in raw else "http://" + raw)
    try:
        port = parts.port or 80
    except ValueError:
        raise InvalidArgument(f"node {text!r:.60} has an invalid port") from None
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise InvalidArgument(f"a node must be http://host[:port], got {text!r:.60}")
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    return NodeAddress(f"http://{shown}:{port}", host, port)


@dataclasses.dataclass(frozen=True)
class Failure:
    """A call that got no answer from a node."""

    reason: str
    sent: bool  # the request may have reached the node
    timed_out: bool = False


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; a date counts as one second)."""
    if value is None:
        return None
    value = value.strip()
    seconds = float(int(value)) if value.isascii() and value.isdigit() else 1.0
    return min(seconds, RETRY_AFTER_MAX_S)


class Roster:
    """The client's nodes and when each may be tried again. Thread-safe."""

    def __init__(self, nodes: Sequence[str], down_s: float = DOWN_S_DEFAULT) -> None:
        if isinstance(nodes, str):
            nodes = [nodes]
        addresses = [parse_node(node) for node in nodes]
        if not addresses:
            raise InvalidArgument("a client needs at least one node")
        if len({a.url for a in addresses}) != len(addresses):
            raise InvalidArgument("the same node is listed twice")
        if not isinstance(down_s, (int, float)) or down_s < 0:
            raise InvalidArgument(f"down_s must be a number >= 0, got {down_s!r:.40}")
        self.nodes = tuple(addresses)
        self.down_s = float(down_s)
        self._avoid_until_s: dict[str, float] = {}
        self._lock = threading.Lock()

    def order(self, now_s: float, preferred: Sequence[str] = ()) -> list[NodeAddress]:
        """Nodes to try: preferred netlocs first, then the caller's order; avoided ones last, soonest first."""
        rank = {netloc: i for i, netloc in enumerate(preferred)}
        nodes = sorted(self.nodes, key=lambda a: rank.get(a.netloc, len(rank)))  # stable: caller's order
        with self._lock:
            avoid = {url: until for url, until in self._avoid_until_s.items() if until > now_s}
        usable = [a for a in nodes if a.url not in avoid]
        avoided = sorted((a for a in nodes if a.url in avoid), key=lambda a: avoid[a.url])
        return usable + avoided

    def avoid(self, node: NodeAddress, until_s: float) -> None:
        with self._lock:
            self._avoid_until_s[node.url] = max(until_s, self._avoid_until_s.get(node.url, until_s))

    def mark_down(self, node: NodeAddress, now_s: float) -> None:
        self.avoid(node, now_s + self.down_s)

    def mark_up(self, node: NodeAddress) -> None:
        with self._lock:
            self._avoid_until_s.pop(node.url, None)

    def is_avoided(self, node: NodeAddress, now_s: float) -> bool:
        with self._lock:
            return self._avoid_until_s.get(node.url, now_s) > now_s


class Failover:
    """The plan of one call over the roster (not thread-safe: one per call)."""

    def __init__(self, roster: Roster, *, safe: bool, now_s: float, deadline_s: float,
                 preferred: Sequence[str] = (), rounds_max: int = ROUNDS_MAX_DEFAULT) -> None:
        self.roster, self.safe, self.deadline_s = roster, safe, deadline_s
        self._queue = roster.order(now_s, preferred)
        self._busy: dict[str, tuple[float, NodeAddress]] = {}
        self._rounds_left = rounds_max - 1
        self._final = None  # an Answer, or the ClientError to raise
        self._busy_answer = None
        self._failures: list[tuple[NodeAddress, Failure]] = []

    def next_step(self, now_s: float) -> NodeAddress | float | None:
        """The node to try now, or seconds to wait before asking again, or None: call outcome()."""
        if self._final is not None or now_s >= self.deadline_s:
            return None
        if self._queue:
            return self._queue.pop(0)
        if not self._busy or self._rounds_left <= 0:
            return None
        free_s = min(until for until, _ in self._busy.values())
        if free_s > self.deadline_s:
            return None
        if free_s > now_s:
            return free_s - now_s
        self._rounds_left -= 1
        self._queue = [node for _, node in sorted(self._busy.values(), key=lambda pair: pair[0])]
        self._busy.clear()
        return self._queue.pop(0)

    def answered(self, node: NodeAddress, status: int, retry_after: str | None, answer: object,
                 now_s: float) -> None:
        if status == 503 and retry_after is not None:
            until_s = now_s + (retry_after_s(retry_after) or 0.0)
            self.roster.avoid(node, until_s)
            self._busy[node.url] = (until_s, node)
            self._busy_answer = answer
            return
        self.roster.mark_up(node)
        self._final = answer

    def failed(self, node: NodeAddress, failure: Failure, now_s: float) -> None:
        self.roster.mark_down(node, now_s)
        self._failures.append((node, failure))
        if failure.sent and not self.safe:
            kind = Timeout if failure.timed_out else Unavailable
            self._final = kind(f"{failure.reason}; the write may or may not have been applied", node=node.url)

    def outcome(self) -> object:
        """The final answer to hand to the operation, or raise the error that ends the call."""
        final = self._final if self._final is not None else self._busy_answer
        if isinstance(final, Exception):
            raise final
        if final is not None:
            return final
        if not self._failures:
            raise Timeout("the deadline passed before any node could be asked")
        described = "; ".join(f"{node.url}: {failure.reason}" for node, failure in self._failures)
        if any(failure.timed_out for _, failure in self._failures):
            raise Timeout(f"no answer in time ({described})", node=self._failures[-1][0].url)
        raise Unavailable(f"no node could be reached ({described})", node=self._failures[-1][0].url)
