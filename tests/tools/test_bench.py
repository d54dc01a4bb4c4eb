"""tools/bench: the pure parts (wrk output parsing, the Lua script, load sizing, the table, endpoint and ring
reading) and, when wrk is installed, short wrk runs against the stand-in store (tools/bench/stub.py).

The runs check what was sent and counted (requests > 0, statuses adding up, keys named as designed,
every target reached), never how fast: benchmarks are not tests.
"""

import argparse
import base64
import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from hypothesis import given, strategies as st

from tools.bench import __main__ as bench_main
from tools.bench.cluster import ClusterStartError, endpoint_urls, ring_node_count, start_cluster
from tools.bench.cpu import cpu_between_s, cpu_s, python_loop_us, tree_pids
from tools.bench.etcd import etcd_version, member_command, start_etcd
from tools.bench.preload import bench_value, preload
from tools.bench.report import COLUMNS, format_table
from tools.bench.result import CellResult, WrkOutputError, WrkResult, parse_wrk_output
from tools.bench.script import BenchSpecError, CellSpec, build_script, load_key_prefix, lua_string
from tools.bench.stub import BackgroundServer
from tools.bench.wrk import find_wrk, plan_load, run_cell

WRK_REPORT = """\
Running 10s test @ http://127.0.0.1:8001/
  3 threads and 15 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.61ms    1.02ms  24.08ms   80.17%
    Req/Sec     1.91k   143.27     2.20k    71.00%
  57060 requests in 10.01s, 5.12MB read
  Non-2xx or 3xx responses: 12
Requests/sec:   5701.03
Transfer/sec:    523.11KB
"""

BENCH_LINES = """\
@bench requests 57060
@bench duration_us 10008765
@bench latency_us 50 2602
@bench latency_us 99 4530
@bench latency_us 99.9 17166
@bench latency_us max 24080
@bench socket_errors connect 0
@bench socket_errors read 2
@bench socket_errors write 0
@bench socket_errors timeout 1
@bench status 204 57048
@bench status 503 12
@bench end
"""

CLUSTER_PRINTOUT = """\
cluster 'dynamo': 3 nodes, 256 partitions, data in /tmp/x/data
  node1    http://127.0.0.1:24648   rpc 127.0.0.1:52888    pid 18187    log /tmp/x/data/node1/node.log
  node2    http://127.0.0.1:24649   rpc 127.0.0.1:52889    pid 18188    log /tmp/x/data/node2/node.log
  node3    http://127.0.0.1:24650   rpc 127.0.0.1:52890    pid 18189    log /tmp/x/data/node3/node.log
ring page:  http://127.0.0.1:24648/ui/ring   (JSON: http://127.0.0.1:24648/admin/ring)
"""

TARGETS = (("127.0.0.1", 8001), ("127.0.0.1", 8002), ("127.0.0.1", 8003))
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None,
                               reason="wrk is not installed (apt-get install wrk); the runs need it")
needs_etcd = pytest.mark.skipif(shutil.which("etcd") is None or shutil.which("wrk") is None,
                                reason="etcd or wrk is not installed (apt-get install etcd-server wrk)")


def wrk_result(statuses, socket_errors=(("connect", 0), ("read", 0), ("write", 0), ("timeout", 0)),
               duration_s=2.0):
    return WrkResult(requests=sum(count for _, count in statuses), duration_s=duration_s,
                     latency_us=((50.0, 1500), (99.0, 9000), (99.9, 20000)), latency_max_us=30000,
                     socket_errors=tuple(socket_errors), statuses=tuple(statuses))


# --- parsing wrk's output -------------------------------------------------------------------------------

def test_parse_reads_the_bench_lines_after_wrks_report():
    result = parse_wrk_output(WRK_REPORT + BENCH_LINES)
    assert result.requests == 57060
    assert result.duration_s == pytest.approx(10.008765)
    assert result.latency_us == ((50.0, 2602), (99.0, 4530), (99.9, 17166))
    assert result.percentile_us(99.9) == 17166
    assert result.latency_max_us == 24080
    assert dict(result.socket_errors) == {"connect": 0, "read": 2, "write": 0, "timeout": 1}
    assert result.statuses == ((204, 57048), (503, 12))


def test_parse_refuses_wrks_report_alone():
    with pytest.raises(WrkOutputError, match="requests") as caught:
        parse_wrk_output(WRK_REPORT)
    assert "Requests/sec" in str(caught.value)  # quotes what came out instead


