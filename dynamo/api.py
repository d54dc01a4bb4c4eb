"""The node's HTTP routes: Riak's object API plus stats and admin, on top of the coordinator.

Theory of operation: `Api(node)` is the app the HTTP server calls with each Request. It routes on the
path split into segments (percent-decoded each, so a key may hold "/"), checks the input, runs the
operation through the coordinator and renders Riak's answer. Everything a client gets wrong ends as one
plain-text line with its status (dynamo.http.riak.BadRequest and friends); the server turns anything
unexpected into a 500 without a traceback.

Object rules (DESIGN §3 and riak_kv_wm_object):
- GET: 200 with the value, or 300 with every sibling (multipart/mixed when Accept allows it, else the
  text "Siblings:" vtag list); ?vtag= picks one sibling. A key whose siblings are all tombstones is a 404
  that still carries X-Riak-Vclock (a later write with it replaces the tombstone). With allow_mult=false
  only the newest sibling is shown, with the context of all.
- PUT/POST: the body is the value (at most value_bytes_max: 413); Content-Type and X-Riak-Meta-* are
  kept; X-Riak-Vclock is the context the client read (malformed: 400). If-Match / If-None-Match /
  If-Unmodified-Since read the current value first (412 when they fail). 204, or with returnbody=true the
  object as a GET shows it. No X-Riak-Vclock on a 204: the coordinator's object may hold siblings the
  client never saw, and a context covering them would let its next write silently replace them.
- DELETE: writes a tombstone; without a context it replaces what the coordinator holds (as Riak, which
  reads before it deletes). 204.
- Listings (dynamo/service/listing.py): GET /buckets/B/keys?keys=true and GET /buckets?buckets=true
  answer Riak's {"keys": [...]} / {"buckets": [...]}; 503 when some partition has no primary that
  answers. With =stream the names go out chunked as partitions answer, as Riak streams them.
- Every object answer carries X-Dynamo-Replicas: "primary=P fallback=F hints=H": the primaries and
  fallbacks that had answered (get) or acked (put, delete) when the answer was made, and the hints among
  those acks. Replies still on their way are not counted (the client does not wait for them), so P+F is
  at least the quorum met, at most n_val; a request refused before any replica was asked shows zeros.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from dynamo.bucket import BadProps, props_from_json
from dynamo.causality import CausalityDecodeError, decode_context
from dynamo.change_api import ROUTES as CHANGE_ROUTES
from dynamo.http.message import BodyWriter, Request, Response, error_response
from dynamo.http.riak import (DEFAULT_CONTENT_TYPE, BadRequest, check_preconditions, content_headers, encode_multipart,
                              meta_from_headers, object_path, parse_listing_options, parse_request_options,
                              resource_map_response,
                              sibling_media_type, siblings_text, vclock_from_headers, vclock_header)
from dynamo.http.riak import RESOURCE_MAP, RIAK_KV_VERSION
from dynamo.metric import CONTENT_TYPE as METRICS_CONTENT_TYPE
from dynamo.object import Content, StoredObject, newest
from dynamo.service.coordinator import GetOutcome, GetRequest, ReplicaCounts, WriteRequest
from dynamo.service.listing import CoverageError, Emit
from dynamo.stats import prometheus_text
from dynamo.ui import HTML_CONTENT_TYPE, UI_RESOURCES, BadLookup, preflist_lookup, ring_page

REPLICAS_HEADER = "X-Dynamo-Replicas"
_CONDITIONS = ("If-Match", "If-None-Match", "If-Unmodified-Since")
_JSON = (("Content-Type", "application/json"),)
OPTIONS_CACHE_MAX = 1024


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: tuple = ()) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers

    def response(self) -> Response:
        return error_response(self.status, self.message, self.headers)


def _json(status: int, value: Any) -> Response:
    return Response(status, _JSON, _json_bytes(value))


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _names_text(names: list[bytes]) -> list[str]:
    return [name.decode("utf-8", "surrogateescape") for name in names]


def _listing_writer(field: str, stream: Callable[[Emit], Awaitable[None]], timeout_s: float) -> BodyWriter:
    """The body writer of a streamed listing (Api._listing)."""
    async def write_listing(write: Callable[[bytes], Awaitable[None]]) -> None:
        async def emit(names: list[bytes]) -> None:
            await write(_json_bytes({field: _names_text(names)}))
        with trio.move_on_after(timeout_s):
            try:
                await stream(emit)
            except CoverageError as error:
                await write(_json_bytes({"error": f"cannot list {field}: {error}"}))
                return
            await write(_json_bytes({field: []}))
            return
        await write(b'{"error":"timeout"}')
    return write_listing


def _method_not_allowed(allowed: str) -> HttpError:
    return HttpError(405, "method not allowed", (("Allow", allowed),))


class Api:
    """The HTTP app of one node (`node` is a dynamo.node.Node)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.config = node.config
        self._options_cache: dict[tuple[Any, str], Any] = {}

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except (BadRequest, HttpError) as error:
            return error.response()
        except BadProps as error:
            return error_response(400, error.message)

    async def _route(self, request: Request) -> Response:
        segments = request.path_segments()
        if segments and segments[-1] == b"" and len(segments) > 1:
            segments = segments[:-1]  # a trailing slash
        method = request.method
        head = segments[0] if segments else b""
        if head == b"buckets" and len(segments) == 4 and segments[2] == b"keys":
            return await self._object(request, segments[1], segments[3])
        if head == b"buckets" and len(segments) == 3 and segments[2] == b"keys":
            if method == "GET":
                return await self._list_keys(request, segments[1])
            if method != "POST":
                raise _method_not_allowed("GET, POST")
            return await self._put(request, segments[1], None)
        if head == b"buckets" and len(segments) == 3 and segments[2] == b"props":
            return await self._props(request, segments[1])
        route = (method if method != "HEAD" else "GET", b"/".join(segments))
        handler = _SIMPLE_ROUTES.get(route)
        if handler is not None:
            return await handler(self, request)
        if any(path == route[1] for _, path in _SIMPLE_ROUTES):
            raise _method_not_allowed("GET, HEAD")
        raise HttpError(404, "not found")

    # ---- simple routes ------------------------------------------------------------------------------

    async def _ping(self, request: Request) -> Response:
        return Response(200, (("Content-Type", "text/plain"),), b"OK")

    async def _resources(self, request: Request) -> Response:
        return resource_map_response({**RESOURCE_MAP, **UI_RESOURCES})

    async def _stats(self, request: Request) -> Response:
        return _json(200, {"riak_kv_version": RIAK_KV_VERSION, **await self.node.stats_report()})

    async def _metrics(self, request: Request) -> Response:
        stats = self.node.stats
        text = prometheus_text(await self.node.stats_report(), self.config.node_id,
                               {"get": stats.get_latency, "put": stats.put_latency})
        return Response(200, (("Content-Type", METRICS_CONTENT_TYPE),), text.encode("utf-8"))

    async def _ring(self, request: Request) -> Response:
        membership = self.node.membership
        ring = membership.ring
        nodes = {}
        for member in membership.members_report():
            nodes[member["node"]] = {"status": member["status"], "http": member["http"], "rpc": member["rpc"],
                                     "partitions": member["partitions"]}
        return _json(200, {"version": ring.version, "partitions": ring.partitions, "n_val": self.config.n_val,
                           "target_n": ring.target_n, "owners": list(ring.owners), "nodes": nodes})

    async def _members(self, request: Request) -> Response:
        return _json(200, {"node": self.config.node_id, "members": self.node.membership.members_report()})

    async def _aae(self, request: Request) -> Response:
        return _json(200, self.node.aae.report())  # dynamo/service/aae.py

    async def _ring_page(self, request: Request) -> Response:
        return Response(200, (("Content-Type", HTML_CONTENT_TYPE), ("Cache-Control", "no-cache")), ring_page())

    async def _preflist(self, request: Request) -> Response:
        try:
            return _json(200, preflist_lookup(self.node.membership, self.node.registry, request.query))
        except BadLookup as error:
            raise HttpError(400, error.message) from None

    # ---- listings (dynamo/service/listing.py) --------------------------------------------------------

    async def _list_keys(self, request: Request, bucket: bytes) -> Response:
        self._check_name(bucket, None)
        listing = self.node.listing
        return await self._listing(request, "keys", lambda: listing.keys(bucket),
                                   lambda emit: listing.stream_keys(bucket, emit))

    async def _list_buckets(self, request: Request) -> Response:
        listing = self.node.listing
        return await self._listing(request, "buckets", listing.buckets, listing.stream_buckets)

    async def _listing(self, request: Request, field: str, run: Callable[[], Awaitable[list[bytes]]],
                       stream: Callable[[Emit], Awaitable[None]]) -> Response:
        """Riak's list keys and list buckets. `?keys=true` (or `buckets=true`) answers {field: [names]},
        sorted. `=stream` answers Riak's stream of {field: [...]} objects, one per partition answer as it
        comes, ending with {field: []}; a failure once the stream has started ends it with {"error": ...}
        (Riak's clients raise it), a timeout with Riak's {"error": "timeout"}. Names are UTF-8 text (other
        bytes as surrogate escapes, which Python's "surrogateescape" turns back into the bytes). `timeout`
        (ms) bounds the whole listing: past it, 503 (or the timeout error in a stream)."""
        mode, timeout_ms = parse_listing_options(request.query, field)
        timeout_s = math.inf if timeout_ms is None else timeout_ms / 1000
        if mode == "stream":
            return Response(200, _JSON, stream=_listing_writer(field, stream, timeout_s))
        with trio.move_on_after(timeout_s):
            try:
                names = await run()
            except CoverageError as error:
                raise HttpError(503, f"cannot list {field}: {error}") from None
            return _json(200, {field: _names_text(names)})
        raise HttpError(503, f"listing {field} timed out after {timeout_ms} ms")

    # ---- names and options --------------------------------------------------------------------------

    def _check_name(self, bucket: bytes, key: bytes | None) -> None:
        if not bucket:
            raise HttpError(400, "bucket name must not be empty")
        if len(bucket) > self.config.bucket_bytes_max:
            raise HttpError(413, f"bucket name too long: {len(bucket)} > {self.config.bucket_bytes_max} bytes")
        if key is not None and not key:
            raise HttpError(400, "key must not be empty")
        if key is not None and len(key) > self.config.key_bytes_max:
            raise HttpError(413, f"key too long: {len(key)} > {self.config.key_bytes_max} bytes")

    def _options(self, request: Request, props: Any) -> Any:
        """parse_request_options, remembered per (bucket properties, query string): clients repeat the
        same few queries, and parsing is a visible share of a small request. Refusals are not cached."""
        cache_key = (props, request.query_string)
        options = self._options_cache.get(cache_key)
        if options is None:
            options = parse_request_options(request.query, props)
            if len(self._options_cache) >= OPTIONS_CACHE_MAX:
                self._options_cache.clear()
            self._options_cache[cache_key] = options
        return options

    def _timeout_s(self, timeout_ms: int | None) -> float:
        return timeout_ms / 1000 if timeout_ms is not None else self.config.request_timeout_s

    def _context(self, request: Request) -> str | None:
        token = vclock_from_headers(request.headers)
        if token is not None:
            try:
                decode_context(token)
            except CausalityDecodeError as error:
                raise HttpError(400, f"malformed X-Riak-Vclock: {error}") from None
        return token

    # ---- objects ------------------------------------------------------------------------------------

    async def _object(self, request: Request, bucket: bytes, key: bytes) -> Response:
        method = request.method
        if method in ("GET", "HEAD"):
            return await self._get(request, bucket, key)
        if method in ("PUT", "POST"):
            return await self._put(request, bucket, key)
        if method == "DELETE":
            return await self._delete(request, bucket, key)
        raise _method_not_allowed("GET, HEAD, PUT, POST, DELETE")

    async def _fetch(self, request: Request, bucket: bytes, key: bytes, options: Any) -> GetOutcome:
        return await self.node.coordinator.get(GetRequest(
            bucket, key, options.n_val, options.r, options.pr, options.notfound_ok, options.basic_quorum,
            self._timeout_s(options.timeout_ms)))

    async def _get(self, request: Request, bucket: bytes, key: bytes) -> Response:
        self._check_name(bucket, key)
        props = self.node.registry.get(bucket)
        options = self._options(request, props)
        outcome = await self._fetch(request, bucket, key, options)
        if outcome.error is not None:
            raise HttpError(503, outcome.error, ((REPLICAS_HEADER, outcome.replicas.header()),))
        return self._render(request, bucket, outcome.obj, outcome.replicas, props.allow_mult, options.vtag, 200)

    def _render(self, request: Request, bucket: bytes, obj: StoredObject | None, replicas: ReplicaCounts,
                allow_mult: bool, vtag: str | None, status: int) -> Response:
        extra = [(REPLICAS_HEADER, replicas.header())]
        if obj is None:
            return error_response(404, "not found", extra)
        extra.append(vclock_header(obj.context_token()))
        siblings = obj.siblings if allow_mult or len(obj.siblings) < 2 else (newest(obj),)
        if vtag is not None:
            chosen = obj.sibling(vtag)
            if chosen is None:
                return error_response(404, f"no sibling with vtag {vtag}", extra)
            siblings = (chosen,)
        if all(sibling.deleted for sibling in siblings):
            return error_response(404, "not found", extra)
        if len(siblings) == 1:
            sibling = siblings[0]
            # Conditions of a write were checked before it (_check_conditions); its returnbody answer is the
            # new object, which a write's If-Match / If-None-Match: * would wrongly refuse.
            refused = None if request.method not in ("GET", "HEAD") else \
                check_preconditions(request.method, request.headers, sibling.vtag, sibling.last_modified_us)
            if refused is not None:
                return Response(refused, extra, b"") if refused == 304 else \
                    error_response(412, "precondition failed", extra)
            return Response(status, content_headers(sibling, bucket) + extra, sibling.value)
        media = sibling_media_type(request.headers.get_joined("Accept"))
        if media is None:
            return error_response(406, "siblings need Accept: multipart/mixed or text/plain", extra)
        if media == "multipart/mixed":
            content_type, body = encode_multipart(siblings, bucket=bucket)
        else:
            content_type, body = "text/plain", siblings_text(s.vtag for s in siblings)
        return Response(300, [("Content-Type", content_type)] + extra, body)

    async def _put(self, request: Request, bucket: bytes, key: bytes | None) -> Response:
        created = key is None
        if created:
            key = _new_key()
        self._check_name(bucket, key)
        if len(request.body) > self.config.value_bytes_max:
            raise HttpError(413, f"value too large: {len(request.body)} > {self.config.value_bytes_max} bytes")
        props = self.node.registry.get(bucket)
        options = self._options(request, props)
        context = self._context(request)
        if any(name in request.headers for name in _CONDITIONS):
            await self._check_conditions(request, bucket, key, options)
        content_type = request.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
        try:
            content = Content(request.body, content_type, self.node.wall_clock_ns() // 1000,
                              meta_from_headers(request.headers))
        except ValueError as error:
            raise HttpError(400, f"invalid value: {error}") from None
        outcome = await self._write(request, bucket, key, content, context, options, props)
        location = (("Location", object_path(bucket, key)),) if created else ()
        if options.returnbody and outcome.obj is not None:
            response = self._render(request, bucket, outcome.obj, outcome.replicas, props.allow_mult, None,
                                    201 if created else 200)
            return Response(response.status, tuple(response.headers) + location, response.body)
        headers = ((REPLICAS_HEADER, outcome.replicas.header()),) + location
        return Response(201 if created else 204, headers, b"")

    async def _write(self, request: Request, bucket: bytes, key: bytes, content: Content, context: str | None,
                     options: Any, props: Any) -> Any:
        # Every ack here is durable, so dw only adds a requirement when the client asks for it: a default
        # dw (quorum) must not silently turn w=1 into w=2.
        dw = options.dw if any(name == "dw" for name, _ in request.query) else min(options.dw, options.w)
        request = WriteRequest(bucket, key, content, context, options.n_val, options.w, dw, options.pw,
                               self._timeout_s(options.timeout_ms), props.last_write_wins, props.allow_mult)
        outcome = await self.node.coordinator.write(request)
        if outcome.status != 200:
            raise HttpError(outcome.status, outcome.message, ((REPLICAS_HEADER, outcome.replicas.header()),))
        return outcome

    async def _check_conditions(self, request: Request, bucket: bytes, key: bytes, options: Any) -> None:
        current = await self._fetch(request, bucket, key, options)
        if current.error is not None:
            raise HttpError(503, current.error)
        etag = last_modified_us = None
        if current.obj is not None:
            live = current.obj.live_siblings
            if len(live) == 1:
                etag, last_modified_us = live[0].vtag, live[0].last_modified_us
        if check_preconditions(request.method, request.headers, etag, last_modified_us) is not None:
            raise HttpError(412, "precondition failed")

    async def _delete(self, request: Request, bucket: bytes, key: bytes) -> Response:
        self._check_name(bucket, key)
        props = self.node.registry.get(bucket)
        options = self._options(request, props)
        context = self._context(request)
        content = Content.tombstone(self.node.wall_clock_ns() // 1000)
        outcome = await self._write(request, bucket, key, content, context, options, props)
        return Response(204, ((REPLICAS_HEADER, outcome.replicas.header()),), b"")

    # ---- bucket properties --------------------------------------------------------------------------

    async def _props(self, request: Request, bucket: bytes) -> Response:
        self._check_name(bucket, None)
        registry = self.node.registry
        if request.method in ("GET", "HEAD"):
            props = registry.get(bucket).to_json()
            return _json(200, {"props": {"name": bucket.decode("utf-8", "replace"), **props}})
        if request.method != "PUT":
            raise _method_not_allowed("GET, HEAD, PUT")
        try:
            body = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise HttpError(400, f"bucket properties must be JSON: {error}") from None
        props = props_from_json(body, registry.get(bucket))
        registry.set(bucket, props, self.node.wall_clock_ns() // 1000)
        self.node.membership.publish_buckets()
        return Response(204, (), b"")


def _new_key() -> bytes:
    """A fresh key for POST /buckets/b/keys: 120 random bits, URL-safe."""
    return base64.urlsafe_b64encode(os.urandom(15))


_SIMPLE_ROUTES = {
    ("GET", b""): Api._resources,
    ("GET", b"ping"): Api._ping,
    ("GET", b"stats"): Api._stats,
    ("GET", b"buckets"): Api._list_buckets,
    ("GET", b"metrics"): Api._metrics,
    ("GET", b"admin/ring"): Api._ring,
    ("GET", b"admin/members"): Api._members,
    ("GET", b"admin/preflist"): Api._preflist,
    ("GET", b"admin/aae"): Api._aae,
    ("GET", b"ui/ring"): Api._ring_page,
    **CHANGE_ROUTES,  # membership changes and transfers (change_api.py)
}
