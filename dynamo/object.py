"""The stored object: every sibling of one key, with its causal history (a DVVSet of Content).

Theory of operation
-------------------
A `Content` is one version as a client wrote it: value bytes, content type, last-modified time (µs, handed
in by the caller: no clock is read here), user metadata and a `deleted` flag. A delete is a write of a
tombstone Content, so it orders against other writes like any value; an object whose siblings are all
tombstones `is_tombstone`. A `StoredObject` wraps the DVVSet that holds those contents:

- `put` is `update` at the coordinating node: the write replaces exactly what its context covers.
- `merge` is `sync`: replicas converge whatever order they exchange copies in.
- Last-write-wins is opt-in per bucket (`put(..., lww=True)`, `last_write_wins`): the newest sibling by
  (last_modified_us, then the content itself, so ties break the same on every node; a tombstone wins a tie)
  is written again as a new event whose context covers all siblings. The clock keeps advancing, so a node
  with an older copy still learns the losers are replaced, and lww and causal copies merge safely.
- `vtag` (Riak's ?vtag= and the ETag) hashes the content alone: siblings with the same vtag are byte-for-byte
  the same version, and it stays the same on every replica and across an lww rewrite.
- `object_digest` hashes the key and the causal state (per actor: counter and surviving-dot count), not the
  values. One dot names one value, so equal causal states hold equal siblings; anti-entropy compares these.

Encoding: canonical CBOR {"v": 1, "s": <DVVSet, contents as [value, type, lm_us, [[k, v], ...], deleted]>}.
`decode_object` accepts only that and raises ObjectDecodeError (a CausalityDecodeError) on anything else.
`decode_object(blob, trusted=True)` is for blobs this store wrote (its own storage, or an authenticated
peer's encode_object output): it skips the canonical re-encode and compare, half the cost of a decode,
and still checks every field. Anything a client sends goes through the strict path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import cbor2

from dynamo.causality import (
    ENCODING_VERSION,
    CausalityDecodeError,
    DVVSet,
    VersionVector,
    decode_canonical_cbor,
    decode_cbor,
    dvvset_from_cbor,
    dvvset_to_cbor,
    encode_context,
    new_write,
    sync,
    update,
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
TIME_US_MAX = 2**63 - 1
VTAG_HASH_BYTES = 12  # 96 bits: collisions among one key's siblings are out of reach
DIGEST_BYTES = 16
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class ContentError(ValueError):
    """A Content or StoredObject built from values of the wrong type or range."""


class ObjectDecodeError(CausalityDecodeError):
    """Bytes that are not a valid encoding of a StoredObject."""


@dataclass(frozen=True)
class Content:
    """One version of a key's value. Metadata is kept sorted by (name, value)."""

    value: bytes
    content_type: str = DEFAULT_CONTENT_TYPE
    last_modified_us: int = 0
    metadata: tuple[tuple[str, str], ...] = ()
    deleted: bool = False

    def __post_init__(self) -> None:
        if type(self.value) is not bytes:
            raise ContentError(f"value must be bytes, not {type(self.value).__name__}")
        if type(self.content_type) is not str:
            raise ContentError(f"content_type must be a str, not {type(self.content_type).__name__}")
        if type(self.last_modified_us) is not int or not 0 <= self.last_modified_us <= TIME_US_MAX:
            raise ContentError(f"last_modified_us must be an int in 0..{TIME_US_MAX}: {self.last_modified_us!r}")
        if type(self.deleted) is not bool:
            raise ContentError(f"deleted must be a bool: {self.deleted!r}")
        if self.metadata == ():
            return  # no metadata, the usual case: nothing to check or sort
        metadata = self.metadata.items() if isinstance(self.metadata, Mapping) else self.metadata
        if isinstance(metadata, (str, bytes)) or not isinstance(metadata, Iterable):
            raise ContentError(f"metadata must be (name, value) str pairs: {self.metadata!r:.100}")
        pairs = tuple(tuple(p) if isinstance(p, (tuple, list)) else p for p in metadata)
        if not all(type(p) is tuple and len(p) == 2 and type(p[0]) is str and type(p[1]) is str for p in pairs):
            raise ContentError(f"metadata must be (name, value) str pairs: {self.metadata!r:.100}")
        object.__setattr__(self, "metadata", tuple(sorted(pairs)))

    @classmethod
    def tombstone(cls, last_modified_us: int, metadata: Iterable[tuple[str, str]] = ()) -> Content:
        return cls(b"", DEFAULT_CONTENT_TYPE, last_modified_us, tuple(metadata), deleted=True)

    @cached_property
    def vtag(self) -> str:
        """A short, deterministic tag of this content (Riak's vtag, usable as an ETag)."""
        encoded = cbor2.dumps(_content_to_cbor(self), canonical=True)
        number = int.from_bytes(hashlib.blake2b(encoded, digest_size=VTAG_HASH_BYTES).digest(), "big")
        digits = []
        while number:
            number, digit = divmod(number, 62)
            digits.append(_BASE62[digit])
        return "".join(reversed(digits)) or "0"


