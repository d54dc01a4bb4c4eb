"""Causality per key: version vectors and dotted version vector sets (Almeida et al.; Riak's dvvset).

Theory of operation
-------------------
Every write is an event named by a *dot* (actor, n): the coordinating node's id and that node's n-th write
of the key. A `DVVSet` keeps one `Entry(actor, counter, values)` per actor: events 1..counter of that actor
have been seen, and `values` are the versions written by the last len(values) of them (dots counter-len+1 ..
counter, oldest first) that no later write has replaced. The earlier events are *obsolete*. They always form
a prefix per actor because a context is a version vector (seeing (a, n) means seeing (a, 1..n)), so one
counter plus the surviving tail is exact; we call counter - len(values) the entry's *floor*.

- `update` (a coordinator applies a client `Write`): drop what the write's context covers, then add the value
  under the coordinator's next dot, max(its counter, the context's counter) + 1. Whatever the context did not
  cover stays, as a concurrent sibling.
- `sync` (replicas merge): per actor, keep the larger counter and the larger floor. A componentwise max, so
  sync is commutative, associative and idempotent, and `less_or_equal` (componentwise <=) is its order.
- Dots are unique only if an actor never reuses a counter: the coordinator must apply `update` to its own
  latest (durable) copy of the key. `sync` trusts that one dot names one value.

Size: one entry per actor that coordinated a write of the key, plus any actor named in a client's context
(the node layer should refuse contexts naming non-members); the values are exactly the writes no later
write's context covered, i.e. the truly concurrent ones. A stale context cannot make siblings pile up, as it
does with one vector clock per object (Riak's "sibling explosion").

Encoding: canonical CBOR. The decoders accept only what the encoders produce (they re-encode and compare),
so a decode returns exactly the clock that was encoded or raises `CausalityDecodeError`. No I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import enum
import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import cbor2

V = TypeVar("V")

ENCODING_VERSION = 1
ACTOR_LENGTH_MAX = 255
COUNTER_MAX = 2**63 - 1
CONTEXT_LENGTH_MAX = 16_384  # characters of an encoded context: it has to fit in an HTTP header
CONTEXT_ENTRIES_MAX = 1_024
CBOR_DEPTH_MAX = 16  # our deepest structure (object → set → entry → values → content → metadata) is 8


class CausalityError(ValueError):
    """A clock, dot or write that breaks the rules above."""


class CausalityDecodeError(CausalityError):
    """Bytes or a string that are not a valid encoding of a clock (or of an object holding one)."""


class Ordering(enum.Enum):
    EQUAL = "equal"
    BEFORE = "before"  # the left side is strictly older
    AFTER = "after"  # the left side strictly descends the right
    CONCURRENT = "concurrent"


def _ordering(left_le: bool, left_ge: bool) -> Ordering:
    if left_le and left_ge:
        return Ordering.EQUAL
    if left_le:
        return Ordering.BEFORE
    if left_ge:
        return Ordering.AFTER
    return Ordering.CONCURRENT


def _check_actor(actor: object) -> None:
    if type(actor) is not str or not actor or len(actor) > ACTOR_LENGTH_MAX:
        raise CausalityError(f"actor must be a non-empty str of at most {ACTOR_LENGTH_MAX} chars: {actor!r}")


def _check_counter(counter: object) -> None:
    # type() rather than isinstance: a bool is an int, and True must not pass for counter 1.
    if type(counter) is not int or not 1 <= counter <= COUNTER_MAX:
        raise CausalityError(f"counter must be an int in 1..{COUNTER_MAX}: {counter!r}")


def _check_sorted(actors: Iterable[str]) -> None:
    previous = None
    for actor in actors:
        if previous is not None and actor <= previous:
            raise CausalityError(f"actors must be sorted and unique: {previous!r} then {actor!r}")
        previous = actor


@dataclass(frozen=True, slots=True)
class VersionVector:
    """actor → the highest counter seen; actors sorted, unique, counters >= 1 (absent means 0)."""

    entries: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if type(self.entries) is not tuple:
            raise CausalityError("VersionVector entries must be a tuple of (actor, counter) pairs")
        for item in self.entries:
            if type(item) is not tuple or len(item) != 2:
                raise CausalityError(f"VersionVector entry must be an (actor, counter) pair: {item!r}")
            _check_actor(item[0])
            _check_counter(item[1])
        _check_sorted(actor for actor, _ in self.entries)

    @classmethod
    def from_mapping(cls, counters: Mapping[str, int]) -> VersionVector:
        """Build from any mapping; zero counters are dropped (absent means 0)."""
        return cls(tuple(sorted((actor, n) for actor, n in counters.items() if n != 0)))

    def as_dict(self) -> dict[str, int]:
        return dict(self.entries)

    def get(self, actor: str) -> int:
        for name, counter in self.entries:
            if name == actor:
                return counter
        return 0

    def covers(self, actor: str, counter: int) -> bool:
        """Whether the dot (actor, counter) is part of this history."""
        return counter <= self.get(actor)

    def join(self, other: VersionVector) -> VersionVector:
        merged = dict(self.entries)
        for actor, counter in other.entries:
            merged[actor] = max(counter, merged.get(actor, 0))
        return VersionVector(tuple(sorted(merged.items())))

    def descends(self, other: VersionVector) -> bool:
        """self >= other: every event other has seen, self has seen."""
        mine = dict(self.entries)
        return all(mine.get(actor, 0) >= counter for actor, counter in other.entries)

    def dominates(self, other: VersionVector) -> bool:
        """self > other: descends and has seen something more."""
        return self.descends(other) and self != other

    def compare(self, other: VersionVector) -> Ordering:
        return _ordering(other.descends(self), self.descends(other))

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class Entry(Generic[V]):
    """One actor's history: events 1..counter seen; `values` hold the surviving tail, oldest first."""

    actor: str
    counter: int
    values: tuple[V, ...] = ()

    def __post_init__(self) -> None:
        _check_actor(self.actor)
        _check_counter(self.counter)
        if type(self.values) is not tuple:
            raise CausalityError(f"entry values must be a tuple, not {type(self.values).__name__}")
        if len(self.values) > self.counter:
            raise CausalityError(f"entry {self.actor!r} has {len(self.values)} values for {self.counter} events")

    @property
    def floor(self) -> int:
        """Events 1..floor of this actor are obsolete (replaced by a write that saw them)."""
        return self.counter - len(self.values)

    def dots(self) -> range:
        return range(self.floor + 1, self.counter + 1)


