"""The ring page, the key lookup and /metrics on running nodes: content types, the routes the page polls,
/admin/preflist against ring.preference_list (with a node down), and the live page in headless Chromium
when it is installed."""

from __future__ import annotations

import json
import re
import shutil
import urllib.parse

import trio

from dynamo.ui import PAGE_ROUTES, ring_page
from ring import partition_for_key, preference_list

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_page_routes_resource_map_and_metrics(local_cluster, trio_run):
    async def main():
        async with local_cluster(3) as cluster:
            client = cluster.client("n1")
            page = await client.request("GET", "/ui/ring")
            assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
            assert page.body == ring_page()
            for route in PAGE_ROUTES:
                reply = await client.request("GET", route + ("?bucket=b&key=k" if route.endswith("preflist") else ""))
                # /admin/transfers may not exist (yet): the page shows "not known" on a 404.
                assert reply.status == 200 or (route == "/admin/transfers" and reply.status == 404), (route, reply)
                if reply.status == 200:
                    assert reply.headers["content-type"] == "application/json"
                    json.loads(reply.body)
            resources = (await client.request("GET", "/")).json()
            assert resources["dynamo_ui_ring"] == "/ui/ring" and resources["dynamo_admin_preflist"] == "/admin/preflist"
            assert resources["riak_kv_wm_ping"] == "/ping"
            assert (await client.request("POST", "/ui/ring")).status == 405
            await client.put("b", "k", b"v")
            metrics = await client.request("GET", "/metrics")
            assert metrics.status == 200 and metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = metrics.text
            assert re.search(r'^dynamo_node_puts\{node="n1"\} 1$', text, re.M)
            assert re.search(r'^dynamo_node_put_fsm_time_seconds_count\{node="n1"\} 1$', text, re.M)
            assert "# TYPE dynamo_keys_stored gauge" in text and "# HELP dynamo_keys_stored " in text
    trio_run(main)


def test_preflist_route_is_the_preference_list_of_the_node(local_cluster, trio_run):
    async def main():
        async with local_cluster(5) as cluster:
            victim = "n4"
            await cluster.stop(victim)
            await cluster.wait_down(victim)
            membership = cluster.node("n1").membership
            ring, down = membership.ring, membership.down
            assert down == frozenset({victim})
            client = cluster.client("n1")
            keys = [("b", f"k{i}") for i in range(12)] + [("a b/ü", "k/1?&=%")]
            fallbacks_seen = 0
            for bucket, key in keys:
                for n_val in (None, 2, 4):
                    query = {"bucket": bucket, "key": key, **({"n_val": n_val} if n_val else {})}
                    reply = await client.request("GET", "/admin/preflist?" + urllib.parse.urlencode(query))
                    assert reply.status == 200, reply
                    got = reply.json()
                    partition = partition_for_key(bucket.encode(), key.encode(), ring.partitions)
                    want = preference_list(ring, partition, n_val or 3, down)
                    assert (got["bucket"], got["key"], got["partition"], got["n_val"]) == \
                        (bucket, key, partition, n_val or 3)
                    assert [(r["node"], r["partition"]) for r in got["primaries"]] == \
                        [(r.node, r.partition) for r in want.primaries]
                    assert [(r["node"], r["partition"], r["fallback_for"]) for r in got["fallbacks"]] == \
                        [(r.node, r.partition, r.fallback_for) for r in want.fallbacks]
                    assert got["targets"] == list(want.nodes) and got["down"] == [victim]
                    assert all(r["status"] == ("down" if r["node"] == victim else "up") for r in got["primaries"])
                    fallbacks_seen += len(got["fallbacks"])
            assert fallbacks_seen > 0
            for bad in ("", "?bucket=b", "?key=k", "?bucket=b&key=k&n_val=0", "?bucket=b&key=k&n_val=x",
                        "?bucket=b&key=k&key=j"):
                reply = await client.request("GET", "/admin/preflist" + bad)
                assert reply.status == 400 and reply.text.count("\n") == 1, (bad, reply)
    trio_run(main, timeout_s=60)


def test_chromium_draws_the_live_page(local_cluster, trio_run, tmp_path):
    if CHROMIUM is None:
        import pytest
        pytest.skip("Chromium is not installed")

    async def main():
        async with local_cluster(4) as cluster:
            bucket, key = "b b", "k/1"  # the page's own query looks the key up (as a shared link would)
            victim = next(node for node in cluster.primaries(bucket, key) if node != "n1")
            await cluster.wait_up(victim)  # heard from, so that it shows as down (not unknown) once stopped
            await cluster.stop(victim)
            await cluster.wait_down(victim)
            url = f"http://127.0.0.1:{cluster.handles['n1'].config.http_port}/ui/ring?" + \
                urllib.parse.urlencode({"bucket": bucket, "key": key})
            done = await trio.run_process(
                [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=4000", "--dump-dom", url],
                capture_stdout=True, capture_stderr=True, check=False)
            assert done.returncode == 0, done.stderr[-2000:]
            dom = done.stdout.decode()
            membership = cluster.node("n1").membership
            partitions = membership.ring.partitions
            assert dom.count('class="arc"') + dom.count('class="arc down"') == partitions
            assert dom.count('class="arc down"') == len(membership.ring.partitions_of(victim))
            assert "Live: updated" in dom and 'class="status-down">down<' in dom and "(this node)" in dom
            partition = partition_for_key(bucket.encode(), key.encode(), partitions)
            want = membership.preflist(partition, 3)
            assert f"b b/k/1 → partition {partition} of {partitions}" in dom
            assert dom.count('class="badge"') == len(want.primaries) == 3
            assert dom.count('class="badge fallback"') == len(want.fallbacks) == 1
            assert f"fallback {want.fallbacks[0].node} stands in for {victim}" in dom
            assert f"Requests go to: {', '.join(want.nodes)}" in dom
    trio_run(main, timeout_s=90)
