"""Pure helpers for Riak's HTTP object API: request options, the resource map, and one import point.

Routes call these; nothing here does I/O. Query options (DESIGN §3) resolve as riak_kv does
(riak_kv_wm_object:malformed_rw_params, riak_kv_util:expand_rw_value), checked up front so a bad
request gets a 400 before any replica is asked:
- quorum values r w dw rw pr pw: a non-negative integer or one|quorum|all|default; "default" takes
  the bucket's value (itself possibly symbolic); one = 1, quorum = n_val // 2 + 1, all = n_val,
  computed against the request's effective n_val. r, w and rw must be >= 1 (nothing can be read or
  written by zero replicas); dw, pr and pw may be 0 (no such requirement). Each must be <= n_val.
- n_val: an integer from 1 to the bucket's n_val, or default. A request may ask fewer replicas,
  never more than the bucket keeps.
- timeout (milliseconds, > 0), returnbody, basic_quorum, notfound_ok (true|false, the last two also
  default), vtag (any non-empty text). A parameter given twice is refused: which one was meant is
  not ours to guess. Names not listed here are ignored, as Riak ignores them.
- Listings (list keys, list buckets) take keys=true|stream (or buckets=) and timeout, under the same
  rules.
- Every refusal is `BadRequest` (a ValueError) with a one-line message; a broken bucket default is
  a plain ValueError (a server fault, 500).

The header, negotiation and multipart helpers live in header.py and multipart.py and are
re-exported here so routes can take everything Riak-shaped from this module.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from typing import Any, Iterable, Mapping

from dynamo.http.header import (  # noqa: F401  (re-exported)
    DEFAULT_CONTENT_TYPE, DELETED_HEADER, META_PREFIX, VCLOCK_HEADER, bucket_link, check_header_value,
    check_preconditions, choose_media_type, content_headers, etag, format_http_date, meta_from_headers,
    meta_headers, parse_etags, parse_http_date, sibling_media_type, unquote_etag, vclock_from_headers,
    vclock_header)
from dynamo.http.message import Response, error_response  # noqa: F401  (re-exported)
from dynamo.http.multipart import (  # noqa: F401  (re-exported)
    MultipartError, SiblingPart, decode_multipart, encode_multipart, multipart_boundary, siblings_text)


class BadRequest(ValueError):
    """A request the client got wrong: answer 400 with `message` (one line)."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def response(self) -> Response:
        return error_response(self.status, self.message)


# Riak's default bucket properties (riak_core default_bucket_props) for the values used here.
DEFAULT_BUCKET_PROPS: Mapping[str, Any] = {
    "n_val": 3, "r": "quorum", "w": "quorum", "dw": "quorum", "rw": "quorum", "pr": 0, "pw": 0,
    "basic_quorum": False, "notfound_ok": True,
}

_QUORUMS = ("r", "w", "dw", "rw", "pr", "pw")
_QUORUM_MIN = {"r": 1, "w": 1, "rw": 1, "dw": 0, "pr": 0, "pw": 0}
_SYMBOLS = ("one", "quorum", "all", "default")
_KNOWN = frozenset(_QUORUMS + ("n_val", "timeout", "returnbody", "basic_quorum", "notfound_ok", "vtag"))


@dataclasses.dataclass(frozen=True)
class Options:
    """A request's options with every quorum resolved to an integer against `n_val`."""

    n_val: int
    r: int
    w: int
    dw: int
    rw: int
    pr: int
    pw: int
    basic_quorum: bool
    notfound_ok: bool
    returnbody: bool = False
    timeout_ms: int | None = None
    vtag: str | None = None


def parse_request_options(query_pairs: Iterable[tuple[str, str]],
                          bucket_defaults: Mapping[str, Any] | Any = DEFAULT_BUCKET_PROPS) -> Options:
    """Options from query pairs and the bucket's properties (a mapping or an object with attributes;
    anything missing falls back to DEFAULT_BUCKET_PROPS). Raises BadRequest."""
    given = _single_values(query_pairs)
    bucket_n_val = _bucket_prop(bucket_defaults, "n_val")
    if isinstance(bucket_n_val, bool) or not isinstance(bucket_n_val, int) or bucket_n_val < 1:
        raise ValueError(f"bucket property n_val must be a positive integer, got {bucket_n_val!r}")
    n_val = _parse_n_val(given.get("n_val"), bucket_n_val)
    quorums = {name: _parse_quorum(name, given.get(name), bucket_defaults, n_val) for name in _QUORUMS}
    return Options(
        n_val=n_val, **quorums,
        basic_quorum=_parse_flag("basic_quorum", given.get("basic_quorum"), bucket_defaults),
        notfound_ok=_parse_flag("notfound_ok", given.get("notfound_ok"), bucket_defaults),
        returnbody=_parse_flag("returnbody", given.get("returnbody"), None),
        timeout_ms=_parse_timeout(given.get("timeout")),
        vtag=_parse_vtag(given.get("vtag")),
    )