@dataclass(frozen=True)
class DVVSet(Generic[V]):
    """The causal history of one key and its concurrent versions (siblings). Immutable."""

    entries: tuple[Entry[V], ...] = ()

    def __post_init__(self) -> None:
        if type(self.entries) is not tuple or not all(isinstance(e, Entry) for e in self.entries):
            raise CausalityError("DVVSet entries must be a tuple of Entry")
        _check_sorted(e.actor for e in self.entries)

    @property
    def values(self) -> tuple[V, ...]:
        """All siblings, ordered by dot (actor, then counter): the same on every replica."""
        return tuple(value for entry in self.entries for value in entry.values)

    def dotted_values(self) -> tuple[tuple[tuple[str, int], V], ...]:
        """((actor, counter), value) for every sibling, in the order of `values`."""
        return tuple(((e.actor, dot), value) for e in self.entries for dot, value in zip(e.dots(), e.values))

    def context(self) -> VersionVector:
        """The join of everything seen: what a client that read this set has seen."""
        return VersionVector(tuple((e.actor, e.counter) for e in self.entries))

    @property
    def is_empty(self) -> bool:
        """No siblings. (Sets made by update/sync from writes are then also without history.)"""
        return not any(e.values for e in self.entries)


@dataclass(frozen=True)
class Write(Generic[V]):
    """What a client sends: a value and the context it read (empty: a blind write)."""

    value: V
    context: VersionVector = VersionVector()

    def __post_init__(self) -> None:
        if not isinstance(self.context, VersionVector):
            raise CausalityError(f"write context must be a VersionVector, not {type(self.context).__name__}")


def new_write(value: V, context: VersionVector | None = None) -> Write[V]:
    return Write(value, context if context is not None else VersionVector())


def update(write: Write[V], server: DVVSet[V] | None, actor: str) -> DVVSet[V]:
    """The coordinator `actor` applies `write` to its own copy `server` (None if it has none)."""
    _check_actor(actor)
    seen = DVVSet(tuple(Entry(a, n) for a, n in write.context.entries))
    known = sync(server, seen) if server is not None else seen
    return _event(known, actor, write.value)