@pytest.mark.parametrize("bad", ["@bench requests many", "@bench latency_us 50", "@bench frobs 1"])
def test_parse_refuses_malformed_lines(bad):
    with pytest.raises(WrkOutputError):
        parse_wrk_output(BENCH_LINES.replace("@bench requests 57060", bad))


def test_parse_refuses_output_cut_before_the_end_line():
    with pytest.raises(WrkOutputError, match="end"):
        parse_wrk_output(BENCH_LINES.replace("@bench end\n", ""))


@given(statuses=st.dictionaries(st.integers(100, 599), st.integers(0, 10**9), max_size=6),
       numbers=st.lists(st.integers(0, 10**12), min_size=9, max_size=9), seed=st.integers(0, 1000))
def test_parse_reads_any_numbers_in_any_line_order(statuses, numbers, seed):
    lines = [f"@bench requests {numbers[0]}", f"@bench duration_us {numbers[1]}",
             f"@bench latency_us 50 {numbers[2]}", f"@bench latency_us 99 {numbers[3]}",
             f"@bench latency_us 99.9 {numbers[4]}", f"@bench latency_us max {numbers[5]}",
             f"@bench socket_errors connect {numbers[6]}", f"@bench socket_errors read {numbers[7]}",
             "@bench socket_errors write 0", f"@bench socket_errors timeout {numbers[8]}",
             *(f"@bench status {status} {count}" for status, count in statuses.items()), "@bench end"]
    random.Random(seed).shuffle(lines)
    result = parse_wrk_output("noise\n" + "\n".join(lines) + "\nmore noise\n")
    assert (result.requests, result.duration_s) == (numbers[0], numbers[1] / 1e6)
    assert [value for _, value in result.latency_us] == numbers[2:5]
    assert dict(result.socket_errors) == {"connect": numbers[6], "read": numbers[7], "write": 0,
                                          "timeout": numbers[8]}
    assert dict(result.statuses) == statuses


# --- the Lua script --------------------------------------------------------------------------------------

def test_put_script_writes_fresh_keys_with_w():
    script = build_script(CellSpec("put", "quorum", TARGETS, run_id="run1", value_size_bytes=100))
    assert 'local query = "?w=quorum"' in script
    assert 'local key_path_prefix = "/buckets/bench/keys/run1-quorum-"' in script
    assert "local value_size_bytes = 100" in script
    for port in ("8001", "8002", "8003"):
        assert f'{{ "127.0.0.1", "{port}" }}' in script
    for function in ("setup(thread)", "init(args)", "request()", "response(status, headers, body)",
                     "done(summary, latency, requests)"):
        assert f"function {function}" in script
    assert 'wrk.format("PUT"' in script


def test_get_script_reads_the_preloaded_keys_with_r():
    spec = CellSpec("get", "all", TARGETS[:1], run_id="run1", keyspace=500)
    script = build_script(spec)
    assert 'local query = "?r=all"' in script
    assert f'local key_path_prefix = "/buckets/bench/keys/{load_key_prefix("run1")}"' in script
    assert "local keyspace = 500" in script
    assert spec.query == "?r=all"


def test_scripts_differ_only_where_the_cells_differ():
    one = build_script(CellSpec("put", "one", TARGETS, run_id="r"))
    all_ = build_script(CellSpec("put", "all", TARGETS, run_id="r"))
    changed = [(a, b) for a, b in zip(one.splitlines(), all_.splitlines()) if a != b]
    assert len(changed) == 3  # the comment, the key prefix, the query


@pytest.mark.parametrize("text, literal", [("plain", '"plain"'), ('say "hi"', r'"say \"hi\""'),
                                           ("back\\slash", r'"back\\slash"'), ("line\nbreak", r'"line\10break"')])
def test_lua_string_escapes(text, literal):
    assert lua_string(text) == literal


@pytest.mark.parametrize("change", [{"operation": "delete"}, {"consistency": "two"}, {"targets": ()},
                                    {"bucket": "a b"}, {"run_id": "x/y"}, {"keyspace": 0},
                                    {"targets": (("host", 0),)}, {"value_size_bytes": -1}])
def test_cell_spec_refuses_bad_settings(change):
    settings = dict(operation="put", consistency="one", targets=TARGETS, run_id="r")
    settings.update(change)
    with pytest.raises(BenchSpecError):
        CellSpec(**settings)


