"""Riak's object headers: causal context, user metadata, ETag, dates, conditions and Accept.

Pure functions between header text and the values of an object (no I/O). The rules they keep:
- X-Riak-Vclock is opaque here: read back as sent (stripped), decoded by the caller.
- User metadata travels as `X-Riak-Meta-<name>: <value>`. Riak stores such headers verbatim and
  returns them as they came (riak_kv_wm_object:extract_user_meta), so the name keeps the spelling
  the client sent; the metadata pair holds the name without the prefix. Header names are
  case-insensitive, so clients (riak-python-client) compare them lowercased.
- ETag on a single object is the vtag in quotes; inside a multipart part Riak writes it bare
  (riak_kv_wm_utils:multipart_encode_body), so `content_headers` can do either.
- Dates are RFC 1123 in GMT, whole seconds (HTTP has no finer grain): microseconds are floored.
- Every header value this module builds is checked against RFC 9110's field-value grammar, so no
  metadata or content type can smuggle a line break into a response.
- Conditions follow RFC 9110 §13.2.2: If-Match (or else If-Unmodified-Since), then If-None-Match
  (or else If-Modified-Since, for GET and HEAD only). A miss on GET/HEAD is 304, otherwise 412.
- Accept negotiation follows RFC 9110 §12.5.1: each offered type takes the q of the most specific
  range that matches it; the highest q > 0 wins and ties go to the earlier offer.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import re
import urllib.parse
from typing import Iterable, Sequence

from dynamo.http.message import Headers

VCLOCK_HEADER = "X-Riak-Vclock"
META_PREFIX = "X-Riak-Meta-"
DELETED_HEADER = "X-Riak-Deleted"
DEFAULT_CONTENT_TYPE = "application/octet-stream"

_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
# RFC 9110's field-value, as h11 reads it: visible bytes (anything but NUL and whitespace) separated
# by runs of SP/HTAB.
_FIELD_VALUE = re.compile(r"(?:[^\x00\t\n\x0b\x0c\r ]+(?:[ \t]+[^\x00\t\n\x0b\x0c\r ]+)*)?")
_LATIN1 = re.compile(r"[\x00-\xff]*")
_US_PER_S = 1_000_000
_US_MAX = 253402300800 * _US_PER_S  # 10000-01-01T00:00:00Z: RFC 1123 dates have four-digit years


def check_header_value(value: str, what: str) -> str:
    """Return `value` if it can go on the wire as one header value, else raise ValueError."""
    if not isinstance(value, str) or not _LATIN1.fullmatch(value) or not _FIELD_VALUE.fullmatch(value):
        raise ValueError(f"{what} is not a valid header value: {value!r:.80}")
    return value


def check_header_name(name: str, what: str) -> str:
    """Return `name` if it is a header field name (an RFC 9110 token), else raise ValueError."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ValueError(f"{what} is not a valid header name: {name!r:.80}")
    return name


# -- causal context ------------------------------------------------------------------------------

def vclock_from_headers(headers: Headers) -> str | None:
    """The X-Riak-Vclock the client sent back, or None when absent or empty."""
    value = headers.get(VCLOCK_HEADER)
    value = value.strip(" \t") if value is not None else ""
    return value or None


def vclock_header(context: str) -> tuple[str, str]:
    return VCLOCK_HEADER, check_header_value(context, VCLOCK_HEADER)


# -- user metadata -------------------------------------------------------------------------------

def meta_from_headers(headers: Headers) -> tuple[tuple[str, str], ...]:
    """X-Riak-Meta-* headers as (name, value) pairs, in order, the name as sent minus the prefix."""
    prefix_len = len(META_PREFIX)
    return tuple((name[prefix_len:], value) for name, value in headers.with_prefix(META_PREFIX)
                 if len(name) > prefix_len)