def _event(known: DVVSet[V], actor: str, value: V) -> DVVSet[V]:
    entries = list(known.entries)
    for index, entry in enumerate(entries):
        if entry.actor == actor:
            if entry.counter >= COUNTER_MAX:
                raise CausalityError(f"counter of {actor!r} is exhausted")
            entries[index] = Entry(actor, entry.counter + 1, entry.values + (value,))
            break
        if entry.actor > actor:
            entries.insert(index, Entry(actor, 1, (value,)))
            break
    else:
        entries.append(Entry(actor, 1, (value,)))
    return DVVSet(tuple(entries))


def sync(a: DVVSet[V], b: DVVSet[V]) -> DVVSet[V]:
    """Merge two replicas' sets: the least set that knows all either knows."""
    if a is b or a == b:
        return a
    left, right = {e.actor: e for e in a.entries}, {e.actor: e for e in b.entries}
    merged = []
    for actor in sorted(left.keys() | right.keys()):
        x, y = left.get(actor), right.get(actor)
        merged.append(_merge_entry(x, y) if x is not None and y is not None else x or y)
    return DVVSet(tuple(merged))


def _merge_entry(x: Entry[V], y: Entry[V]) -> Entry[V]:
    counter = max(x.counter, y.counter)
    floor = max(x.floor, y.floor)
    # The side with the larger counter holds every surviving dot (on a tie, both do). Both sides agree on a
    # shared dot's value because dots are unique, so slicing either one gives the same tail.
    source = x if x.counter >= y.counter else y
    keep = counter - floor
    assert 0 <= keep <= len(source.values), (x, y)
    return Entry(x.actor, counter, source.values[len(source.values) - keep:])


def sync_all(sets: Iterable[DVVSet[V]]) -> DVVSet[V]:
    result: DVVSet[V] = DVVSet()
    for s in sets:
        result = sync(result, s)
    return result


def less_or_equal(a: DVVSet[V], b: DVVSet[V]) -> bool:
    """a <= b: b has seen every event a has and knows obsolete every event a knows obsolete.

    Equivalent to sync(a, b) == b. Stricter than comparing contexts: a replica that still holds a sibling
    another replica knows to be replaced is behind it (read repair must send it the merge).
    """
    theirs = {e.actor: e for e in b.entries}
    for entry in a.entries:
        other = theirs.get(entry.actor)
        if other is None or other.counter < entry.counter or other.floor < entry.floor:
            return False
    return True


def descends(a: DVVSet[V], b: DVVSet[V]) -> bool:
    """a >= b in the order of `less_or_equal`."""
    return less_or_equal(b, a)


def compare(a: DVVSet[V], b: DVVSet[V]) -> Ordering:
    return _ordering(less_or_equal(a, b), less_or_equal(b, a))


# ---- encoding -------------------------------------------------------------------------------------------


def _identity(value: Any) -> Any:
    return value


def decode_canonical_cbor(data: bytes) -> Any:
    """CBOR → Python, accepting only canonical encodings (re-encoding must give back the same bytes)."""
    data = _as_bytes(data)
    raw = decode_cbor(data)
    try:
        canonical = cbor2.dumps(raw, canonical=True)
    except Exception as error:  # cbor2 raises several types (decode, EOF, cyclic, recursion): all mean garbage
        raise CausalityDecodeError(f"not valid CBOR: {error}") from None
    if canonical != data:
        raise CausalityDecodeError("not the canonical CBOR encoding (trailing bytes, non-minimal or tagged)")
    return raw


def decode_cbor(data: bytes) -> Any:
    """CBOR → Python: exactly one item under the same limits (depth, definite lengths, no duplicate
    keys), without the canonical check: for bytes this store encoded itself (see
    object.decode_object(trusted=True))."""
    data = _as_bytes(data)
    source = io.BytesIO(data)
    try:
        raw = cbor2.CBORDecoder(source, max_depth=CBOR_DEPTH_MAX, allow_indefinite=False,
                                allow_duplicate_keys=False).decode()
    except Exception as error:  # cbor2 raises several types (decode, EOF, cyclic, recursion): all mean garbage
        raise CausalityDecodeError(f"not valid CBOR: {error}") from None
    if source.tell() != len(data):  # the decoder stops right after its item (it seeks back on read-ahead)
        raise CausalityDecodeError("trailing bytes after the CBOR item")
    return raw