# --- load sizing -----------------------------------------------------------------------------------------

@given(connections=st.integers(1, 512), threads=st.integers(1, 16), targets=st.integers(1, 8))
def test_plan_aims_whole_threads_at_targets(connections, threads, targets):
    plan = plan_load(connections, threads, targets)
    assert plan.threads % targets == 0 and plan.threads >= max(threads, targets)
    assert plan.threads - targets < max(threads, targets)  # rounded up by less than one round
    assert plan.connections % plan.threads == 0 and plan.connections >= plan.threads
    assert abs(plan.connections - connections) <= max(plan.threads // 2, plan.threads - connections)


def test_plan_keeps_the_brief_numbers_on_one_target():
    assert (plan_load(16, 2, 1).threads, plan_load(16, 2, 1).connections) == (2, 16)
    assert (plan_load(16, 2, 3).threads, plan_load(16, 2, 3).connections) == (3, 15)


# --- the table -------------------------------------------------------------------------------------------

def test_table_is_markdown_with_successes_per_second_and_errors_by_kind():
    rows = [CellResult("put", "one", wrk_result([(204, 2000), (503, 3)],
                                                [("connect", 0), ("read", 0), ("write", 0), ("timeout", 1)])),
            CellResult("get", "all", wrk_result([(200, 1000), (300, 10), (404, 5)]))]
    table = format_table(rows).splitlines()
    assert len(table) == 4
    assert all(line.startswith("| ") and line.endswith(" |") for line in table)
    assert len({line.count("|") for line in table}) == 1 == len({len(line) for line in table})
    assert [cell.strip() for cell in table[0].strip("|").split("|")] == list(COLUMNS)
    assert set(table[1]) <= set("|-: ")
    put = [cell.strip() for cell in table[2].strip("|").split("|")]
    get = [cell.strip() for cell in table[3].strip("|").split("|")]
    assert put == ["put", "one", "1000", "1.50", "9.00", "20.00", "2003", "n/a", "503: 3, timeout: 1"]
    assert get[2] == "505" and get[-1] == "404: 5"  # 300 is a successful read, 404 is not


def test_table_shows_node_cpu_per_request_when_measured():
    row = CellResult("get", "quorum", wrk_result([(200, 1000)]), node_cpu_s=0.5)
    cells = [cell.strip() for cell in format_table([row]).splitlines()[2].strip("|").split("|")]
    assert cells[COLUMNS.index("CPU ms/req")] == "0.500"  # 0.5 s over 1000 requests


def test_cpu_of_a_process_tree_counts_its_children():
    child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                              "while time.process_time() < end: pass\ntime.sleep(30)"])
    try:
        pids = tree_pids(os.getpid())
        assert os.getpid() in pids and child.pid in pids
        assert child.pid not in tree_pids(child.pid + 10_000_000)  # not a process: just itself
        before = cpu_s(pids)
        deadline = time.monotonic() + 10
        while cpu_between_s(before, cpu_s(pids)) < 0.2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cpu_between_s(before, cpu_s(pids)) >= 0.2  # the child's busy loop is counted
        assert cpu_between_s({}, {child.pid: 1.5}) == 1.5  # a process new since `before` counts from zero
    finally:
        child.kill()
        child.wait()


def test_table_says_none_when_nothing_failed():
    table = format_table([CellResult("put", "all", wrk_result([(204, 10)]))])
    assert table.splitlines()[2].rstrip(" |").endswith("none")


# --- cluster endpoints and readiness --------------------------------------------------------------------

def test_endpoints_are_read_from_the_cluster_printout_in_order():
    assert endpoint_urls(CLUSTER_PRINTOUT) == ["http://127.0.0.1:24648", "http://127.0.0.1:24649",
                                               "http://127.0.0.1:24650"]
    assert endpoint_urls("no endpoints yet") == []


@pytest.mark.parametrize("ring, count", [
    ({"nodes": {"n1": {}, "n2": {}, "n3": {}}, "owners": ["n1", "n2", "n3", "n1"]}, 3),
    ({"nodes": {"n1": {}, "n2": {}, "n3": {}}, "owners": ["n1", "n1"]}, 1),  # members not yet owners
    ({"nodes": [{"id": "n1"}, {"id": "n2"}]}, 2),
    ({"partitions": {"0": "n1", "1": "n2", "2": "n3"}}, 3),
    ({"partitions": 256, "version": 4}, None),
    ([], None)])
