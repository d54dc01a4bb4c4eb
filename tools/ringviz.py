"""Ring visualiser: a running node's ring, or the claim's layout for a cluster size, in the terminal or as
the ring page's HTML.

Run: python -m tools.ringviz --node http://127.0.0.1:8001 [--key bucket/key] [--html out.html]
     python -m tools.ringviz --nodes 5 --partitions 64 [--target-n 3] [--n-val 3] [--key b/k] [--html out.html]

Theory of operation: both sources give the same documents the page polls (the /admin/ring JSON, the
members report, transfers when the node has the route, a key's /admin/preflist answer). `--nodes` makes
them from ring.Ring.initial (every node up, no addresses). The terminal view is a pure function of those
documents (`render_text`): partitions per node, balance, spacing violations and a compact map of owners
around the ring, one letter per partition (the page's letters: nodes in sorted order, A, B, ...).
`--html` writes dynamo.ui.ring_page with the documents embedded: the page's own drawing, not live.
Nothing here decides anything the node does not: balance and spacing come from dynamo.ui.ring_summary
(ring/'s bounds and spacing), preference lists from ring.preference_list.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from dynamo.admin import AdminError, fetch_json, format_table, node_url
from dynamo.ui import node_letter, preflist_report, ring_page, ring_summary
from ring import PARTITIONS_DEFAULT, Ring, partition_for_key, preference_list

MAP_WIDTH = 64
GROUP = 8


class VizError(ValueError):
    """Bad arguments or an unreadable source: one line for the terminal."""


# ---- sources --------------------------------------------------------------------------------------

def from_node(base_url: str, key: tuple[str, str] | None) -> dict[str, Any]:
    """The documents of a running node."""
    documents = {"source": base_url, "ring": fetch_json(base_url, "/admin/ring"),
                 "members": fetch_json(base_url, "/admin/members"),
                 "transfers": fetch_json(base_url, "/admin/transfers", missing_ok=True), "lookup": None}
    if key is not None:
        query = urllib.parse.urlencode({"bucket": key[0], "key": key[1]})
        documents["lookup"] = fetch_json(base_url, f"/admin/preflist?{query}")
    return documents


def from_claim(nodes: int, partitions: int, target_n: int, n_val: int, key: tuple[str, str] | None) -> dict[str, Any]:
    """The documents of a new cluster of `nodes` nodes (node1, node2, ...), every node up."""
    if not 1 <= nodes <= 1024:
        raise VizError(f"--nodes must be in [1, 1024], got {nodes}")
    try:
        ring = Ring.initial([f"node{i}" for i in range(1, nodes + 1)], partitions=partitions, target_n=target_n)
    except ValueError as error:
        raise VizError(str(error)) from None
    document = {"version": ring.version, "partitions": ring.partitions, "n_val": n_val, "target_n": ring.target_n,
                "owners": list(ring.owners),
                "nodes": {node: {"status": "up", "http": None, "rpc": None,
                                 "partitions": len(ring.partitions_of(node))} for node in ring.nodes}}
    lookup = None
    if key is not None:
        partition = partition_for_key(key[0].encode(), key[1].encode(), ring.partitions)
        lookup = preflist_report(preference_list(ring, partition, n_val), bucket=key[0], key=key[1],
                                 partitions=ring.partitions, ring_version=ring.version, status_of=lambda n: "up")
    return {"source": f"the claim for {nodes} nodes", "ring": document, "members": None, "transfers": None,
            "lookup": lookup}


# ---- the terminal view ----------------------------------------------------------------------------

def render_text(documents: Mapping[str, Any], width: int = MAP_WIDTH) -> str:
    ring = documents["ring"]
    summary = ring_summary(ring)
    nodes_info = ring.get("nodes") or {}
    status = {node: (nodes_info.get(node) or {}).get("status", "unknown") for node in summary.nodes}
    letters = {node: node_letter(i) for i, node in enumerate(summary.nodes)}
    lines = [f"ring v{ring.get('version')} · {summary.partitions} partitions · n_val {ring.get('n_val')} · "
             f"target_n {summary.target_n} · {len(summary.nodes)} nodes ({documents['source']})", ""]
    members = {m.get("node"): m for m in ((documents.get("members") or {}).get("members") or ())}
    rows = [(letters[node], node, status[node], members.get(node, {}).get("membership"), summary.counts[node],
             f"{100 * summary.counts[node] / summary.partitions:.1f}%", (nodes_info.get(node) or {}).get("http"))
            for node in summary.nodes]
    headers = ("letter", "node", "status", "membership", "partitions", "share", "http")
    shown = [i for i in range(len(headers)) if any(row[i] is not None for row in rows)]  # drop empty columns
    lines += [format_table([headers[i] for i in shown], [[row[i] for i in shown] for row in rows]), ""]
    lines.append(f"balance: min {summary.minimum}, max {summary.maximum} partitions per node "
                 f"(ideal {summary.ideal_low}..{summary.ideal_high}): "
                 f"{'balanced' if summary.balanced else 'NOT balanced'}")
    lines.append(f"spacing: {len(summary.violated)} of {summary.partitions} windows of {summary.target_n} "
                 f"partitions repeat an owner (fewest possible {summary.violations_min})")
    lookup = documents.get("lookup")
    lines += ["", *ring_map(ring["owners"], letters, status, summary.violated,
                            lookup["partition"] if lookup else None, width,
                            moving_partitions(documents.get("transfers")))]
    lines += ["", render_transfers(documents.get("transfers"))]
    if lookup:
        lines += ["", *render_lookup(lookup)]
    return "\n".join(lines)


def ring_map(owners: Sequence[str], letters: Mapping[str, str], status: Mapping[str, str],
             violated: Sequence[int], key_partition: int | None, width: int,
             moving: Sequence[int] = ()) -> list[str]:
    """Owners around the ring, `width` partitions a row; a marker row under rows with something to mark
    (one mark a partition: the key's * over a window's ^ over a move's >)."""
    wide = max(len(letter) for letter in letters.values())
    lines = [f"map: partition 0 first, clockwise, {width} a row; lower case: owner not up; "
             f"^ starts a window that repeats an owner" + ("; > moving" if moving else "")
             + ("; * the key's partition" if key_partition is not None else "")]
    marks = {partition: ">" for partition in moving}
    marks.update({start: "^" for start in violated})
    if key_partition is not None:
        marks[key_partition] = "*"
    for start in range(0, len(owners), width):
        cells, under = [], []
        for p in range(start, min(start + width, len(owners))):
            letter = letters[owners[p]]
            cells.append((letter if status[owners[p]] == "up" else letter.lower()).ljust(wide))
            under.append(marks.get(p, " ").ljust(wide))
            if (p - start) % GROUP == GROUP - 1:
                cells.append(" ")
                under.append(" ")
        lines.append(f"{start:>6}  {''.join(cells).rstrip()}")
        if any(p in marks for p in range(start, start + width)):
            lines.append(f"{'':>6}  {''.join(under).rstrip()}")
    return lines


def transfer_list(transfers: Any) -> list | None:
    """The moves in a /admin/transfers answer: the answer if a list, else its first list field (the page's
    rule too)."""
    if isinstance(transfers, list):
        return transfers
    if isinstance(transfers, dict):
        return next((value for value in transfers.values() if isinstance(value, list)), None)
    return None


def moving_partitions(transfers: Any) -> list[int]:
    return [t["partition"] for t in transfer_list(transfers) or () if isinstance(t, dict)
            and isinstance(t.get("partition"), int) and t.get("state") != "done"]


def render_transfers(transfers: Any) -> str:
    if transfers is None:
        return "transfers: not known (no /admin/transfers on this source)"
    items = transfer_list(transfers)
    facts = [f"{name}: {'-' if value is None else value}" for name, value in transfers.items()
             if not isinstance(value, (dict, list))] if isinstance(transfers, dict) else []
    head = "transfers" + (f" ({' · '.join(facts)})" if facts else "") + ": "
    if items is not None and not items:
        return head + "none under way"
    if items is not None and all(isinstance(item, dict) for item in items):
        columns = list(dict.fromkeys(name for item in items for name in item))
        rows = [[item.get(column) for column in columns] for item in items]
        return (head + f"{len(items)} listed, {len(moving_partitions(transfers))} not done\n"
                + format_table(columns, rows))
    return head + json.dumps(transfers, indent=2, sort_keys=True)


def render_lookup(lookup: Mapping[str, Any]) -> list[str]:
    lines = [f"key {lookup['bucket']}/{lookup['key']}: partition {lookup['partition']} of {lookup['partitions']} "
             f"(n_val {lookup['n_val']})"]
    for i, replica in enumerate(lookup["primaries"], 1):
        lines.append(f"  primary {i}: {replica['node']} (found at partition {replica['partition']}, "
                     f"{replica['status']})")
    for replica in lookup["fallbacks"]:
        lines.append(f"  fallback: {replica['node']} for {replica['fallback_for']} (partition "
                     f"{replica['partition']}, {replica['status']})")
    lines.append(f"  requests go to: {', '.join(lookup['targets']) or 'nobody (no live replica)'}")
    return lines


# ---- the command ----------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.ringviz", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--node", help="a running node's HTTP address, e.g. http://127.0.0.1:8001")
    source.add_argument("--nodes", type=int, help="lay out the claim for this many nodes instead")
    parser.add_argument("--partitions", type=int, default=PARTITIONS_DEFAULT,
                        help=f"Q for --nodes (a power of two, default {PARTITIONS_DEFAULT}, as a node's)")
    parser.add_argument("--target-n", type=int, default=3, help="spacing target for --nodes (default 3)")
    parser.add_argument("--n-val", type=int, default=3, help="replicas per key for --nodes (default 3)")
    parser.add_argument("--key", help="also show this key's preference list: bucket/key")
    parser.add_argument("--html", metavar="FILE", help="write the ring page with this view embedded to FILE")
    parser.add_argument("--width", type=int, default=MAP_WIDTH, help=f"partitions per map row (default {MAP_WIDTH})")
    return parser


def _key(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    bucket, slash, key = text.partition("/")
    if not slash or not bucket or not key:
        raise VizError(f"--key wants bucket/key, got {text!r}")
    return bucket, key


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.width < 1:
            raise VizError("--width must be at least 1")
        key = _key(args.key)
        if args.node is not None:
            documents = from_node(node_url(args.node), key)
        else:
            documents = from_claim(args.nodes, args.partitions, args.target_n, args.n_val, key)
        if args.html:
            taken = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            with open(args.html, "wb") as file:
                file.write(ring_page({**documents, "taken": taken}))
            print(f"wrote {args.html} (the ring page with this view embedded; open it in a browser)")
        else:
            print(render_text(documents, args.width))
    except (VizError, AdminError, OSError) as error:
        print(f"ringviz: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