def _lww_key(content: Content) -> tuple[Any, ...]:
    # Newest first; then any total order on the content so every node picks the same winner. `deleted`
    # comes early so that, at the same microsecond, a delete beats a write rather than resurrecting it.
    return (content.last_modified_us, content.deleted, content.value, content.content_type, content.metadata)


@dataclass(frozen=True)
class StoredObject:
    """What a replica stores for one key: the DVVSet of its contents."""

    clock: DVVSet[Content] = DVVSet()

    def __post_init__(self) -> None:
        if not isinstance(self.clock, DVVSet) or not all(isinstance(c, Content) for c in self.clock.values):
            raise ContentError("StoredObject.clock must be a DVVSet of Content")

    @property
    def siblings(self) -> tuple[Content, ...]:
        """Every concurrent version, tombstones included, in the same order on every replica."""
        return self.clock.values

    @property
    def live_siblings(self) -> tuple[Content, ...]:
        return tuple(c for c in self.clock.values if not c.deleted)

    @property
    def is_tombstone(self) -> bool:
        """There are siblings and every one is a tombstone (an empty object is not a tombstone)."""
        siblings = self.siblings
        return bool(siblings) and all(c.deleted for c in siblings)

    @property
    def is_empty(self) -> bool:
        return self.clock.is_empty

    def context(self) -> VersionVector:
        return self.clock.context()

    def context_token(self) -> str:
        """The opaque context for clients (X-Riak-Vclock)."""
        return self._context_token

    @cached_property
    def _context_token(self) -> str:
        # Objects are immutable and shared through the node's decode cache: a hot key encodes it once.
        return encode_context(self.clock.context())

    def sibling(self, vtag: str) -> Content | None:
        """The sibling with this vtag (Riak's ?vtag=), or None."""
        return next((c for c in self.siblings if c.vtag == vtag), None)


def put(obj: StoredObject | None, content: Content, context: VersionVector | None, actor: str, *,
        lww: bool = False) -> StoredObject:
    """Apply a client's write at coordinator `actor` to its copy `obj` (None: it has none).

    With lww the client's context is ignored: the result holds only the newest of `content` and the
    current siblings, written as a new event that covers them all.
    """
    if not isinstance(content, Content):
        raise ContentError(f"content must be a Content, not {type(content).__name__}")
    clock = obj.clock if obj is not None else None
    if lww:
        current = obj.siblings if obj is not None else ()
        winner = max(current + (content,), key=_lww_key)
        write = new_write(winner, obj.context() if obj is not None else None)
    else:
        write = new_write(content, context)
    return StoredObject(update(write, clock, actor))


def delete(obj: StoredObject | None, context: VersionVector | None, actor: str, last_modified_us: int, *,
           lww: bool = False) -> StoredObject:
    """A delete is a put of a tombstone."""
    return put(obj, Content.tombstone(last_modified_us), context, actor, lww=lww)


def merge(a: StoredObject, b: StoredObject) -> StoredObject:
    """Merge two replicas' copies (commutative, associative, idempotent)."""
    return StoredObject(sync(a.clock, b.clock))


def merge_all(objects: Iterable[StoredObject | None]) -> StoredObject | None:
    """Merge replies from replicas; None (not found) is skipped. None if all were None."""
    result = None
    for obj in objects:
        if obj is not None:
            result = obj if result is None else merge(result, obj)
    return result


def newest(obj: StoredObject) -> Content | None:
    """The last-write-wins choice among the siblings (None when there are none)."""
    siblings = obj.siblings
    return max(siblings, key=_lww_key) if siblings else None


def last_write_wins(obj: StoredObject, actor: str) -> StoredObject:
    """Collapse siblings to the newest, as a new event at `actor` (unchanged if at most one sibling)."""
    winner = newest(obj)
    if winner is None or len(obj.siblings) == 1:
        return obj
    return StoredObject(update(new_write(winner, obj.context()), obj.clock, actor))


# ---- encoding and digest --------------------------------------------------------------------------------


