"""The client library against real in-process nodes (trio, loopback), plus its pure parts.

The nodes run in the trio loop of the test; the blocking Client runs in a worker thread
(trio.to_thread.run_sync), as a user's program would run beside a cluster. The harness is the one the
node tests use (tests/dynamo/node/conftest.py), loaded by path.
"""

from __future__ import annotations

import importlib.util
import http.server
import pathlib
import socket
import sys
import threading
import warnings

import pytest
import trio

from dynamo.client import (ALL, ONE, QUORUM, BadRequest, Client, ConsistencyWarning, InvalidArgument, NotFound,
                           PreconditionFailed, QuorumError, Sibling, Siblings, Timeout, Unavailable, last_written)
from dynamo.client.error import error_from_answer
from dynamo.client.failover import Failover, Failure, Roster
from dynamo.client.operation import Operations
from dynamo.client.option import Options
from dynamo.client.router import RingView

_spec = importlib.util.spec_from_file_location(
    "client_node_harness", pathlib.Path(__file__).parent / "node" / "conftest.py")
harness = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(harness)


def urls(cluster, ids=None):
    return [f"http://127.0.0.1:{cluster.handles[n].config.http_port}" for n in (ids or cluster.ids)]


def with_cluster(size, body, tmp_path, timeout_s=30.0, **settings):
    """Start `size` nodes, then run body(cluster) -> async; body usually hops to a thread."""
    async def main():
        async with harness._local_cluster(size, tmp_path, **settings) as cluster:
            await body(cluster)
    harness.run(main, timeout_s)


def in_thread(fn, *args):
    return trio.to_thread.run_sync(fn, *args)


def free_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- against a cluster --------------------------------------------------------------------------------------


def test_round_trip_context_siblings_and_resolution(tmp_path):
    async def body(cluster):
        def scenario():
            with Client(urls(cluster), w=ALL) as db:
                assert db.ping()
                missing = db.get("b", "k")
                assert not missing.exists and not missing.tombstone and missing.context is None
                with pytest.raises(NotFound):
                    missing.value
                assert db.put("b", "k", b"v1", content_type="text/plain", meta={"Color": "red"}) is None
                obj = db.get("b", "k")
                assert obj.exists and obj.value == b"v1" and obj.content_type == "text/plain"
                assert obj.meta == {"Color": "red"} and obj.vtag and obj.last_modified is not None
                assert obj.replicas.primary == 3 and obj.context
                # Written with the context it read: replaces v1, no sibling.
                new = db.put("b", "k", "v2", context=obj.context, returnbody=True)
                assert new.value == b"v2" and new.content_type.startswith("text/plain") and not new.has_siblings
                # Two writes from the same stale context: concurrent, kept as siblings.
                db.put("b", "k", b"left", context=obj)
                both = db.get("b", "k")
                assert sorted(s.value for s in both.live) == [b"left", b"v2"]
                with pytest.raises(Siblings) as caught:
                    both.value
                assert len(caught.value.siblings) == 2
                picked = db.get("b", "k", resolver=lambda siblings: b"+".join(sorted(s.value for s in siblings)))
                assert picked.value == b"left+v2" and len(picked.unresolved) == 2
                assert db.get("b", "k", resolver=last_written).value in (b"left", b"v2")
                db.put("b", "k", picked.value, context=picked.context)
                assert db.get("b", "k").value == b"left+v2"
                # A key with a slash and non-ASCII text, and bytes names.
                db.put("b", "a/ü k", b"odd")
                assert db.get(b"b", "a/ü k".encode()).value == b"odd"
                key = db.put_new("b", b"fresh", content_type="application/x-test")
                made = db.get("b", key)
                assert made.value == b"fresh" and made.content_type == "application/x-test"
                assert db.keys("b") == sorted(["k", "a/ü k", key]) and db.buckets() == ["b"]
                # Keep-alive: one idle connection per node serves consecutive calls.
                assert len(db._pool._idle[db.roster.nodes[0].url]) == 1
        await in_thread(scenario)
    with_cluster(3, body, tmp_path)


