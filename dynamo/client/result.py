"""What a read gives back: the object with its siblings and opaque causal context, read from an answer.

Theory of operation: `read_object` turns the server's answer to a GET (or a PUT with returnbody) into a
`KVObject`: a 200 is one sibling described by the headers, a 300 is a multipart/mixed body with one
part per sibling, a 404 is "no live value" and still carries the context when the key was deleted (a
tombstone). The context (X-Riak-Vclock) is kept as the server sent it: a later write that sends it back
replaces exactly the siblings this read saw.

Rules kept:
- Tombstones are siblings too (`deleted`). `live` drops them: a value written concurrently with a delete
  wins over it ("add wins"), and a write with the context removes the tombstone.
- `value` is the single live value; several live siblings raise Siblings, none raises NotFound. Nothing
  is ever chosen silently: only a resolver (a callable from the live siblings to one) picks, and the
  object then keeps what it chose from in `unresolved`.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Callable, Sequence

from dynamo.client.error import InvalidArgument, NotFound, ServerError, Siblings
from dynamo.http.header import (DEFAULT_CONTENT_TYPE, DELETED_HEADER, VCLOCK_HEADER, meta_from_headers,
                                parse_http_date, unquote_etag)
from dynamo.http.message import Headers
from dynamo.http.multipart import MultipartError, decode_multipart

REPLICAS_HEADER = "X-Dynamo-Replicas"
_REPLICA_FIELD = re.compile(r"(primary|fallback|hints)=(\d+)")
_CHARSET = re.compile(r";\s*charset=\"?([-\w.:]+)", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Sibling:
    """One concurrent version of a value."""

    value: bytes
    content_type: str = DEFAULT_CONTENT_TYPE
    metadata: tuple[tuple[str, str], ...] = ()
    last_modified: datetime.datetime | None = None  # whole seconds, UTC: HTTP dates carry no more
    vtag: str = ""
    deleted: bool = False

    @property
    def meta(self) -> dict[str, str]:
        """User metadata (X-Riak-Meta-*) as a dict, names as they were written."""
        return dict(self.metadata)

    @property
    def text(self) -> str:
        """The value decoded by the charset of its content type (UTF-8 when none is given)."""
        match = _CHARSET.search(self.content_type)
        return self.value.decode(match.group(1) if match else "utf-8")


@dataclasses.dataclass(frozen=True)
class Replicas:
    """X-Dynamo-Replicas: how many primaries and fallbacks answered, how many hints were written."""

    primary: int = 0
    fallback: int = 0
    hints: int = 0


Resolver = Callable[[Sequence[Sibling]], "Sibling | bytes | str"]


@dataclasses.dataclass(frozen=True)
class KVObject:
    bucket: str | bytes
    key: str | bytes
    siblings: tuple[Sibling, ...]
    context: str | None  # opaque: send it back with the next write of this key
    replicas: Replicas | None = None
    unresolved: tuple[Sibling, ...] = ()  # what a resolver chose from, when one ran

    @property
    def live(self) -> tuple[Sibling, ...]:
        return tuple(sibling for sibling in self.siblings if not sibling.deleted)

    @property
    def exists(self) -> bool:
        return bool(self.live)

    @property
    def tombstone(self) -> bool:
        """The key was deleted: no live value, but a context to write over the delete with."""
        return not self.live and self.context is not None

    @property
    def has_siblings(self) -> bool:
        return len(self.live) > 1

    @property
    def sibling(self) -> Sibling:
        """The single live sibling (NotFound when none, Siblings when several)."""
        live = self.live
        if len(live) == 1:
            return live[0]
        if not live:
            raise NotFound(f"{_name(self.bucket)}/{_name(self.key)} has no value" +
                           (" (deleted)" if self.tombstone else ""))
        raise Siblings(f"{_name(self.bucket)}/{_name(self.key)} has {len(live)} siblings: pass a resolver, or "
                       f"write the merged value with this object's context", siblings=live)

    @property
    def value(self) -> bytes:
        return self.sibling.value

    @property
    def text(self) -> str:
        return self.sibling.text

    @property
    def content_type(self) -> str:
        return self.sibling.content_type

    @property
    def meta(self) -> dict[str, str]:
        return self.sibling.meta

    @property
    def last_modified(self) -> datetime.datetime | None:
        return self.sibling.last_modified

    @property
    def vtag(self) -> str:
        return self.sibling.vtag

    def resolved(self, resolver: Resolver) -> "KVObject":
        """This object with its live siblings narrowed to the one `resolver` returns (same context)."""
        live = self.live
        if len(live) < 2:
            return self
        chosen = resolver(live)
        if isinstance(chosen, (bytes, bytearray, memoryview, str)):
            value = chosen.encode("utf-8") if isinstance(chosen, str) else bytes(chosen)
            chosen = Sibling(value, live[0].content_type, live[0].metadata)
        if not isinstance(chosen, Sibling):
            raise InvalidArgument(f"a resolver must return a Sibling, bytes or str, got {type(chosen).__name__}")
        return dataclasses.replace(self, siblings=(chosen,), unresolved=self.siblings)


def last_written(siblings: Sequence[Sibling]) -> Sibling:
    """A resolver: the sibling modified last (ties broken by vtag, so every reader picks the same)."""
    return max(siblings, key=lambda s: (s.last_modified or datetime.datetime.min.replace(tzinfo=datetime.UTC),
                                        s.vtag))


def _name(name: str | bytes) -> str:
    return name if isinstance(name, str) else name.decode("utf-8", "replace")


def _date(text: str | None) -> datetime.datetime | None:
    time_us = parse_http_date(text) if text else None
    if time_us is None:
        return None
    return datetime.datetime.fromtimestamp(time_us // 1_000_000, datetime.UTC)


def read_replicas(headers: Headers) -> Replicas | None:
    text = headers.get(REPLICAS_HEADER)
    if text is None:
        return None
    return Replicas(**{name: int(count) for name, count in _REPLICA_FIELD.findall(text)})


def _single(headers: Headers, body: bytes) -> Sibling:
    return Sibling(value=body, content_type=headers.get("Content-Type") or DEFAULT_CONTENT_TYPE,
                   metadata=meta_from_headers(headers), last_modified=_date(headers.get("Last-Modified")),
                   vtag=unquote_etag(headers.get("ETag") or ""),
                   deleted=(headers.get(DELETED_HEADER) or "").lower() == "true")


def read_object(bucket: str | bytes, key: str | bytes, status: int, headers: Headers, body: bytes,
                node: str | None = None) -> KVObject:
    """The object in a 200, 300 or 404 answer (the caller maps other statuses to errors)."""
    context = (headers.get(VCLOCK_HEADER) or "").strip() or None
    replicas = read_replicas(headers)
    if status in (200, 201):
        siblings: tuple[Sibling, ...] = (_single(headers, body),)
    elif status == 300:
        try:
            parts = decode_multipart(headers.get("Content-Type") or "", body)
        except MultipartError as error:
            raise ServerError(f"unreadable siblings: {error}", status=status, node=node) from None
        siblings = tuple(Sibling(p.value, p.content_type, p.metadata,
                                 _date_from_us(p.last_modified_us), p.vtag, p.deleted) for p in parts)
    elif status == 404:
        siblings = ()
    else:
        raise AssertionError(f"read_object called with status {status}")
    return KVObject(bucket, key, siblings, context, replicas)


def _date_from_us(time_us: int) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(time_us // 1_000_000, datetime.UTC) if time_us else None