def _content_to_cbor(content: Content) -> list[Any]:
    metadata = [[name, value] for name, value in content.metadata]
    return [content.value, content.content_type, content.last_modified_us, metadata, content.deleted]


def _content_from_cbor(raw: Any) -> Content:
    if type(raw) is not list or len(raw) != 5:
        raise ObjectDecodeError("content must be [value, content_type, last_modified_us, metadata, deleted]")
    value, content_type, last_modified_us, metadata, deleted = raw
    if type(metadata) is not list or not all(type(pair) is list for pair in metadata):
        raise ObjectDecodeError("metadata must be a list of [name, value] pairs")
    content = Content(value, content_type, last_modified_us, tuple(tuple(pair) for pair in metadata), deleted)
    if list(content.metadata) != [tuple(pair) for pair in metadata]:
        raise ObjectDecodeError("metadata is not sorted")  # else we would return something else than encoded
    return content


def encode_object(obj: StoredObject) -> bytes:
    # Canonical CBOR without cbor2's canonical mode (a third of the cost): its only extra work here would
    # be sorting map keys, and the two maps are built with their keys in canonical order ("s" < "v",
    # "e" < "v"); the rest (minimal integers, definite lengths, lists) is how cbor2 always encodes.
    # decode_object's canonical check in the round-trip tests holds this to the canonical form.
    return cbor2.dumps({"s": dvvset_to_cbor(obj.clock, _content_to_cbor), "v": ENCODING_VERSION})


def decode_object(data: bytes, *, trusted: bool = False) -> StoredObject:
    """The object `data` encodes; ObjectDecodeError if it is not one. With `trusted` (our own blobs, see
    above) a valid but non-canonical encoding is accepted too."""
    try:
        raw = decode_cbor(data) if trusted else decode_canonical_cbor(data)
        if type(raw) is not dict or set(raw) != {"v", "s"}:
            raise ObjectDecodeError("expected a map with keys 'v' and 's'")
        if type(raw["v"]) is not int or raw["v"] != ENCODING_VERSION:
            raise ObjectDecodeError(f"unsupported object version {raw['v']!r}")
        return StoredObject(dvvset_from_cbor(raw["s"], _content_from_cbor))
    except ObjectDecodeError:
        raise
    except ValueError as error:  # CausalityDecodeError, ContentError
        raise ObjectDecodeError(f"invalid object: {error}") from None


def object_digest(bucket: bytes, key: bytes, obj: StoredObject) -> bytes:
    """16 bytes over the key and its causal state (not the values), for Merkle anti-entropy."""
    return _state_digest(bucket, key, [[e.actor, e.counter, len(e.values)] for e in obj.clock.entries])


ObjectDigest = tuple[bytes, bool]  # (object_digest, is_tombstone): what an anti-entropy tree keeps of a key


def blob_digest(bucket: bytes, key: bytes, blob: bytes) -> ObjectDigest:
    """(object_digest, is_tombstone) of an encoded object, read off its CBOR without building the object:
    a replica's tree update then costs a fraction of a full decode. For this store's own encodings (it
    does not check them as decode_object does, and bytes after the object go unnoticed); ObjectDecodeError
    if the blob does not have an object's shape."""
    state, deleted = _blob_state(blob)
    return _state_digest(bucket, key, state), bool(deleted) and all(deleted)


def blob_has_live_sibling(blob: bytes) -> bool:
    """Whether an encoded object holds a sibling that is not a tombstone (what a read would return), read
    as blob_digest reads it."""
    return not all(_blob_state(blob)[1])


def _blob_state(blob: bytes) -> tuple[list[list[Any]], list[bool]]:
    """The causal state [[actor, counter, sibling count], ...] and the deleted flag of every sibling."""
    try:
        entries = cbor2.loads(blob)["s"]["e"]  # our own bytes: the plain decoder, not decode_cbor's checks
        state = [[actor, counter, len(values)] for actor, counter, values in entries]
        deleted = [content[4] for _, _, values in entries for content in values]
    except (cbor2.CBORError, ValueError, TypeError, KeyError, IndexError) as error:
        raise ObjectDecodeError(f"not an encoded object: {error!r}") from None
    return state, deleted


def _state_digest(bucket: bytes, key: bytes, state: list[list[Any]]) -> bytes:
    if type(bucket) is not bytes or type(key) is not bytes:
        raise ContentError("bucket and key must be bytes")
    encoded = cbor2.dumps([bucket, key, state], canonical=True)
    return hashlib.blake2b(encoded, digest_size=DIGEST_BYTES, person=b"dynamo.object").digest()
