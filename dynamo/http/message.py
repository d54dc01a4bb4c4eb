"""The request and response values that pass between the HTTP server and an app.

The server (server.py) turns what its parser reads into one `Request` per HTTP request, calls
`await app(request)` and writes the `Response` it gets back. Both are plain frozen
values with no I/O, so routes and the Riak helpers (riak.py) can be tested without sockets.

Rules kept here:
- Header names compare case-insensitively and keep their order and their original spelling
  (`Headers` is a small multi-map over a tuple of pairs). Values are `str` decoded as latin-1, as
  HTTP/1.1 treats them (RFC 9110 §5.5): every byte maps to one character, so any header survives a
  round trip byte for byte.
- `Request.path` and `Request.query_string` are the raw, still percent-encoded text. Riak keys may
  contain an escaped slash (%2F), so a router splits on "/" first and decodes each segment after
  (`Request.path_segments`), never the other way round.
- An error the server or a route sends is one line of plain text plus "\\n" (`error_response`).
- A body too big or too slow to make whole before the first byte is sent is a `BodyWriter`
  (`Response.stream`): the server calls it with a `write` of its own and sends each chunk as it comes.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from typing import Awaitable, Callable, Iterable, Iterator


class Headers:
    """Case-insensitive multi-map of header fields, in the order received or given."""

    __slots__ = ("_pairs", "_names_lower")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()):
        self._pairs = tuple((str(name), str(value)) for name, value in pairs)
        self._names_lower = tuple([name.lower() for name, _ in self._pairs])

    @classmethod
    def from_wire(cls, raw_pairs: Iterable[tuple[bytes, bytes]]) -> "Headers":
        """From the parser's (name, value) bytes: names are ASCII tokens, values latin-1 (the fast path)."""
        headers = cls.__new__(cls)
        headers._pairs = tuple([(name.decode("ascii"), value.decode("latin-1")) for name, value in raw_pairs])
        headers._names_lower = tuple([name.lower() for name, _ in headers._pairs])
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of `name`, or `default`."""
        key = name.lower()
        for index, candidate in enumerate(self._names_lower):
            if candidate == key:
                return self._pairs[index][1]
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, in order."""
        key = name.lower()
        return [self._pairs[i][1] for i, candidate in enumerate(self._names_lower) if candidate == key]

    def get_joined(self, name: str) -> str | None:
        """All values of a list-valued header (Accept, If-Match, ...) joined by ", ", or None."""
        values = self.get_all(name)
        return ", ".join(values) if values else None

    def with_prefix(self, prefix: str) -> list[tuple[str, str]]:
        """The (name, value) pairs whose name starts with `prefix`, compared case-insensitively."""
        key = prefix.lower()
        return [self._pairs[i] for i, candidate in enumerate(self._names_lower) if candidate.startswith(key)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._names_lower

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._pairs == other._pairs

    def __hash__(self) -> int:
        return hash(self._pairs)

    def __repr__(self) -> str:
        return f"Headers({list(self._pairs)!r})"


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One complete HTTP request: the head and the whole body (already read under the size limit)."""

    method: str  # upper case as sent, e.g. "GET"
    path: str  # raw, percent-encoded, without the query string
    query_string: str  # raw text after "?", "" when absent
    query: tuple[tuple[str, str], ...]  # decoded (name, value) pairs in order; blanks kept
    headers: Headers
    body: bytes = b""
    http_version: str = "1.1"

    def path_segments(self) -> tuple[bytes, ...]:
        """The path split on "/" and then percent-decoded: "/buckets/a%2Fb" -> (b"buckets", b"a/b")."""
        parts = self.path.split("/")
        if parts and parts[0] == "":
            parts = parts[1:]
        # A segment without "%" decodes to its own UTF-8 bytes, as unquote_to_bytes would give.
        return tuple(urllib.parse.unquote_to_bytes(part) if "%" in part else part.encode("utf-8")
                     for part in parts)


BodyWriter = Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """What an app returns. The server adds Content-Length, Server and Date itself.

    With `stream`, the body is not `body` but what `await stream(write)` writes, chunk by chunk, each
    `await write(chunk)` returning once the chunk is on its way (backpressure from a slow reader). The
    length is not known ahead: HTTP/1.1 gets it chunked, HTTP/1.0 until the connection closes. Once the
    head is sent the status cannot change, so a writer reports a failure inside the body, in whatever
    form its format has; a writer that raises ends the connection without the closing chunk, which a
    client sees as a broken response."""

    status: int
    headers: Headers | tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    stream: BodyWriter | None = None


def make_request(method: str, target: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                 http_version: str = "1.1") -> Request:
    """Build a Request from a request target ("/path?query"), as the server does; handy in tests."""
    path, _, query_string = target.partition("?")
    return Request(method=method, path=path, query_string=query_string, query=parse_query(query_string),
                   headers=Headers(headers), body=body, http_version=http_version)


def parse_query(query_string: str) -> tuple[tuple[str, str], ...]:
    """Decode a query string into pairs ("+" is a space, as in forms and in Riak's mochiweb)."""
    if not query_string:
        return ()
    query = _QUERIES.get(query_string)
    if query is None:
        query = tuple(urllib.parse.parse_qsl(query_string, keep_blank_values=True))
        if len(_QUERIES) >= _QUERIES_MAX:
            _QUERIES.clear()
        _QUERIES[query_string] = query
    return query


# Clients repeat the same few query strings ("?r=quorum"); the pairs are immutable, so they are shared.
_QUERIES: dict[str, tuple[tuple[str, str], ...]] = {}
_QUERIES_MAX = 1024


def error_response(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A plain-text error: the message on one line (any line breaks folded into spaces) and "\\n"."""
    line = " ".join(message.split("\n")).replace("\r", " ").strip()
    return Response(status, (("Content-Type", "text/plain"), *headers), (line + "\n").encode("utf-8"))
