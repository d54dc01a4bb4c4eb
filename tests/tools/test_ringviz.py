"""tools.ringviz: the claim's layout and a node's ring in the terminal, the HTML snapshot, bad arguments,
and reading a node (a stub HTTP server with canned JSON, with and without /admin/transfers)."""

from __future__ import annotations

import contextlib
import html.parser
import http.server
import json
import re
import socket
import threading
import urllib.parse

import pytest

from dynamo.ui import node_letter
from ring import Ring, partition_for_key, preference_list
from ring.spacing import violated_windows
from tools import ringviz


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = ringviz.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def map_rows(out: str) -> dict[int, str]:
    """Map rows by first partition: the letters without the group spaces."""
    rows = {}
    for line in out.splitlines():
        found = re.fullmatch(r" *(\d+)  (\S.*)", line)
        if found:
            rows[int(found[1])] = found[2].replace(" ", "")
    return rows


def test_claim_layout_in_the_terminal(capsys):
    code, out, _ = run(capsys, "--nodes", "5", "--partitions", "64")
    assert code == 0
    ring = Ring.initial([f"node{i}" for i in range(1, 6)], partitions=64)
    letters = {node: node_letter(i) for i, node in enumerate(ring.nodes)}
    assert "".join(map_rows(out).values()) == "".join(letters[owner] for owner in ring.owners)
    for node in ring.nodes:
        assert f"{letters[node]}       {node}  up" in out
    assert "balance: min 12, max 13 partitions per node (ideal 12..13): balanced" in out
    assert "spacing: 0 of 64 windows of 3 partitions repeat an owner (fewest possible 0)" in out
    assert "transfers: not known" in out


def test_violations_are_marked_under_their_partitions(capsys):
    code, out, _ = run(capsys, "--nodes", "3", "--partitions", "32", "--width", "16")
    assert code == 0
    ring = Ring.initial(["node1", "node2", "node3"], partitions=32)
    starts = violated_windows(ring.owners, 3)
    assert len(starts) == 2 and "spacing: 2 of 32 windows" in out and "(fewest possible 2)" in out
    lines = out.splitlines()
    for start in starts:
        row_start = start - start % 16
        row = next(i for i, line in enumerate(lines) if line.startswith(f"{row_start:>6}  "))
        marks = lines[row + 1]
        offset = 8 + (start - row_start) + (start - row_start) // 8  # the label, then a space per group
        assert marks[offset] == "^", (start, marks)


def test_key_lookup_and_html_snapshot(capsys, tmp_path):
    target = tmp_path / "ring.html"
    code, out, _ = run(capsys, "--nodes", "4", "--partitions", "16", "--n-val", "2", "--key", "photos/cat.jpg")
    assert code == 0
    ring = Ring.initial([f"node{i}" for i in range(1, 5)], partitions=16)
    partition = partition_for_key(b"photos", b"cat.jpg", 16)
    want = preference_list(ring, partition, 2)
    assert f"key photos/cat.jpg: partition {partition} of 16 (n_val 2)" in out
    for i, replica in enumerate(want.primaries, 1):
        assert f"primary {i}: {replica.node} (found at partition {replica.partition}, up)" in out
    assert f"requests go to: {', '.join(want.nodes)}" in out
    code, out, _ = run(capsys, "--nodes", "4", "--partitions", "16", "--key", "photos/cat.jpg", "--html", str(target))
    assert code == 0 and str(target) in out
    snapshot = embedded_snapshot(target.read_text())
    assert snapshot["ring"]["owners"] == list(ring.owners) and snapshot["lookup"]["partition"] == partition
    assert snapshot["source"] == "the claim for 4 nodes" and snapshot["taken"]


def embedded_snapshot(page: str):
    class Finder(html.parser.HTMLParser):
        found, inside = None, False

        def handle_starttag(self, tag, attrs):
            self.inside = tag == "script" and dict(attrs).get("id") == "snapshot"

        def handle_data(self, data):
            if self.inside:
                self.found = json.loads(data)
                self.inside = False
    finder = Finder()
    finder.feed(page)
    return finder.found