def test_ring_node_count(ring, count):
    assert ring_node_count(ring) == count


def test_start_cluster_reports_a_command_that_exits():
    command = [sys.executable, "-c", "print('no such subcommand: cluster'); raise SystemExit(3)"]
    with pytest.raises(ClusterStartError, match="no such subcommand"):
        start_cluster(3, command, ready_timeout_s=20, rng=random.Random(1))


def test_start_cluster_waits_for_every_node_and_stops_it():
    cluster = start_cluster(3, [sys.executable, "-m", "tools.bench.stub"], ready_timeout_s=30)
    try:
        assert len(cluster.urls) == 3
        for url in cluster.urls:
            with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
                assert response.read() == b"OK"
    finally:
        cluster.stop(grace_s=10)
    assert cluster.process.poll() is not None
    assert not cluster.root.exists()


def test_main_wants_exactly_one_kind_of_target(capsys):
    for argv in ([], ["--url", "http://127.0.0.1:1", "--start-cluster"]):
        with pytest.raises(SystemExit) as caught:
            bench_main.main(argv)
        assert caught.value.code == 2
    with pytest.raises(SystemExit):
        bench_main.main(["--url", "http://127.0.0.1:1", "--consistency", "one,two"])
    assert "one,two" in capsys.readouterr().err


# --- real wrk runs against the stand-in store -----------------------------------------------------------

@needs_wrk
def test_wrk_put_run_counts_requests_and_spreads_over_targets():
    with BackgroundServer(nodes=3) as server:
        targets = tuple(("127.0.0.1", int(url.rsplit(":", 1)[1])) for url in server.urls)
        plan = plan_load(6, 2, len(targets))
        spec = CellSpec("put", "quorum", targets, run_id="t1", value_size_bytes=100)
        result = run_cell(find_wrk(install=False), spec, plan, duration_s=1)
        stored = dict(server.store.objects)
        hits = list(server.store.hits)
    assert result.requests > 0
    assert result.loader_cpu_s > 0  # measured around wrk's run
    assert sum(count for _, count in result.statuses) == result.requests
    assert dict(result.statuses).keys() == {204}
    assert all(count > 0 for count in hits)  # every node got connections
    assert {value for _, value in stored.values()} == {bench_value(100)}  # Lua builds what Python does
    threads_seen = set()
    for bucket, key in stored:
        run_id, consistency, thread, counter = key.split("-")
        assert (bucket, run_id, consistency) == ("bench", "t1", "quorum")
        threads_seen.add(int(thread))
        assert int(counter) >= 1
    assert threads_seen == set(range(plan.threads))
    assert len(stored) >= result.requests  # distinct keys: no put overwrote another


@needs_wrk
def test_wrk_get_run_reads_only_preloaded_keys():
    with BackgroundServer(nodes=2) as server:
        loaded = preload(server.urls, "t2", keyspace=50, value_size_bytes=10, connections=4)
        assert (loaded.written, loaded.failures) == (50, ())
        targets = tuple(("127.0.0.1", int(url.rsplit(":", 1)[1])) for url in server.urls)
        spec = CellSpec("get", "one", targets, run_id="t2", keyspace=50)
        result = run_cell(find_wrk(install=False), spec, plan_load(4, 2, len(targets)), duration_s=1)
        keys = {key for _, key in server.store.objects}
    assert keys == {f"t2-load-{index}" for index in range(50)}
    assert result.requests > 0
    assert result.statuses == ((200, result.requests),)  # no 404: gets hit exactly the preloaded keys
    assert CellResult("get", "one", result).errors == ()


def test_the_heading_reads_the_machine_speed_before_and_after():
    args = argparse.Namespace(value_size=100, duration=10, preload_consistency="all")
    plan = plan_load(15, 3, 3)
    text = bench_main.heading(args, "wrk 4.1", plan, ["http://a:1"], None, "b1", [], (14.2, 25.7))
    assert "- machine speed: `sum(range(1000))` took 14.2 us before the cells and 25.7 us after" in text
    assert "machine speed" not in bench_main.heading(args, "wrk 4.1", plan, ["http://a:1"], None, "b1", [])
    assert 0 < python_loop_us(repeat=2, number=50) < 1e6