def resolve_quorum(name: str, value: int | str, n_val: int) -> int:
    """An integer or one|quorum|all as a count of replicas out of `n_val` (no range check)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} cannot be a boolean")
    if isinstance(value, int):
        return value
    symbol = str(value).lower()
    if symbol == "one":
        return 1
    if symbol == "quorum":
        return n_val // 2 + 1
    if symbol == "all":
        return n_val
    raise ValueError(f"{name} must be an integer or one|quorum|all, got {value!r:.40}")


def _single_values(query: Iterable[tuple[str, str]], known: frozenset[str] = _KNOWN) -> dict[str, str]:
    given: dict[str, str] = {}
    for name, value in query:
        if name not in known:
            continue
        if name in given:
            raise BadRequest(f"query parameter {name} given more than once")
        given[name] = value
    return given


def _bucket_prop(bucket_props: Mapping[str, Any] | Any, name: str) -> Any:
    if isinstance(bucket_props, Mapping):
        value = bucket_props.get(name)
    else:
        value = getattr(bucket_props, name, None)
    return DEFAULT_BUCKET_PROPS[name] if value is None else value


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _parse_n_val(raw: str | None, bucket_n_val: int) -> int:
    if raw is None or raw.lower() == "default":
        return bucket_n_val
    if not _is_digits(raw):
        raise BadRequest(f"n_val must be a positive integer or default, got {raw!r:.40}")
    n_val = int(raw)
    if n_val < 1:
        raise BadRequest("n_val must be >= 1")
    if n_val > bucket_n_val:
        raise BadRequest(f"n_val must be <= the bucket's n_val: {n_val} > {bucket_n_val}")
    return n_val


def _parse_quorum(name: str, raw: str | None, bucket_props: Any, n_val: int) -> int:
    source = ""
    if raw is None or raw.lower() == "default":
        try:
            value = resolve_quorum(name, _bucket_prop(bucket_props, name), n_val)
        except ValueError as exc:
            raise ValueError(f"bucket property {exc}") from None
        source = " (bucket default)"
    elif raw.lower() in _SYMBOLS:
        value = resolve_quorum(name, raw, n_val)
    elif _is_digits(raw):
        value = int(raw)
    else:
        raise BadRequest(f"{name} must be a non-negative integer or one|quorum|all|default, got {raw!r:.40}")
    if value < _QUORUM_MIN[name]:
        raise BadRequest(f"{name} must be >= {_QUORUM_MIN[name]}{source}, got {value}")
    if value > n_val:
        raise BadRequest(f"{name} must be <= n_val: {value}{source} > {n_val}")
    return value


def _parse_flag(name: str, raw: str | None, bucket_props: Any | None) -> bool:
    """true|false; with bucket_props also default (the bucket's value), else absent means false."""
    if raw is None or (bucket_props is not None and raw.lower() == "default"):
        if bucket_props is None:
            return False
        value = _bucket_prop(bucket_props, name)
        if not isinstance(value, bool):
            raise ValueError(f"bucket property {name} must be a boolean, got {value!r}")
        return value
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    choices = "true|false|default" if bucket_props is not None else "true|false"
    raise BadRequest(f"{name} must be {choices}, got {raw!r:.40}")


def parse_listing_options(query: Iterable[tuple[str, str]], field: str) -> tuple[str, int | None]:
    """Riak's list keys (`field` "keys") and list buckets ("buckets") options: (`field`'s value, true or
    stream; timeout in ms or None). BadRequest for anything else, as for an object request."""
    given = _single_values(query, frozenset((field, "timeout")))
    mode = given.get(field)
    if mode not in ("true", "stream"):
        raise BadRequest(f"list {field} with ?{field}=true or ?{field}=stream (it reads every partition)")
    return mode, _parse_timeout(given.get("timeout"))


def _parse_timeout(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not _is_digits(raw) or int(raw) < 1:
        raise BadRequest(f"timeout must be a positive integer of milliseconds, got {raw!r:.40}")
    return int(raw)


def _parse_vtag(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not raw:
        raise BadRequest("vtag must not be empty")
    return raw


# -- paths and the resource map ------------------------------------------------------------------

# What `GET /` lists: Riak's resource module names -> the path roots they serve. Riak's clients read
# it to pick URL schemes (riak_kv_wm_buckets present => "/buckets/B/keys/K"), ping and stats.
RESOURCE_MAP: Mapping[str, str] = {
    "riak_kv_wm_buckets": "/buckets",
    "riak_kv_wm_object": "/buckets",
    "riak_kv_wm_ping": "/ping",
    "riak_kv_wm_stats": "/stats",
}


# What `/stats` gives as `riak_kv_version`: the Riak release whose HTTP object API this one matches.
# Riak's clients read it to detect features before their first request that depends on one
# (riak-python-client fails every store without it). 1.4.12, the last 1.x, because this store has that
# release's object API (quorum controls including pr/pw, tombstone vclocks, request timeouts) and not
# the 2.x additions, bucket types and data types: a client told 1.4 refuses those itself, with its own
# clear error, instead of sending requests here that would only find a 404.
RIAK_KV_VERSION = "1.4.12"


def resource_map_response(resources: Mapping[str, str] = RESOURCE_MAP) -> Response:
    """The `GET /` answer: the map as JSON, and the same in a Link header, as Riak sends it."""
    ordered = sorted(resources.items())
    links = ",".join(f'<{path}>; rel="{name}"' for name, path in ordered)
    body = json.dumps(dict(ordered), separators=(",", ":")).encode("utf-8")
    return Response(200, (("Content-Type", "application/json"), ("Link", links)), body)


def object_path(bucket: bytes | str, key: bytes | str) -> str:
    """The path of an object, each name percent-encoded (a "/" in a key becomes %2F)."""
    return f"/buckets/{urllib.parse.quote(bucket, safe='')}/keys/{urllib.parse.quote(key, safe='')}"
