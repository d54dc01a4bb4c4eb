"""The live ring page (GET /ui/ring), the key lookup behind it (GET /admin/preflist), and the ring
summary the page and tools/ringviz share.

Theory of operation
- `ring_page()` is one self-contained HTML document: inline CSS, inline script (dynamo/ui_script.py), no
  other asset, no CDN (nodes run offline). The script polls PAGE_ROUTES on the node that served it and
  draws the ring as SVG. `ring_page(snapshot)` embeds a snapshot (ring, members, transfers, lookup) as
  JSON instead: the page then draws that once and polls nothing (`python -m tools.ringviz --html`).
- Embedded JSON is escaped so no "<" ">" "&" reaches the HTML parser: a node id cannot end the script.
- `preflist_report` is the /admin/preflist answer: a key's partition and preference list (primaries in
  walk order with their status, the fallbacks standing in for down primaries, where requests go),
  exactly ring.preflist.preference_list's result turned into JSON.
- `ring_summary` computes, from an /admin/ring document, what the page's script computes: partitions
  per node, balance (over the nodes owning partitions: floor/ceil of Q/S) and spacing (ring/spacing.py).
  Letters name nodes in sorted order (A, B, ..., Z, AA) in both, so terminal and page agree.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from dynamo.ui_script import RING_SCRIPT
from ring.claim import ownership_bounds
from ring.hashing import partition_for_key
from ring.preflist import Preflist
from ring.spacing import violated_windows, violations_min

PAGE_ROUTES = ("/admin/ring", "/admin/members", "/admin/transfers", "/admin/preflist")
# Added to GET / (Riak's resource map) so tools find the pages without guessing.
UI_RESOURCES = {"dynamo_ui_ring": "/ui/ring", "dynamo_admin_ring": "/admin/ring",
                "dynamo_admin_members": "/admin/members", "dynamo_admin_preflist": "/admin/preflist",
                "dynamo_metrics": "/metrics"}
N_VAL_MAX = 64
HTML_CONTENT_TYPE = "text/html; charset=utf-8"


def embed_json(value: Any) -> str:
    """JSON that is safe inside <script type="application/json">: no <, > or & characters."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def ring_page(snapshot: Mapping[str, Any] | None = None) -> bytes:
    """The page, live (polls the node) or with `snapshot` embedded (draws it once)."""
    assert "</script" not in RING_SCRIPT.lower()
    # The snapshot goes in last: text inside it is never taken for a placeholder.
    return (_PAGE.replace("@STYLE@", _STYLE).replace("@SCRIPT@", RING_SCRIPT)
            .replace("@SNAPSHOT@", embed_json(snapshot)).encode("utf-8"))