# --- the etcd reference -----------------------------------------------------------------------------------

def test_etcd_cells_are_quorum_through_the_v3_gateway():
    for change in ({"consistency": "one"}, {"api": "mongo"}):
        with pytest.raises(BenchSpecError):
            CellSpec(**{"operation": "put", "consistency": "quorum", "targets": TARGETS, "run_id": "r1",
                        "api": "etcd", **change})
    put = build_script(CellSpec("put", "quorum", TARGETS, run_id="r1", api="etcd"))
    get = build_script(CellSpec("get", "quorum", TARGETS, run_id="r1", api="etcd"))
    assert 'local key_prefix = "r1-quorum-"' in put and '"/v3/kv/put"' in put and "/buckets/" not in put
    assert 'local key_prefix = "r1-load-"' in get and '"/v3/kv/range"' in get


def test_etcd_members_form_one_static_cluster(tmp_path):
    commands = [member_command("/usr/bin/etcd", i, tmp_path, [2001, 2002, 2003], [3001, 3002, 3003])
                for i in range(3)]
    initial = {command[command.index("--initial-cluster") + 1] for command in commands}
    assert initial == {"etcd1=http://127.0.0.1:3001,etcd2=http://127.0.0.1:3002,etcd3=http://127.0.0.1:3003"}
    assert [command[command.index("--listen-client-urls") + 1] for command in commands] == [
        f"http://127.0.0.1:{port}" for port in (2001, 2002, 2003)]
    assert len({command[command.index("--data-dir") + 1] for command in commands}) == 3


def test_the_comparison_gives_dynamos_quorum_rows_as_multiples_of_etcds():
    ours = [CellResult("put", "one", wrk_result([(204, 9000)])),
            CellResult("put", "quorum", wrk_result([(204, 4000)]), node_cpu_s=2.4),
            CellResult("get", "quorum", wrk_result([(200, 8000)]))]
    etcd = [CellResult("put", "quorum", wrk_result([(200, 5000)]), node_cpu_s=2.0),
            CellResult("get", "linearizable", wrk_result([(200, 8000), (404, 10)]))]
    assert bench_main.comparison(ours, etcd).splitlines()[1:] == [
        "- put: 0.80x (2000 against 2500 ops/s; CPU per request 1.50x)",  # 0.6 ms against 0.4 ms
        "- get: 1.00x (4000 against 4000 ops/s)"]


@needs_etcd
def test_the_same_keys_and_values_reach_a_real_etcd_cluster():
    etcd_path = shutil.which("etcd")
    assert etcd_version(etcd_path)[0].isdigit()
    cluster = start_etcd(etcd_path, 3)
    try:
        targets = bench_main.parse_targets(cluster.urls)
        plan = plan_load(6, 3, len(targets))
        put = run_cell(find_wrk(install=False), CellSpec("put", "quorum", targets, "t3", api="etcd"), plan, 1)
        loaded = preload(cluster.urls, "t3", keyspace=30, value_size_bytes=100, connections=3, api="etcd")
        get = run_cell(find_wrk(install=False), CellSpec("get", "quorum", targets, "t3", keyspace=30, api="etcd"),
                       plan, 1)
        stored = etcd_range(cluster.urls[1], b"t3-")
    finally:
        cluster.stop()
    assert not cluster.root.exists() and all(process.poll() is not None for process in cluster.processes)
    assert put.requests > 0 and dict(put.statuses).keys() == {200}
    assert (loaded.written, loaded.failures) == (30, ())
    assert get.requests > 0 and get.statuses == ((200, get.requests),)  # Lua's base64 found Python's keys
    written = {key: value for key, value in stored.items() if key.startswith("t3-quorum-")}
    assert len(written) >= put.requests  # distinct keys, named as designed, decoded from Lua's base64
    assert {key.rsplit("-", 2)[1] for key in written} == {str(thread) for thread in range(plan.threads)}
    assert set(stored.values()) == {bench_value(100)}


def etcd_range(url, prefix: bytes) -> dict:
    """Every key under `prefix` on an etcd member, decoded: key text -> value bytes."""
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    body = json.dumps({"key": base64.b64encode(prefix).decode(), "range_end": base64.b64encode(end).decode()})
    request = urllib.request.Request(f"{url}/v3/kv/range", body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        kvs = json.loads(response.read()).get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]) for kv in kvs}
