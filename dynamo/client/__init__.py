"""The client library: Riak-style tunable consistency over the store's HTTP API.

    from dynamo.client import Client, QUORUM, ALL, last_written
    with Client(["http://127.0.0.1:8001", "http://127.0.0.1:8002"], r=QUORUM, w=QUORUM) as db:
        db.put("users", "ada", b"{...}", content_type="application/json")
        obj = db.get("users", "ada", resolver=last_written)
        db.put("users", "ada", obj.value + b" ", context=obj.context)   # replaces what was read
        db.update("counters", "hits", lambda old: str(int(old or b"0") + 1))

Layers (each module's docstring has its rules):
- option.py     Options: n_val, r w dw pr pw rw, timeout_s, flags; ONE/QUORUM/ALL/DEFAULT; the R+W>N check.
- result.py     KVObject and Sibling read from an answer (200, 300 multipart, 404 tombstone); resolvers.
- error.py      the exception family and the status -> exception table (QuorumError parses "W-value ...").
- operation.py  every operation once, as a sans-IO generator of HTTP calls (shared by both drivers).
- failover.py   node list with health memory, and the per-call retry plan (pure; time passed in).
- router.py     token awareness: /admin/ring -> a key's primaries (ring.hashing's hash).
- sync.py       `Client`: blocking, http.client, keep-alive pool per node, thread-safe.
- aio.py        `AsyncClient`: the same operations on trio, over h11 (one stream per call at a time).
"""

from dynamo.client.error import (BadRequest, ClientError, Conflict, InvalidArgument, NotFound, PreconditionFailed,
                                 QuorumError, ServerError, Siblings, Timeout, TooLarge, Unavailable)
from dynamo.client.option import ALL, DEFAULT, ONE, QUORUM, ConsistencyWarning, Options
from dynamo.client.result import KVObject, Replicas, Sibling, last_written
from dynamo.client.sync import Client

__all__ = ["ALL", "AsyncClient", "DEFAULT", "ONE", "QUORUM", "BadRequest", "Client", "ClientError", "Conflict",
           "ConsistencyWarning", "InvalidArgument", "KVObject", "NotFound", "Options", "PreconditionFailed",
           "QuorumError", "Replicas", "ServerError", "Sibling", "Siblings", "Timeout", "TooLarge", "Unavailable",
           "last_written"]


def __getattr__(name: str):
    # The trio flavour is imported on first use, so a blocking program does not load trio.
    if name == "AsyncClient":
        from dynamo.client.aio import AsyncClient
        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
