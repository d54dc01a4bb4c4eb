"""Siblings as Riak answers a 300 Multiple Choices: a multipart/mixed body, or a plain vtag list.

The layout follows riak_kv_wm_object:produce_multipart_body and riak_kv_wm_utils:
multipart_encode_body, which Riak's clients split with a regex on CRLF "--" boundary:

    CRLF --B CRLF                                  one delimiter line opens each part
    Content-Type: text/plain CRLF
    Link: </buckets/b>; rel="up" CRLF              when the bucket is given
    Etag: 5mQ2x7 CRLF                              bare vtag, as Riak writes it in parts
    Last-Modified: Tue, 02 Jan 2024 10:00:00 GMT CRLF
    X-Riak-Deleted: true CRLF                      tombstones only
    X-Riak-Meta-Color: red CRLF
    CRLF
    <value bytes>
    CRLF --B-- CRLF                                closes the body

Rules kept:
- The boundary occurs nowhere in any part (headers or value), so a value may hold any bytes,
  including boundary-looking text. Without a usable boundary from the caller the encoder derives
  one from a hash of the values (deterministic, no randomness), hashing again on the rare hit.
- The decoder takes what RFC 2046 allows (a preamble, transport padding after a delimiter, no
  CRLF before the first delimiter) and raises MultipartError (a ValueError) on anything else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from typing import Iterable, Sequence

from dynamo.http.header import (DEFAULT_CONTENT_TYPE, DELETED_HEADER, content_headers, meta_from_headers,
                                parse_http_date, unquote_etag)
from dynamo.http.message import Headers

_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


class MultipartError(ValueError):
    """A multipart body or its Content-Type cannot be parsed."""


@dataclasses.dataclass(frozen=True)
class SiblingPart:
    """One sibling read back from a multipart body (the same attributes the encoder takes)."""

    value: bytes
    content_type: str
    last_modified_us: int  # whole seconds: HTTP dates carry no more
    metadata: tuple[tuple[str, str], ...]
    deleted: bool
    vtag: str


def encode_multipart(siblings: Iterable, boundary: str | None = None,
                     bucket: bytes | str | None = None) -> tuple[str, bytes]:
    """(Content-Type header value, body) for a 300 response carrying every sibling.

    Each sibling has value, content_type, last_modified_us, metadata, deleted and vtag. `boundary`
    is used if valid and absent from every part; otherwise one is derived. ValueError if a sibling
    has a header value that cannot be sent (a line break in metadata, say).
    """
    siblings = list(siblings)
    heads = [_part_head(sibling, bucket) for sibling in siblings]
    values = [bytes(sibling.value) for sibling in siblings]
    if boundary is not None:
        if not _BOUNDARY.fullmatch(boundary):
            raise ValueError(f"not a valid multipart boundary: {boundary!r:.80}")
        if _collides(boundary.encode("ascii"), heads, values):
            boundary = None
    if boundary is None:
        boundary = _derive_boundary(heads, values)
    delimiter = b"\r\n--" + boundary.encode("ascii")
    chunks = []
    for head, value in zip(heads, values):
        chunks += (delimiter, b"\r\n", head, b"\r\n", value)
    chunks.append(delimiter + b"--\r\n")
    shown = boundary if _TOKEN.fullmatch(boundary) else f'"{boundary}"'
    return f"multipart/mixed; boundary={shown}", b"".join(chunks)


def _part_head(sibling, bucket) -> bytes:
    lines = [f"{name}: {value}\r\n" for name, value in content_headers(sibling, bucket, quoted_etag=False)]
    return "".join(lines).encode("latin-1")


def _collides(boundary: bytes, heads: Sequence[bytes], values: Sequence[bytes]) -> bool:
    return any(boundary in head for head in heads) or any(boundary in value for value in values)


def _derive_boundary(heads: Sequence[bytes], values: Sequence[bytes]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for value in values:
        digest.update(len(value).to_bytes(8, "big"))
        digest.update(value)
    for attempt in itertools.count():
        candidate = digest.copy()
        candidate.update(attempt.to_bytes(8, "big"))
        boundary = candidate.hexdigest()
        if not _collides(boundary.encode("ascii"), heads, values):
            return boundary
    raise AssertionError("unreachable")


def decode_multipart(content_type: str, body: bytes) -> list[SiblingPart]:
    """The siblings in a multipart/mixed body, in order."""
    delimiter = b"\r\n--" + multipart_boundary(content_type).encode("latin-1")
    data = body if body.startswith(b"\r\n") else b"\r\n" + body  # the first delimiter may open the body
    pieces = data.split(delimiter)
    if len(pieces) < 2:
        raise MultipartError("multipart body has no boundary delimiter")
    parts = []
    for piece in pieces[1:]:  # pieces[0] is the preamble
        if piece.startswith(b"--"):
            return parts
        parts.append(_decode_part(piece))
    raise MultipartError("multipart body ends without its closing delimiter")


def multipart_boundary(content_type: str) -> str:
    """The boundary parameter of a multipart/mixed Content-Type."""
    media, _, _ = content_type.partition(";")
    if media.strip().lower() != "multipart/mixed":
        raise MultipartError(f"not multipart/mixed: {content_type!r:.80}")
    for match in _PARAM.finditer(content_type, len(media)):
        if match.group(1).lower() == "boundary":
            value = match.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            if not _BOUNDARY.fullmatch(value):
                raise MultipartError(f"invalid multipart boundary: {value!r:.80}")
            return value
    raise MultipartError("multipart/mixed without a boundary parameter")


def _decode_part(piece: bytes) -> SiblingPart:
    rest = piece.lstrip(b" \t")  # transport padding
    if not rest.startswith(b"\r\n"):
        raise MultipartError("multipart delimiter not followed by a line break")
    rest = rest[2:]
    if rest.startswith(b"\r\n"):
        head, value = b"", rest[2:]
    else:
        head, blank, value = rest.partition(b"\r\n\r\n")
        if not blank:
            raise MultipartError("multipart part without a blank line after its headers")
    headers = _parse_head(head)
    last_modified = headers.get("Last-Modified")
    last_modified_us = parse_http_date(last_modified) if last_modified is not None else 0
    if last_modified_us is None:
        raise MultipartError(f"invalid Last-Modified in a part: {last_modified!r:.80}")
    return SiblingPart(value=value, content_type=headers.get("Content-Type") or DEFAULT_CONTENT_TYPE,
                       last_modified_us=last_modified_us, metadata=meta_from_headers(headers),
                       deleted=(headers.get(DELETED_HEADER) or "").lower() == "true",
                       vtag=unquote_etag(headers.get("Etag") or ""))


def _parse_head(head: bytes) -> Headers:
    pairs: list[list[str]] = []
    for line in head.decode("latin-1").split("\r\n") if head else ():
        if line[:1] in (" ", "\t") and pairs:
            pairs[-1][1] += " " + line.strip(" \t")  # obsolete line folding
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise MultipartError(f"malformed header line in a part: {line!r:.80}")
        pairs.append([name, value.strip(" \t")])  # HTTP whitespace only: \xa0 is data
    return Headers((name, value) for name, value in pairs)


def siblings_text(vtags: Iterable[str]) -> bytes:
    """The text/plain 300 body Riak sends when multipart is not acceptable: "Siblings:" then vtags."""
    return ("Siblings:\n" + "".join(f"{vtag}\n" for vtag in vtags)).encode("utf-8")