def node_letter(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: the short name of the index-th node (sorted), as the page shows it."""
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    text = ""
    number = index + 1
    while number > 0:
        text = chr(65 + (number - 1) % 26) + text
        number = (number - 1) // 26
    return text


@dataclasses.dataclass(frozen=True)
class RingSummary:
    nodes: tuple[str, ...]  # every node named by the document, sorted
    counts: Mapping[str, int]  # node -> partitions owned
    partitions: int
    target_n: int
    owning: int  # nodes that own at least one partition
    minimum: int
    maximum: int
    ideal_low: int
    ideal_high: int
    violated: tuple[int, ...]  # start partitions of the windows that repeat an owner
    violations_min: int

    @property
    def balanced(self) -> bool:
        return self.ideal_low <= self.minimum and self.maximum <= self.ideal_high


def ring_summary(document: Mapping[str, Any]) -> RingSummary:
    """Balance and spacing of an /admin/ring document (the page's `summarise`, in Python)."""
    owners = list(document.get("owners") or ())
    if not owners:
        raise ValueError("the ring document has no owners")
    target_n = int(document.get("target_n") or 3)
    nodes = tuple(sorted(set(document.get("nodes") or {}) | set(owners)))
    counts = {node: 0 for node in nodes}
    for owner in owners:
        counts[owner] += 1
    owning = [count for count in counts.values() if count > 0]
    low, high = ownership_bounds(len(owners), len(owning))
    return RingSummary(nodes, counts, len(owners), target_n, len(owning), min(owning), max(owning), low, high,
                       tuple(violated_windows(owners, target_n)),
                       violations_min(len(owners), len(owning), target_n))


class BadLookup(ValueError):
    """An /admin/preflist query the client got wrong (400, one line)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def preflist_lookup(membership: Any, registry: Any, query: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Answer /admin/preflist?bucket=B&key=K[&n_val=N] from the node's membership (its ring and who is
    down, so fallbacks are the ones requests would use now); n_val defaults to the bucket's."""
    params: dict[str, str] = {}
    for name, value in query:
        if name in params:
            raise BadLookup(f"{name} given twice")
        params[name] = value
    bucket, key = params.get("bucket", ""), params.get("key", "")
    if not bucket or not key:
        raise BadLookup("bucket and key are required: /admin/preflist?bucket=B&key=K[&n_val=N]")
    bucket_bytes, key_bytes = bucket.encode("utf-8"), key.encode("utf-8")
    n_val = registry.get(bucket_bytes).n_val
    if params.get("n_val"):
        try:
            n_val = int(params["n_val"])
        except ValueError:
            raise BadLookup(f"n_val must be an integer, got {params['n_val']!r}") from None
        if not 1 <= n_val <= N_VAL_MAX:
            raise BadLookup(f"n_val must be in [1, {N_VAL_MAX}], got {n_val}")
    ring = membership.ring
    preflist = membership.preflist(partition_for_key(bucket_bytes, key_bytes, ring.partitions), n_val)
    return preflist_report(preflist, bucket=bucket, key=key, partitions=ring.partitions,
                           ring_version=ring.version, status_of=membership.member_status)


def preflist_report(preflist: Preflist, *, bucket: str, key: str, partitions: int, ring_version: int,
                    status_of: Callable[[str], str]) -> dict[str, Any]:
    """The /admin/preflist JSON of a key's preference list."""
    def status(node: str) -> str:
        return "down" if node in preflist.down else status_of(node)
    return {
        "bucket": bucket, "key": key, "partition": preflist.partition, "partitions": partitions,
        "n_val": preflist.n_val, "ring_version": ring_version,
        "primaries": [{"node": r.node, "partition": r.partition, "status": status(r.node)}
                      for r in preflist.primaries],
        "fallbacks": [{"node": r.node, "partition": r.partition, "fallback_for": r.fallback_for,
                       "status": status(r.node)} for r in preflist.fallbacks],
        "targets": list(preflist.nodes), "down": sorted(preflist.down),
    }


_STYLE = """
:root { color-scheme: light dark; --fg: #1b1f24; --bg: #fbfbfc; --muted: #5c6470; --line: #d5d9df;
        --bad: #c62828; --ok: #2e7d32; --panel: #ffffff; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e8eaed; --bg: #15181c; --muted: #a3abb5; --line: #39404a; --bad: #ff6b6b; --ok: #7bd88f;
          --panel: #1d2127; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
header, main { max-width: 1200px; margin: 0 auto; padding: 0 16px; }
h1 { font-size: 1.4em; margin: 16px 0 4px; } h2 { font-size: 1.1em; margin: 0 0 8px; }
main { display: grid; grid-template-columns: minmax(340px, 4fr) minmax(0, 6fr); gap: 16px; align-items: start; }
[hidden] { display: none !important; }
@media (max-width: 900px) { main { grid-template-columns: 1fr; } }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px;
          margin-bottom: 16px; overflow-x: auto; }
#ring { width: 100%; height: auto; display: block; }
.arc { stroke: var(--bg); stroke-width: 0.6; } .arc.down { fill-opacity: 0.45; }
.hatch { pointer-events: none; } .arc-letter { font-size: 10px; text-anchor: middle; dominant-baseline: central;
  fill: #fff; pointer-events: none; font-weight: 600; }
.violation { fill: var(--bad); } .moving { fill: #1e88e5; }
.key-arc { fill: none; stroke: var(--fg); stroke-width: 2.5; } .key-dot { fill: var(--fg); }
.key-label { font-size: 12px; text-anchor: middle; dominant-baseline: central; fill: var(--fg); }
.badge circle { fill: var(--panel); stroke: var(--fg); stroke-width: 2; }
.badge.fallback circle { stroke-dasharray: 3 2; }
.badge text { font-size: 11px; font-weight: 700; text-anchor: middle; dominant-baseline: central; fill: var(--fg); }
.centre-big { font-size: 28px; font-weight: 700; text-anchor: middle; fill: var(--fg); }
.centre-small { font-size: 13px; text-anchor: middle; fill: var(--muted); }
table { border-collapse: collapse; width: 100%; font-size: 0.93em; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid var(--line); vertical-align: middle; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; }
.status-up { color: var(--ok); font-weight: 600; } .status-down { color: var(--bad); font-weight: 700; }
.status-unknown, .status-left { color: var(--muted); }
#status.stale, .error { color: var(--bad); } .note, footer { color: var(--muted); font-size: 0.9em; }
form { display: flex; flex-wrap: wrap; gap: 8px; align-items: end; }
label { display: flex; flex-direction: column; font-size: 0.9em; }
input { font: inherit; padding: 4px 6px; min-width: 8em; }
button { font: inherit; padding: 4px 12px; cursor: pointer; }
:focus-visible { outline: 3px solid #4a90e2; outline-offset: 2px; }
code { font-size: 0.95em; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dynamo ring</title>
<style>@STYLE@</style>
</head>
<body>
<header>
<h1>dynamo ring</h1>
<p id="status" role="status" aria-live="polite">Loading the ring…</p>
</header>
<main>
<div>
<section aria-labelledby="ring-heading">
<h2 id="ring-heading">Partitions</h2>
<svg id="ring" viewBox="-260 -260 520 520" role="img" aria-labelledby="ring-title ring-desc">
<title id="ring-title">The ring: each arc is one partition, coloured by its owner</title>
<desc id="ring-desc">No ring loaded yet.</desc>
<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
<rect width="6" height="6" fill="none"/><line x1="0" y1="0" x2="0" y2="6" stroke="#000" stroke-width="2.5"
 stroke-opacity="0.55"/></pattern></defs>
<g id="arcs"></g><g id="marks"></g><g id="centre"></g>
</svg>
<p class="note">Partition 0 is at the top; partitions go clockwise. Colour and letter name the owner
(see Nodes); hovering an arc names it. Hatched arcs: the owner is seen down. Red marks outside the ring: a
window of target_n consecutive partitions that repeats an owner (a spacing violation). Blue marks: a
partition being transferred to a new owner (see Transfers). A looked-up key
shows as a dot and outline at its partition, numbered circles at its primaries, dashed F circles at
fallbacks.</p>
</section>
<section aria-labelledby="lookup-heading">
<h2 id="lookup-heading">Key lookup</h2>
<form id="lookup">
<label for="bucket">bucket <input id="bucket" name="bucket" required autocomplete="off"></label>
<label for="key">key <input id="key" name="key" required autocomplete="off"></label>
<label for="n-val">n_val (optional) <input id="n-val" name="n_val" type="number" min="1" max="64"></label>
<button type="submit">Look up</button> <button type="button" id="lookup-clear">Clear</button>
</form>
<p class="note" id="lookup-note">Asks <code>GET /admin/preflist?bucket=B&amp;key=K[&amp;n_val=N]</code> (JSON):
the key's partition, its primaries in preference order and the fallbacks standing in for down ones. A link
to <code>/ui/ring?bucket=B&amp;key=K</code> opens the page with that key looked up.</p>
<div id="lookup-result" aria-live="polite"></div>
</section>
</div>
<div>
<section aria-labelledby="summary-heading"><h2 id="summary-heading">Summary</h2><dl id="summary"></dl></section>
<section aria-labelledby="nodes-heading">
<h2 id="nodes-heading">Nodes</h2>
<table><thead><tr><th scope="col"><span class="note">colour</span></th><th scope="col">letter</th>
<th scope="col">node</th><th scope="col">status</th><th scope="col">membership</th><th scope="col">partitions</th>
<th scope="col">HTTP</th><th scope="col">RPC</th><th scope="col">hints pending</th></tr></thead>
<tbody id="nodes-body"></tbody></table>
</section>
<section aria-labelledby="transfers-heading">
<h2 id="transfers-heading">Transfers</h2><div id="transfers"><p>Not asked yet.</p></div>
</section>
<footer><p>Data from <code>/admin/ring</code>, <code>/admin/members</code>, <code>/admin/transfers</code> and
<code>/admin/preflist</code> on this node; the resource map is <code>GET /</code>.</p></footer>
</div>
</main>
<script type="application/json" id="snapshot">@SNAPSHOT@</script>
<script>@SCRIPT@</script>
</body>
</html>
"""