def meta_headers(metadata: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(name, value) metadata pairs as X-Riak-Meta-<name> headers; ValueError if one cannot be sent."""
    headers = []
    for name, value in metadata:
        check_header_name(name, "metadata name")
        headers.append((META_PREFIX + name, check_header_value(value, f"metadata {name}")))
    return headers


# -- ETag and dates ------------------------------------------------------------------------------

def etag(vtag: str) -> str:
    """The ETag header value for a vtag: the vtag in double quotes."""
    if '"' in vtag:
        raise ValueError(f"a vtag cannot contain a double quote: {vtag!r:.80}")
    return check_header_value(f'"{vtag}"', "ETag")


def unquote_etag(value: str) -> str:
    """A vtag from an ETag value, quoted or (as in Riak's multipart parts) bare; W/ is dropped."""
    value = value.strip(" \t")
    if value.startswith("W/"):
        value = value[2:]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def format_http_date(time_us: int) -> str:
    """RFC 1123 date in GMT for a time in microseconds since the epoch (floored to the second)."""
    if not 0 <= time_us < _US_MAX:
        raise ValueError(f"time out of range for an HTTP date: {time_us} us")
    return _http_date(time_us // _US_PER_S)


@functools.lru_cache(maxsize=4096)
def _http_date(time_s: int) -> str:
    # Objects written in the same second share their Last-Modified text: format each second once.
    return email.utils.formatdate(time_s, usegmt=True)


def parse_http_date(text: str) -> int | None:
    """Microseconds since the epoch from an HTTP date (RFC 1123, RFC 850 or asctime), None if invalid."""
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)  # asctime and "-0000" carry no zone: GMT
    return int(moment.timestamp()) * _US_PER_S


@functools.lru_cache(maxsize=1024)
def bucket_link(bucket: bytes | str) -> tuple[str, str]:
    """The Link header Riak puts on every object: up to its bucket (few buckets: each quoted once)."""
    return "Link", f'</buckets/{urllib.parse.quote_plus(bucket)}>; rel="up"'


def content_headers(sibling, bucket: bytes | str | None = None, *,
                    quoted_etag: bool = True) -> list[tuple[str, str]]:
    """Headers describing one sibling: Content-Type, Link, ETag, Last-Modified, Deleted, metadata.

    `sibling` is anything with value, content_type, last_modified_us, metadata, deleted, vtag.
    """
    content_type = sibling.content_type or DEFAULT_CONTENT_TYPE
    headers = [("Content-Type", check_header_value(content_type, "content type"))]
    if bucket is not None:
        headers.append(bucket_link(bucket))
    if sibling.vtag:
        headers.append(("ETag", etag(sibling.vtag)) if quoted_etag
                       else ("Etag", check_header_value(sibling.vtag, "vtag")))
    headers.append(("Last-Modified", format_http_date(sibling.last_modified_us)))
    if sibling.deleted:
        headers.append((DELETED_HEADER, "true"))
    headers.extend(meta_headers(sibling.metadata))
    return headers


# -- conditional requests ------------------------------------------------------------------------

_ETAG_ITEM = re.compile(r'\s*(W/)?(?:"([^"]*)"|([^",\s]+))\s*(?:,|$)')


def parse_etags(value: str) -> list[str] | None:
    """The opaque tags of an If-Match / If-None-Match value; None means "*" (any current version).

    Weak and strong tags are both returned bare; bare unquoted tags are accepted for lenience.
    """
    if value.strip() == "*":
        return None
    tags = []
    position = 0
    while position < len(value):
        match = _ETAG_ITEM.match(value, position)
        if match is None or match.end() == position:
            break  # the rest is malformed: it can match nothing
        tags.append(match.group(2) if match.group(2) is not None else match.group(3))
        position = match.end()
    return tags


def check_preconditions(method: str, headers: Headers, current_etag: str | None,
                        last_modified_us: int | None = None) -> int | None:
    """The status a conditional request must get instead of proceeding (304 or 412), or None.

    `current_etag` is the vtag (bare or quoted) of the current version, None when the key has no
    live value; `last_modified_us` its modification time, if known.
    """
    safe = method in ("GET", "HEAD")
    current = unquote_etag(current_etag) if current_etag is not None else None
    if_match = headers.get_joined("If-Match")
    if if_match is not None:
        tags = parse_etags(if_match)
        if current is None or (tags is not None and current not in tags):
            return 412
    elif last_modified_us is not None and (since := headers.get("If-Unmodified-Since")) is not None:
        since_us = parse_http_date(since)
        if since_us is not None and last_modified_us // _US_PER_S > since_us // _US_PER_S:
            return 412
    if_none_match = headers.get_joined("If-None-Match")
    if if_none_match is not None:
        tags = parse_etags(if_none_match)
        if current is not None and (tags is None or current in tags):
            return 304 if safe else 412
    elif safe and last_modified_us is not None and (since := headers.get("If-Modified-Since")) is not None:
        since_us = parse_http_date(since)
        if since_us is not None and last_modified_us // _US_PER_S <= since_us // _US_PER_S:
            return 304
    return None


# -- content negotiation -------------------------------------------------------------------------

def _accept_ranges(accept: str) -> list[tuple[str, str, float]]:
    ranges = []
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        if media == "*":
            media = "*/*"  # sent by Java's HttpURLConnection
        main, slash, sub = media.partition("/")
        if not (slash and main and sub):
            continue  # malformed range: ignored
        q = 1.0
        for param in params:
            key, _, raw = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(raw.strip())
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:
            ranges.append((main, sub, q))
    return ranges


def choose_media_type(offered: Sequence[str], accept: str | None) -> str | None:
    """The offered media type the Accept header prefers, None if it accepts none of them."""
    if accept is None or not accept.strip():
        return offered[0] if offered else None
    ranges = _accept_ranges(accept)
    best, best_q = None, 0.0
    for media in offered:
        main, _, sub = media.lower().partition("/")
        specificity, q = -1, 0.0
        for range_main, range_sub, range_q in ranges:
            if range_main == "*" and range_sub == "*":
                rank = 0
            elif range_main == main and range_sub == "*":
                rank = 1
            elif range_main == main and range_sub == sub:
                rank = 2
            else:
                continue
            if rank > specificity or (rank == specificity and range_q > q):
                specificity, q = rank, range_q
        if q > best_q:
            best, best_q = media, q
    return best


def sibling_media_type(accept: str | None) -> str | None:
    """How to answer a 300: "multipart/mixed" if Accept allows it at least as much as text/plain,
    else "text/plain" (the Siblings: vtag list), else None (the client accepts neither: 406)."""
    return choose_media_type(("multipart/mixed", "text/plain"), accept)
