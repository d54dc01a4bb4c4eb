"""The client's operations as sans-IO generators: they yield HTTP calls and receive the answers.

Theory of operation: every public operation (get, put, delete, update, ...) is written once here as a
generator that yields a `Call` (method, target, headers, body) and is sent back an `Answer` (status,
headers, body, which node). It validates the caller's input before the first yield and turns answers
into results or ClientErrors. A driver moves the calls: the blocking `Client` over http.client, the trio
`AsyncClient` over h11, a test over a list. Failover, keep-alive and token awareness live in the
drivers and failover.py; the meaning of an answer lives only here.

Rules kept:
- Caller mistakes raise InvalidArgument before anything is sent (names, values, metadata, options).
- Only what the caller said goes on the wire; the rest is the bucket's default on the server.
- `update` is optimistic: it reads, applies `fn`, and writes with the read's context under If-Match
  (one live sibling) or If-None-Match: * (none); a 412 means someone wrote in between, so it reads the
  fresh context and tries again, at most `retries` more times. Over several live siblings there is no
  vtag to match: the resolver's choice is written with the context that covers them all.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from collections.abc import Callable, Generator, Mapping
from typing import Any

from dynamo.client.error import InvalidArgument, PreconditionFailed, ServerError, error_from_answer
from dynamo.client.option import (DELETE_OPTIONS, READ_OPTIONS, WRITE_OPTIONS, Options, check_read_your_writes)
from dynamo.client.result import KVObject, Resolver, read_object, read_replicas
from dynamo.http.header import VCLOCK_HEADER, check_header_value, meta_headers
from dynamo.http.message import Headers

ACCEPT_SIBLINGS = "multipart/mixed, */*;q=0.5"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
UPDATE_RETRIES_DEFAULT = 3


@dataclasses.dataclass(frozen=True)
class Call:
    """One HTTP request to make. `safe`: may be sent again to another node after it was sent once."""

    method: str
    target: str  # path and query, percent-encoded
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    safe: bool = True
    timeout_s: float | None = None  # what the server was told; the driver adds its own margin
    route: tuple[bytes, bytes, int | None] | None = None  # (bucket, key, n_val) for token awareness


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: Headers
    body: bytes
    node: str  # base URL of the node that answered


Operation = Generator[Call, Answer, Any]


def _name_bytes(what: str, name: Any) -> bytes:
    if isinstance(name, str):
        name = name.encode("utf-8")
    if not isinstance(name, bytes):
        raise InvalidArgument(f"{what} must be str or bytes, got {type(name).__name__}")
    if not name:
        raise InvalidArgument(f"{what} must not be empty")
    return name


def _quote(name: bytes) -> str:
    return urllib.parse.quote(name, safe="")


def _target(path: str, query: list[tuple[str, str]]) -> str:
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def _context_token(context: Any) -> str | None:
    if isinstance(context, KVObject):
        context = context.context
    if context is None:
        return None
    if not isinstance(context, str) or not context.strip():
        raise InvalidArgument(f"context must be the opaque str a read returned, got {type(context).__name__}")
    try:
        return check_header_value(context.strip(), "context")
    except ValueError as error:
        raise InvalidArgument(str(error)) from None


def _value_and_type(value: Any, content_type: str | None) -> tuple[bytes, str]:
    if isinstance(value, str):
        return value.encode("utf-8"), content_type or TEXT_CONTENT_TYPE
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), content_type or "application/octet-stream"
    raise InvalidArgument(f"value must be bytes or str, got {type(value).__name__}")


def _content_headers(content_type: str, meta: Any) -> list[tuple[str, str]]:
    if not isinstance(content_type, str):
        raise InvalidArgument(f"content_type must be str, got {type(content_type).__name__}")
    pairs = list(meta.items()) if isinstance(meta, Mapping) else list(meta or ())
    try:
        headers = [("Content-Type", check_header_value(content_type, "content_type"))]
        return headers + meta_headers(pairs)
    except (ValueError, TypeError) as error:
        raise InvalidArgument(f"cannot send as headers: {error}") from None


def _expect(answer: Answer, *statuses: int) -> Answer:
    if answer.status not in statuses:
        raise error_from_answer(answer.status, answer.body, answer.node)
    return answer


def _json(answer: Answer) -> Any:
    try:
        return json.loads(answer.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ServerError(f"answer is not JSON: {error}", status=answer.status, node=answer.node) from None


class Operations:
    """The operations with a client's defaults: its Options, resolver and consistency wish."""

    def __init__(self, defaults: Options, resolver: Resolver | None = None, *, read_your_writes: bool = False,
                 strict: bool = False) -> None:
        if resolver is not None and not callable(resolver):
            raise InvalidArgument(f"resolver must be callable, got {type(resolver).__name__}")
        self.defaults, self.resolver = defaults, resolver
        self.read_your_writes, self.strict = read_your_writes, strict
        if read_your_writes:
            check_read_your_writes(defaults, strict=strict)

    def options(self, overrides: dict[str, Any]) -> Options:
        options = self.defaults.merged(overrides)
        if self.read_your_writes and options is not self.defaults:
            check_read_your_writes(options, strict=self.strict)
        return options

    def _object_call(self, method: str, bucket: bytes, key: bytes, options: Options, names: tuple[str, ...],
                     extra_query: list[tuple[str, str]] = (), headers: list[tuple[str, str]] = (),
                     body: bytes = b"", safe: bool = True) -> Call:
        target = _target(f"/buckets/{_quote(bucket)}/keys/{_quote(key)}", options.query(names) + list(extra_query))
        return Call(method, target, tuple(headers), body, safe, options.timeout_s, (bucket, key, options.n_val))

    # ---- objects ------------------------------------------------------------------------------------

    def get(self, bucket: str | bytes, key: str | bytes, *, resolver: Resolver | None = None,
            vtag: str | None = None, **overrides: Any) -> Operation:
        _name_bytes("bucket", bucket), _name_bytes("key", key)
        if vtag is not None and (not isinstance(vtag, str) or not vtag):
            raise InvalidArgument("vtag must be a non-empty str")
        obj = yield from self._read(bucket, key, self.options(overrides), vtag)
        resolver = resolver or self.resolver
        return obj.resolved(resolver) if resolver is not None else obj

    def _read(self, bucket: str | bytes, key: str | bytes, options: Options, vtag: str | None = None) -> Operation:
        extra = [("vtag", vtag)] if vtag is not None else []
        call = self._object_call("GET", _name_bytes("bucket", bucket), _name_bytes("key", key), options,
                                 READ_OPTIONS, extra, [("Accept", ACCEPT_SIBLINGS)])
        answer = _expect((yield call), 200, 300, 404)
        return read_object(bucket, key, answer.status, answer.headers, answer.body, answer.node)

    def put(self, bucket: str | bytes, key: str | bytes, value: Any, *, context: Any = None,
            content_type: str | None = None, meta: Any = None, if_none_match: bool = False,
            if_match: str | None = None, **overrides: Any) -> Operation:
        _name_bytes("key", key)
        return (yield from self._write(bucket, key, value, context=context, content_type=content_type, meta=meta,
                                       if_none_match=if_none_match, if_match=if_match, **overrides))

    def _write(self, bucket: str | bytes, key: str | bytes | None, value: Any, *, context: Any = None,
               content_type: str | None = None, meta: Any = None, if_none_match: bool = False,
               if_match: str | None = None, **overrides: Any) -> Operation:
        """PUT to the key, or POST to the bucket when `key` is None (the server makes the key)."""
        bucket_bytes = _name_bytes("bucket", bucket)
        key_bytes = _name_bytes("key", key) if key is not None else None
        body, content_type = _value_and_type(value, content_type)
        headers = _content_headers(content_type, meta)
        token = _context_token(context)
        if token is not None:
            headers.append((VCLOCK_HEADER, token))
        if if_none_match:
            headers.append(("If-None-Match", "*"))
        if if_match is not None:
            if not isinstance(if_match, str) or not if_match or '"' in if_match:
                raise InvalidArgument(f"if_match must be a vtag (a non-empty str without quotes), got {if_match!r:.40}")
            headers.append(("If-Match", f'"{if_match}"'))
        options = self.options(overrides)
        # The server checks a write's conditions again on the body it returns (and refuses it), so a
        # conditional write asking for the body gets it by a read after the write instead.
        read_back = bool(options.returnbody and key_bytes is not None and (if_none_match or if_match is not None))
        if read_back:
            options = dataclasses.replace(options, returnbody=None)
        if options.returnbody:
            headers.append(("Accept", ACCEPT_SIBLINGS))
        if key_bytes is None:
            target = _target(f"/buckets/{_quote(bucket_bytes)}/keys", options.query(WRITE_OPTIONS))
            call = Call("POST", target, tuple(headers), body, False, options.timeout_s, None)
        else:
            call = self._object_call("PUT", bucket_bytes, key_bytes, options, WRITE_OPTIONS, (), headers, body,
                                     safe=False)
        answer = _expect((yield call), 200, 201, 204, 300)
        if key_bytes is None:
            key = _created_key(answer)
        if read_back:
            return (yield from self._read(bucket, key, Options(n_val=options.n_val, timeout_s=options.timeout_s)))
        if answer.status in (204, 201) and not answer.body:
            return key if key_bytes is None else None
        obj = read_object(bucket, key, 200 if answer.status == 201 else answer.status, answer.headers,
                          answer.body, answer.node)
        return key if key_bytes is None else obj

    def put_new(self, bucket: str | bytes, value: Any, *, content_type: str | None = None, meta: Any = None,
                **overrides: Any) -> Operation:
        overrides.pop("returnbody", None)  # the answer's only use here is its Location
        return (yield from self._write(bucket, None, value, content_type=content_type, meta=meta, **overrides))

    def delete(self, bucket: str | bytes, key: str | bytes, *, context: Any = None, **overrides: Any) -> Operation:
        bucket_bytes, key_bytes = _name_bytes("bucket", bucket), _name_bytes("key", key)
        token = _context_token(context)
        options = self.options(overrides)
        headers = [(VCLOCK_HEADER, token)] if token is not None else []
        call = self._object_call("DELETE", bucket_bytes, key_bytes, options, DELETE_OPTIONS, (), headers,
                                 safe=False)
        answer = _expect((yield call), 204, 200)
        return read_replicas(answer.headers)

    def update(self, bucket: str | bytes, key: str | bytes, fn: Callable[[bytes | None], Any], *,
               resolver: Resolver | None = None, retries: int = UPDATE_RETRIES_DEFAULT,
               content_type: str | None = None, **overrides: Any) -> Operation:
        """Read, fn(current value or None), write under a condition; on 412 read again. None: no write."""
        if not callable(fn):
            raise InvalidArgument(f"fn must be callable, got {type(fn).__name__}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgument(f"retries must be an integer >= 0, got {retries!r:.40}")
        read_overrides = {n: v for n, v in overrides.items() if n in READ_OPTIONS or n == "n_val"}
        write_overrides = {n: v for n, v in overrides.items() if n not in ("r", "pr", "basic_quorum",
                                                                              "notfound_ok")}
        write_overrides["returnbody"] = True
        for attempt in range(retries + 1):
            current = yield from self.get(bucket, key, resolver=resolver, **read_overrides)
            value = fn(current.value if current.exists else None)
            if value is None:
                return current
            live = current.live
            guard = {"if_match": live[0].vtag} if len(live) == 1 and live[0].vtag and not current.unresolved \
                else {"if_none_match": True} if not live else {}
            kind = content_type or (current.content_type if current.exists else None)
            try:
                return (yield from self.put(bucket, key, value, context=current.context, content_type=kind,
                                            meta=current.sibling.metadata if current.exists else None,
                                            **guard, **write_overrides))
            except PreconditionFailed:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")

    # ---- buckets and the node -----------------------------------------------------------------------

    def get_bucket_props(self, bucket: str | bytes) -> Operation:
        call = Call("GET", f"/buckets/{_quote(_name_bytes('bucket', bucket))}/props")
        props = _json(_expect((yield call), 200))
        return props.get("props", props) if isinstance(props, dict) else props

    def set_bucket_props(self, bucket: str | bytes, props: Mapping[str, Any]) -> Operation:
        if not isinstance(props, Mapping) or not props:
            raise InvalidArgument("props must be a non-empty mapping of property names to values")
        try:
            body = json.dumps({"props": dict(props)}).encode("utf-8")
        except (TypeError, ValueError) as error:
            raise InvalidArgument(f"props must be JSON values: {error}") from None
        call = Call("PUT", f"/buckets/{_quote(_name_bytes('bucket', bucket))}/props",
                    (("Content-Type", "application/json"),), body)
        _expect((yield call), 204, 200)

    def keys(self, bucket: str | bytes) -> Operation:
        call = Call("GET", _target(f"/buckets/{_quote(_name_bytes('bucket', bucket))}/keys", [("keys", "true")]))
        return _listed(_expect((yield call), 200), "keys")

    def buckets(self) -> Operation:
        call = Call("GET", _target("/buckets", [("buckets", "true")]))
        return _listed(_expect((yield call), 200), "buckets")

    def ping(self) -> Operation:
        answer = yield Call("GET", "/ping")
        return answer.status == 200 and answer.body.strip() == b"OK"

    def stats(self) -> Operation:
        return _json(_expect((yield Call("GET", "/stats")), 200))

    def ring(self) -> Operation:
        return _json(_expect((yield Call("GET", "/admin/ring")), 200))


def _listed(answer: Answer, field: str) -> list[str]:
    listing = _json(answer)
    names = listing.get(field) if isinstance(listing, dict) else None
    if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
        raise ServerError(f"a listing that is not {{{field!r}: [names]}}", status=answer.status, node=answer.node)
    return sorted(names)


def _created_key(answer: Answer) -> str:
    location = answer.headers.get("Location") or ""
    path = urllib.parse.urlsplit(location).path
    head, _, quoted_key = path.rpartition("/keys/")
    if not head or not quoted_key:
        raise ServerError(f"a created object without a usable Location: {location!r:.80}", status=answer.status,
                          node=answer.node)
    return urllib.parse.unquote(quoted_key)