def test_client_resolver_and_update_retries_after_a_race(tmp_path):
    async def body(cluster):
        def scenario():
            with Client(urls(cluster), resolver=last_written) as db, Client(urls(cluster)) as other:
                assert db.update("c", "n", lambda old: str(int(old or b"0") + 1)).value == b"1"
                assert db.update("c", "n", lambda old: str(int(old) + 1)).value == b"2"
                calls = []

                def racing(old):
                    calls.append(old)
                    if len(calls) == 1:  # someone else writes between our read and our write
                        current = other.get("c", "n")
                        other.put("c", "n", b"10", context=current.context)
                    return str(int(old) + 1)
                assert db.update("c", "n", racing).value == b"11"
                assert calls == [b"2", b"10"]
                with pytest.raises(PreconditionFailed):
                    db.update("c", "n", lambda old: other.put("c", "n", b"x") or b"y", retries=0)
                # With siblings the client's resolver picks, and the write covers them all.
                other.put("c", "n", b"sib")
                assert len(other.get("c", "n").live) >= 2
                merged = db.update("c", "n", lambda old: old + b"!")
                assert not merged.has_siblings and merged.value.endswith(b"!")
                assert db.update("c", "n", lambda old: None).value == merged.value  # None: no write
        await in_thread(scenario)
    with_cluster(3, body, tmp_path)


def test_tombstones(tmp_path):
    async def body(cluster):
        def scenario():
            with Client(urls(cluster), w=ALL, r=ALL) as db:
                db.put("t", "k", b"v1")
                old = db.get("t", "k")
                db.delete("t", "k", context=old.context)
                gone = db.get("t", "k")
                assert not gone.exists and gone.tombstone and gone.context
                with pytest.raises(NotFound, match="deleted"):
                    gone.value
                # A write over the tombstone's context brings the key back without a sibling.
                db.put("t", "k", b"v2", context=gone.context)
                back = db.get("t", "k")
                assert back.value == b"v2" and len(back.siblings) == 1
                # A delete from a stale context is concurrent with v3: a tombstone sibling, and the live
                # value still wins in .value.
                db.put("t", "k", b"v3", context=back.context)
                db.delete("t", "k", context=back.context)
                mixed = db.get("t", "k")
                assert [s.deleted for s in sorted(mixed.siblings, key=lambda s: s.deleted)] == [False, True]
                assert mixed.exists and mixed.value == b"v3"
        await in_thread(scenario)
    with_cluster(3, body, tmp_path)


def test_quorum_errors_failover_and_stale_connections(tmp_path):
    async def body(cluster):
        victim = "n3"
        live = [u for n, u in zip(cluster.ids, urls(cluster)) if n != victim]
        dead_url = urls(cluster, [victim])[0]
        db = Client([dead_url] + live)
        await in_thread(lambda: db.put("q", "k", b"v", w=ALL))
        await cluster.stop(victim)
        await cluster.wait_down(victim)

        def scenario():
            # The first node refuses: the client moves on, and remembers to skip it.
            assert db.get("q", "k", r=2).value == b"v"
            assert db.roster.is_avoided(db.roster.nodes[0], db._clock())
            assert db.roster.order(db._clock())[0].url == live[0]
            with pytest.raises(QuorumError) as caught:
                db.put("q", "k", b"w", pw=3)
            error = caught.value
            assert error.status == 503 and error.quorum == "PW" and error.needed == 3 and error.got in (1, 2)
            assert str(error).startswith("PW-value unsatisfied: ")
            with pytest.raises(QuorumError, match="PR-value unsatisfied") as read_error:
                db.get("q", "k", pr=3)
            assert read_error.value.quorum == "PR"
            assert db.put("q", "k", b"w2", w=2) is None  # a sloppy quorum still takes the write
        await in_thread(scenario)
        db.close()
    with_cluster(3, body, tmp_path, timeout_s=40)