def _as_bytes(data: Any) -> bytes:
    if type(data) is bytes:
        return data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CausalityDecodeError(f"expected bytes, got {type(data).__name__}")
    return bytes(data)


def _check_envelope(raw: Any, body_key: str) -> Any:
    if type(raw) is not dict or set(raw) != {"v", body_key}:
        raise CausalityDecodeError(f"expected a map with keys 'v' and {body_key!r}")
    if type(raw["v"]) is not int or raw["v"] != ENCODING_VERSION:
        raise CausalityDecodeError(f"unsupported encoding version {raw['v']!r}")
    return raw[body_key]


def dvvset_to_cbor(s: DVVSet[V], encode_value: Callable[[V], Any] = _identity) -> dict[str, Any]:
    """A DVVSet as plain CBOR-ready data: {"e": [[actor, counter, [value, ...]], ...], "v": 1}, the keys in
    canonical order already (see object.encode_object)."""
    return {"e": [[e.actor, e.counter, [encode_value(v) for v in e.values]] for e in s.entries],
            "v": ENCODING_VERSION}


def dvvset_from_cbor(raw: Any, decode_value: Callable[[Any], V] = _identity) -> DVVSet[V]:
    """Inverse of dvvset_to_cbor; checks every field. decode_value may raise ValueError to reject a value."""
    body = _check_envelope(raw, "e")
    if type(body) is not list:
        raise CausalityDecodeError("entries must be a list")
    entries = []
    try:
        for item in body:
            if type(item) is not list or len(item) != 3 or type(item[2]) is not list:
                raise CausalityDecodeError(f"entry must be [actor, counter, [values]]: {item!r:.80}")
            values = tuple(decode_value(v) for v in item[2])
            entries.append(Entry(item[0], item[1], values))
        return DVVSet(tuple(entries))
    except CausalityDecodeError:
        raise
    except (ValueError, TypeError) as error:
        raise CausalityDecodeError(f"invalid clock: {error}") from None


def encode_dvvset(s: DVVSet[V], encode_value: Callable[[V], Any] = _identity) -> bytes:
    return cbor2.dumps(dvvset_to_cbor(s, encode_value), canonical=True)


def decode_dvvset(data: bytes, decode_value: Callable[[Any], V] = _identity) -> DVVSet[V]:
    """With the default codec the values must be plain CBOR values (int, str, bytes, ...) to round-trip."""
    return dvvset_from_cbor(decode_canonical_cbor(data), decode_value)


def encode_context(vv: VersionVector) -> str:
    """The opaque context handed to clients: base64 of canonical CBOR {"v": 1, "vv": [[actor, n], ...]}."""
    raw = {"v": ENCODING_VERSION, "vv": [[actor, counter] for actor, counter in vv.entries]}
    return base64.b64encode(cbor2.dumps(raw, canonical=True)).decode("ascii")


def decode_context(token: str | bytes) -> VersionVector:
    """Parse a client's context; anything but an encode_context output raises CausalityDecodeError."""
    if isinstance(token, (bytes, bytearray)):
        try:
            token = bytes(token).decode("ascii")
        except UnicodeDecodeError:
            raise CausalityDecodeError("context is not ASCII") from None
    if type(token) is not str:
        raise CausalityDecodeError(f"context must be a str, not {type(token).__name__}")
    if len(token) > CONTEXT_LENGTH_MAX:
        raise CausalityDecodeError(f"context longer than {CONTEXT_LENGTH_MAX} chars")
    try:
        data = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raise CausalityDecodeError("context is not base64") from None
    if base64.b64encode(data).decode("ascii") != token:
        raise CausalityDecodeError("context is not canonical base64")
    body = _check_envelope(decode_canonical_cbor(data), "vv")
    if type(body) is not list or len(body) > CONTEXT_ENTRIES_MAX:
        raise CausalityDecodeError(f"context must list at most {CONTEXT_ENTRIES_MAX} entries")
    if not all(type(item) is list and len(item) == 2 for item in body):
        raise CausalityDecodeError("context entries must be [actor, counter] pairs")
    try:
        return VersionVector(tuple((item[0], item[1]) for item in body))
    except CausalityError as error:
        raise CausalityDecodeError(f"invalid context: {error}") from None