@pytest.mark.parametrize("argv, message", [
    (("--nodes", "3", "--key", "nokey"), "--key wants bucket/key"),
    (("--nodes", "0"), "--nodes must be in"),
    (("--nodes", "3", "--partitions", "100"), "partitions must be a power of two"),
    (("--nodes", "3", "--width", "0"), "--width must be at least 1"),
])
def test_bad_arguments_are_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == "" and message in err and err.count("\n") == 1


def test_an_unreachable_node_is_one_line(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = run(capsys, "--node", f"127.0.0.1:{port}")
    assert code == 1 and "cannot reach" in err and err.count("\n") == 1


# ---- against a node (a stub serving canned JSON) ---------------------------------------------------

RING = Ring.initial(["n1", "n2", "n3", "n4"], partitions=16)
ROUTES = {
    "/admin/ring": {"version": 7, "partitions": 16, "n_val": 3, "target_n": 3, "owners": list(RING.owners),
                    "nodes": {n: {"status": "down" if n == "n2" else "up", "http": f"127.0.0.1:80{i}",
                                  "rpc": f"127.0.0.1:70{i}", "partitions": len(RING.partitions_of(n))}
                              for i, n in enumerate(RING.nodes)}},
    "/admin/members": {"node": "n1", "members": [{"node": n, "membership": "leaving" if n == "n4" else "valid"}
                                                 for n in RING.nodes]},
}


@contextlib.contextmanager
def stub_node(routes):
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path, _, query = self.path.partition("?")
            seen.append(self.path)
            body = routes.get(path)
            if callable(body):
                body = body(dict(urllib.parse.parse_qsl(query)))
            data = json.dumps(body).encode() if body is not None else b"not found\n"
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_reading_a_node_without_transfers(capsys):
    lookup = {"bucket": "b", "key": "k", "partition": 5, "partitions": 16, "n_val": 3, "ring_version": 7,
              "primaries": [{"node": "n2", "partition": 5, "status": "down"}], "fallbacks":
              [{"node": "n3", "partition": 8, "fallback_for": "n2", "status": "up"}], "targets": ["n3"]}
    routes = {**ROUTES, "/admin/preflist": lambda query: {**lookup, "bucket": query["bucket"]}}
    with stub_node(routes) as (url, seen):
        code, out, err = run(capsys, "--node", url, "--key", "b/k")
    assert code == 0, err
    assert "/admin/preflist?bucket=b&key=k" in seen
    assert "ring v7 · 16 partitions" in out and "transfers: not known" in out
    down_letter = node_letter(list(RING.nodes).index("n2")).lower()
    rows = "".join(map_rows(out).values())
    assert rows.count(down_letter) == len(RING.partitions_of("n2"))  # the down node's partitions, lower case
    assert "leaving" in out and "127.0.0.1:801" in out
    assert "fallback: n3 for n2 (partition 8, up)" in out and "requests go to: n3" in out


@pytest.mark.parametrize("transfers, expected", [
    ([], "transfers: none under way"),
    ({"node": "n1", "next_version": 8, "moves": [{"partition": 3, "source": "n1", "target": "n2", "state": "active"},
                                                 {"partition": 9, "source": "n3", "target": "n2", "state": "done"}],
      "sent": {"keys": 1}}, "transfers (node: n1 · next_version: 8): 2 listed, 1 not done"),
    ({"state": "odd"}, '"state": "odd"'),
])
def test_reading_a_node_with_transfers(capsys, transfers, expected):
    with stub_node({**ROUTES, "/admin/transfers": transfers}) as (url, _):
        code, out, _ = run(capsys, "--node", url)
    assert code == 0 and expected in out
    if "listed" in expected:
        assert "partition  source  target  state" in out and "3  n1      n2      active" in out
        marks = out.splitlines()[next(i for i, line in enumerate(out.splitlines()) if line.startswith("     0  ")) + 1]
        assert marks.strip() == ">" and marks.index(">") == 8 + 3  # partition 3 moves; 9 is done