def test_a_connection_the_server_closed_is_not_reused(tmp_path):
    async def body(cluster):
        def scenario():
            with Client(urls(cluster, ["n1"])) as db:
                assert db.ping()
                node = db.roster.nodes[0]
                (conn,) = db._pool._idle[node.url]
                # Stand in for a server that closed the idle keep-alive: the socket now reads EOF.
                ours, theirs = socket.socketpair()
                conn.sock.close()
                conn.sock = ours
                theirs.close()
                db.put("s", "k", b"v")  # a write must not be lost to the dead connection
                assert db.get("s", "k").value == b"v"
                assert db._pool._idle[node.url][0] is not conn
                assert not db.roster.is_avoided(node, db._clock())
        await in_thread(scenario)
    with_cluster(3, body, tmp_path)


def test_all_nodes_down_and_server_side_bad_request(tmp_path):
    async def body(cluster):
        def scenario():
            nowhere = Client([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"])
            with pytest.raises(Unavailable, match="no node could be reached") as caught:
                nowhere.get("b", "k")
            assert not isinstance(caught.value, QuorumError) and caught.value.status is None
            assert nowhere.ping() is False
            with Client(urls(cluster)) as db:
                with pytest.raises(BadRequest, match="n_val") as bad:
                    db.get("b", "k", n_val=5)  # more than the bucket keeps: the server's 400
                assert bad.value.status == 400
                db.set_bucket_props("lww", allow_mult=False, last_write_wins=True)
                props = db.get_bucket_props("lww")
                assert props["last_write_wins"] is True and props["allow_mult"] is False
                assert db.stats()["node_puts"] >= 0
        await in_thread(scenario)
    with_cluster(2, body, tmp_path)


def test_token_aware_routing_prefers_a_primary(tmp_path):
    async def body(cluster):
        def scenario():
            with Client(urls(cluster), token_aware=True) as db:
                db.put("tok", "key1", b"v")
                view = db.router.view
                assert view is not None and view.partitions == 64
                return db.router.preferred((b"tok", b"key1", None))
        preferred = await in_thread(scenario)
        primaries = cluster.primaries("tok", "key1")
        assert preferred == [f"127.0.0.1:{cluster.handles[n].config.http_port}" for n in primaries]
    with_cluster(4, body, tmp_path)


def test_async_client_shares_the_operations(tmp_path):
    async def body(cluster):
        victim = "n3"
        await cluster.stop(victim)
        await cluster.wait_down(victim)
        from dynamo.client import AsyncClient
        async with AsyncClient(urls(cluster, [victim]) + urls(cluster, ["n1", "n2"]), w=2,
                               token_aware=True) as db:
            assert await db.ping()
            assert db.roster.is_avoided(db.roster.nodes[0], trio.current_time())  # refused, skipped
            await db.put("a", "k", b"v1", meta={"Who": "ada"})
            first = await db.get("a", "k")
            assert first.value == b"v1" and first.meta == {"Who": "ada"}
            await db.put("a", "k", b"v2", context=first.context)
            await db.put("a", "k", b"v3", context=first.context)
            both = await db.get("a", "k")
            assert sorted(s.value for s in both.live) == [b"v2", b"v3"]
            merged = await db.update("a", "k", lambda old: old + b"+", resolver=lambda s: max(x.value for x in s))
            assert merged.value == b"v3+" and not merged.has_siblings
            with pytest.raises(QuorumError, match="PW-value"):
                await db.put("a", "k", b"x", pw=3)
            await db.delete("a", "k", context=merged.context)
            assert (await db.get("a", "k")).tombstone
            key = await db.put_new("a", "made")
            assert (await db.get("a", key)).text == "made"
            assert await db.keys("a") == [key] and await db.buckets() == ["a"]  # "k" was deleted
            idle = db._idle[urls(cluster, ["n1"])[0]]
            assert len(idle) == 1  # one keep-alive stream served the sequence
    with_cluster(3, body, tmp_path)


# ---- caller mistakes (no cluster needed: refused before sending) ---------------------------------------------


@pytest.mark.parametrize("call", [
    lambda db: db.get("", "k"),
    lambda db: db.get("b", 5),
    lambda db: db.get("b", "k", r="most"),
    lambda db: db.get("b", "k", r=True),
    lambda db: db.get("b", "k", r=0),
    lambda db: db.get("b", "k", r=4),  # the client's n_val is 3
    lambda db: db.get("b", "k", timeout_s=-1),
    lambda db: db.get("b", "k", quorum=2),
    lambda db: db.get("b", "k", notfound_ok="yes"),
    lambda db: db.put("b", "k", 12),
    lambda db: db.put("b", None, b"v"),
    lambda db: db.put("b", "k", b"v", meta={"bad name": "x"}),
    lambda db: db.put("b", "k", b"v", meta={"ok": "line\nbreak"}),
    lambda db: db.put("b", "k", b"v", content_type="text/plain\r\nX: y"),
    lambda db: db.put("b", "k", b"v", context=123),
    lambda db: db.update("b", "k", "not callable"),
    lambda db: db.update("b", "k", lambda v: v, retries=-1),
    lambda db: db.set_bucket_props("b", {}),
])
def test_bad_input_is_a_value_error_before_anything_is_sent(call):
    db = Client([f"http://127.0.0.1:{free_port()}"], n_val=3)
    with pytest.raises(InvalidArgument) as caught:
        call(db)
    assert isinstance(caught.value, ValueError) and caught.value.message
    assert not db.roster.is_avoided(db.roster.nodes[0], db._clock())  # nothing was tried


@pytest.mark.parametrize("nodes", [[], ["ftp://h:1"], ["http://h:notaport"], ["http://h/path"],
                                   ["http://h:1", "h:1"]])
def test_bad_node_lists(nodes):
    with pytest.raises(InvalidArgument):
        Client(nodes)


def test_read_your_writes_check():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Client(["h:1"], read_your_writes=True)  # quorum + quorum > n
        Client(["h:1"], read_your_writes=True, r=ONE, w=ALL)
    with pytest.warns(ConsistencyWarning, match=r"1 \+ 1 <= 3"):
        Client(["h:1"], read_your_writes=True, r=ONE, w=ONE)
    with pytest.raises(InvalidArgument, match="read-your-writes"):
        Client(["h:1"], read_your_writes=True, strict=True, w=1, r=2)
    strict = Client(["h:1"], read_your_writes=True, strict=True, n_val=5, r=QUORUM)
    with pytest.raises(InvalidArgument):
        strict.get("b", "k", r=2)  # 2 + quorum(5)=3 <= 5
    Client(["h:1"], r=ONE, w=ONE)  # no wish, no check


# ---- pure parts ---------------------------------------------------------------------------------------------


def test_error_mapping_parses_quorum_messages():
    error = error_from_answer(503, b"W-value unsatisfied: 1/2\n", "http://n1")
    assert isinstance(error, QuorumError) and (error.quorum, error.got, error.needed) == ("W", 1, 2)
    assert error.message == "W-value unsatisfied: 1/2" and error.node == "http://n1"
    overloaded = error_from_answer(503, b"overloaded, retry later\n", None)
    assert type(overloaded) is Unavailable
    assert isinstance(error_from_answer(504, b"timeout: ...", None), Timeout)
    assert isinstance(error_from_answer(404, b"not found", None), NotFound)
    assert type(error_from_answer(500, b"", None)).__name__ == "ServerError"


def test_failover_plan_rules():
    roster = Roster(["http://a:1", "http://b:1", "http://c:1"], down_s=5.0)
    a, b, c = roster.nodes
    plan = Failover(roster, safe=False, now_s=0.0, deadline_s=10.0, preferred=["c:1"])
    assert plan.next_step(0.0) == c
    plan.failed(c, Failure("refused", sent=False), 0.0)  # never sent: the write may go elsewhere
    assert plan.next_step(0.0) == a
    plan.failed(a, Failure("reset", sent=True), 0.1)  # may have landed: a write stops here
    assert plan.next_step(0.1) is None
    with pytest.raises(Unavailable, match="may or may not have been applied"):
        plan.outcome()
    assert roster.order(1.0) == [b, c, a]  # the ones that failed go last, soonest back first
    assert roster.order(6.0) == [a, b, c]  # and come back after down_s
    # 503 with Retry-After: move on; when all are busy, wait for the first to free up, then retry it.
    busy = Failover(Roster(["http://a:1", "http://b:1"]), safe=True, now_s=0.0, deadline_s=10.0)
    first = busy.next_step(0.0)
    busy.answered(first, 503, "2", "busy-a", 0.0)
    second = busy.next_step(0.0)
    busy.answered(second, 503, "1", "busy-b", 0.0)
    assert busy.next_step(0.5) == pytest.approx(0.5)
    assert busy.next_step(1.0) == second
    busy.answered(second, 200, None, "ok", 1.0)
    assert busy.next_step(1.0) is None and busy.outcome() == "ok"
    # A quorum 503 (no Retry-After) is final at once.
    final = Failover(Roster(["http://a:1", "http://b:1"]), safe=True, now_s=0.0, deadline_s=10.0)
    final.answered(final.next_step(0.0), 503, None, "quorum", 0.0)
    assert final.next_step(0.0) is None and final.outcome() == "quorum"


class _BusyOnce(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).hits += 1
        status, body = (503, b"overloaded, retry later\n") if type(self).hits == 1 else (200, b"OK")
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_retry_after_is_respected():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BusyOnce)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        clock = [0.0]
        slept = []

        def sleep(seconds):
            slept.append(seconds)
            clock[0] += seconds
        with Client([f"http://127.0.0.1:{server.server_address[1]}"], clock=lambda: clock[0], sleep=sleep) as db:
            assert db.ping() is True
        assert slept == [1.0] and _BusyOnce.hits == 2
    finally:
        server.shutdown()
        server.server_close()


def test_ring_view_walks_distinct_owners():
    view = RingView.from_json({"version": 2, "partitions": 8, "n_val": 3,
                               "owners": ["a", "a", "b", "a", "c", "d", "b", "c"],
                               "nodes": {"a": {"http": "h:1", "status": "up"}, "b": {"http": "h:2", "status": "down"},
                                         "c": {"http": "h:3", "status": "up"}, "d": {"http": "h:4"}}})
    from ring.hashing import partition_for_key
    key = next(k for k in (f"k{i}".encode() for i in range(1000)) if partition_for_key(b"b", k, 8) == 0)
    assert view.primaries(b"b", key) == ["h:1", "h:3", "h:2"]  # a, b, c walked; b is down so last
    assert view.primaries(b"b", key, 1) == ["h:1"]
    with pytest.raises(ValueError):
        RingView.from_json({"partitions": 8, "owners": ["a"], "nodes": {}})


def test_operation_generator_shares_the_protocol():
    """Any driver can run an operation: here a list of canned answers."""
    from dynamo.client.operation import Answer
    from dynamo.http.message import Headers
    ops = Operations(Options(r=2))
    gen = ops.get("b", "k", notfound_ok=False)
    call = next(gen)
    assert call.method == "GET" and call.target == "/buckets/b/keys/k?r=2&notfound_ok=false" and call.safe
    with pytest.raises(StopIteration) as done:
        gen.send(Answer(200, Headers([("Content-Type", "text/plain"), ("X-Riak-Vclock", "abc")]), b"v", "n"))
    assert done.value.value.value == b"v" and done.value.value.context == "abc"
    put = ops.put("b", "k", b"v", w=QUORUM, timeout_s=0.25)
    call = next(put)
    assert call.method == "PUT" and not call.safe and call.target.endswith("?w=quorum&timeout=250")
    resolved = Sibling(b"x")
    assert resolved.text == "x"
