"""Five real node processes: reads and writes at several quorums, siblings, deletes, and bad input.

One cluster serves the whole module; each test uses its own keys so they do not interfere. The bad-input
tests end by reading back keys written before the abuse, at r=all: the cluster kept serving and lost
nothing.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import urllib.parse

import pytest
import trio

from dynamo.rpc import PeerPool, RpcError
from dynamo.rpc.frame import encode_frame, request as rpc_request


QUORUM_VALUES = {1: 1, 2: 2, 3: 3, "one": 1, "quorum": 2, "all": 3}


@pytest.mark.parametrize("w, r, rw", [(1, 3, 1), (2, 2, 2), (3, 1, 3), ("quorum", "quorum", "quorum"),
                                      ("all", "one", "all"), (1, 1, "one")])
def test_put_get_delete_at_several_quorums(cluster5, w, r, rw):
    key = f"k-{w}-{r}"
    writer, reader, deleter = cluster5.ids[0], cluster5.ids[2], cluster5.ids[4]
    value = f"value for w={w} r={r}".encode()
    put = cluster5.put(writer, "quorums", key, value, w=w)
    assert put.status == 204, put.text
    assert put.headers["x-dynamo-replicas"].startswith("primary=")
    if QUORUM_VALUES[w] + QUORUM_VALUES[r] > 3:  # read and write quorums overlap: the read must see it
        got = cluster5.get(reader, "quorums", key, r=r)
    else:  # they need not overlap (a one-replica read may land on a replica the write has not reached yet)
        got = cluster5.wait_for(lambda: (reply := cluster5.get(reader, "quorums", key, r=r)).status == 200
                                and reply, 10, "the write to reach the replica a one-replica read asks")
    assert (got.status, got.body, got.headers["content-type"]) == (200, value, "text/plain")
    assert got.vclock
    deleted = cluster5.delete(deleter, "quorums", key, got.vclock, rw=rw, w=rw)
    assert deleted.status == 204, deleted.text
    gone = cluster5.get(writer, "quorums", key, r="all")
    assert gone.status == 404 and gone.vclock, (gone.status, gone.headers)


def test_concurrent_writes_become_siblings_and_a_merged_write_resolves_them(cluster5):
    assert cluster5.put("node1", "siblings", "cart", b"apples", w="all").status == 204
    assert cluster5.put("node4", "siblings", "cart", b"pears", w="all").status == 204
    both = cluster5.get("node2", "siblings", "cart")
    assert both.status == 300, both.text
    assert both.headers["content-type"].startswith("multipart/mixed")
    assert sorted(both.values()) == [b"apples", b"pears"]
    plain = cluster5.request("node3", "GET", "/buckets/siblings/keys/cart", headers={"Accept": "text/plain"})
    assert plain.status == 300 and plain.text.startswith("Siblings:") and len(plain.text.split()) == 3
    merged = cluster5.put("node5", "siblings", "cart", b"apples+pears", both.vclock, w="all")
    assert merged.status == 204, merged.text
    for node in cluster5.ids:
        one = cluster5.get(node, "siblings", "cart")
        assert (one.status, one.body) == (200, b"apples+pears")


def test_riaks_own_python_client_stores_fetches_resolves_siblings_lists_and_deletes(cluster5):
    """The issue's "existing Riak HTTP clients must work": riak-python-client 2.7.0, unmodified, through
    its public API (riak_client_scenario.py, in its own process)."""
    port = {node: int(urllib.parse.urlsplit(cluster5.url(node)).port) for node in ("node1", "node3")}
    script = pathlib.Path(__file__).with_name("riak_client_scenario.py")
    done = subprocess.run([sys.executable, str(script), str(port["node1"]), str(port["node3"])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["ping"] == [True, True] and seen["allow_mult"] is True
    assert seen["plain"] == [True, "hello", "text/plain", {"colour": "blue"}, True]
    assert seen["json"] == {"n": [1, 2]}
    assert seen["siblings"] == ["from a", "from b"] and seen["conflict_raised"] is True
    assert seen["resolved"] == [1, "from b"]
    assert seen["keys"] == seen["streamed_keys"] == ["json", "plain", "two"] and seen["bucket_listed"] is True
    assert seen["bucket_streamed_once"] is True
    assert seen["deleted_exists"] is False
    assert "received 400" in seen["r_above_n_val"], seen["r_above_n_val"]  # the client shows no body


def test_a_delete_leaves_a_tombstone_that_a_later_write_replaces(cluster5):
    assert cluster5.put("node2", "tombs", "t", b"here", w="all").status == 204
    read = cluster5.get("node3", "tombs", "t")
    assert cluster5.delete("node4", "tombs", "t", read.vclock).status == 204
    gone = cluster5.get("node5", "tombs", "t", r="all")
    assert gone.status == 404 and gone.vclock
    assert cluster5.put("node1", "tombs", "t", b"back", gone.vclock, w="all").status == 204
    back = cluster5.get("node2", "tombs", "t", r="all")
    assert (back.status, back.body) == (200, b"back")


def test_post_makes_a_key_and_returnbody_answers_with_the_object(cluster5):
    made = cluster5.request("node1", "POST", "/buckets/posted/keys?returnbody=true", b"fresh",
                            {"Content-Type": "text/plain"})
    assert made.status == 201 and made.body == b"fresh", made.text
    location = made.headers["location"]
    assert location.startswith("/buckets/posted/keys/")
    assert cluster5.request("node5", "GET", location).body == b"fresh"


# --- bad input ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def witnesses(cluster5):
    """Keys written at w=all before any abuse; every bad-input test checks them after."""
    values = {f"w{i}": os.urandom(8).hex().encode() for i in range(6)}
    for i, (key, value) in enumerate(values.items()):
        assert cluster5.put(cluster5.ids[i % 5], "witness", key, value, w="all").status == 204
    return values


def assert_nothing_lost(cluster5, witnesses):
    for i, (key, value) in enumerate(witnesses.items()):
        got = cluster5.get(cluster5.ids[(i + 2) % 5], "witness", key, r="all")
        assert (got.status, got.body) == (200, value), (key, got.status, got.text)
    assert cluster5.put("node3", "witness", "after", b"still writable", w="all").status == 204


def one_line_error(reply, status, *words):
    assert reply.status == status, (reply.status, reply.text)
    assert reply.headers["content-type"].startswith("text/plain")
    assert reply.text.endswith("\n") and reply.text.count("\n") == 1 and "Traceback" not in reply.text
    for word in words:
        assert word in reply.text, reply.text


@pytest.mark.parametrize("query, words", [
    ("r=banana", ["r"]), ("w=-1", ["w"]), ("r=5", ["r", "n_val"]), ("n_val=9", ["n_val"]),
    ("pr=4", ["pr"]), ("timeout=soon", ["timeout"]), ("returnbody=maybe", ["returnbody"]),
])
def test_bad_parameters_are_400_with_one_line(cluster5, witnesses, query, words):
    method = "PUT" if query.startswith(("w=", "returnbody")) else "GET"
    reply = cluster5.request("node2", method, f"/buckets/witness/keys/w0?{query}", b"nope",
                             {"Content-Type": "text/plain"})
    one_line_error(reply, 400, *words)
    assert_nothing_lost(cluster5, witnesses)


def test_an_oversized_value_or_key_is_413_and_stores_nothing(cluster5, witnesses):
    just_over = b"x" * (1024 * 1024 + 1)  # the module's cluster sets value_bytes_max = 1 MiB
    one_line_error(cluster5.put("node1", "witness", "w1", just_over), 413, "too large")
    try:  # far over: the HTTP server refuses the body while reading it and may close before we finish
        reply = cluster5.put("node2", "witness", "w1", b"y" * (4 * 1024 * 1024))
        one_line_error(reply, 413)
    except ConnectionError:
        pass
    one_line_error(cluster5.put("node3", "witness", "k" * 2000, b"small"), 413, "key")
    assert_nothing_lost(cluster5, witnesses)


def test_a_malformed_vclock_is_400(cluster5, witnesses):
    for token in ("not base64 at all!", "AAAA", "a" * 400):
        reply = cluster5.put("node4", "witness", "w2", b"overwrite?", token)
        one_line_error(reply, 400, "X-Riak-Vclock")
    assert_nothing_lost(cluster5, witnesses)


def test_garbage_on_the_http_port_gets_a_400_and_the_node_serves_on(cluster5, witnesses):
    node = cluster5.spec.node("node5")
    for garbage in (b"\x00\xff\xfe garbage\r\n\r\n", b"GET / HTTP/9.9\r\nbad header\r\n\r\n",
                    b"PUT /buckets/witness/keys/w3 HTTP/1.1\r\nContent-Length: -5\r\n\r\n"):
        with socket.create_connection((node.host, node.http_port), timeout=10) as raw:
            raw.sendall(garbage)
            answer, closed = recv_all(raw)
        assert answer.startswith(b"HTTP/1.1 400") and closed, answer[:200]
        assert b"Traceback" not in answer
    assert_nothing_lost(cluster5, witnesses)


def recv_all(sock, limit_bytes=65536):
    """(everything received, whether the peer closed) — bounded by the socket timeout and a size limit."""
    chunks = []
    while sum(map(len, chunks)) < limit_bytes:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return b"".join(chunks), True
        except TimeoutError:
            return b"".join(chunks), False
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


def test_garbage_on_the_rpc_port_is_dropped_and_the_node_serves_on(cluster5, witnesses):
    node = cluster5.spec.node("node1")
    oversized_header = (2**31).to_bytes(4, "big")
    valid_frame_no_handshake = encode_frame(rpc_request(1, "kv.get", {"b": b"witness", "k": b"w0"}), 4096)
    for garbage in (b"\xff" * 64, oversized_header + b"x" * 16, valid_frame_no_handshake, b"GET / HTTP/1.1\r\n\r\n"):
        with socket.create_connection((node.host, node.rpc_port), timeout=10) as raw:
            raw.sendall(garbage)
            answer, closed = recv_all(raw)  # the server says hello (its handshake) at most, then closes
        assert closed and b"witness" not in answer and len(answer) < 4096
    assert_nothing_lost(cluster5, witnesses)


def test_a_peer_with_the_wrong_secret_is_refused(cluster5, witnesses):
    node = cluster5.spec.node("node2")

    async def call_with(secret):
        async with PeerPool("intruder", cluster5.spec.name, secret) as pool:
            pool.set_address("node2", node.host, node.rpc_port)
            try:
                return await pool.call("node2", "kv.get", [b"witness", b"w0"], timeout_s=10)
            except RpcError as error:
                return error

    def refusals():
        return node.log_path.read_text().count("bad proof from 'intruder'")

    before = refusals()
    outcome = trio.run(call_with, b"not-the-secret")
    assert isinstance(outcome, RpcError) and "wrong cluster secret" in str(outcome), outcome
    cluster5.wait_for(lambda: refusals() > before, 10, "the node to log the refused peer")
    assert_nothing_lost(cluster5, witnesses)


def test_bucket_props_refuse_bad_values(cluster5, witnesses):
    reply = cluster5.request("node1", "PUT", "/buckets/witness/props", b'{"props": {"n_val": "three"}}',
                             {"Content-Type": "application/json"})
    one_line_error(reply, 400, "n_val")
    reply = cluster5.request("node1", "PUT", "/buckets/witness/props", b"{not json",
                             {"Content-Type": "application/json"})
    one_line_error(reply, 400)
    assert_nothing_lost(cluster5, witnesses)
