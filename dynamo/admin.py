"""`dynamo admin`: ask a running node over HTTP and print what it says as readable tables.

Theory of operation: each command is one GET against the node's JSON endpoints (`/stats`, `/admin/ring`,
`/admin/members`) with the stdlib's urllib and a timeout, then a pure rendering step (dict in, text out) that
tests can call directly. Anything that goes wrong talking to the node (refused, timed out, an HTTP error,
a body that is not JSON) becomes one `AdminError` with a one-line message that names the node and the
path; the CLI prints it and exits 1, never a traceback.

Rendering is tolerant: the node's JSON may grow fields, so tables show what they know in a fixed order and
unknown scalar fields after them, and a missing field shows as "-" rather than failing.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

TIMEOUT_S = 5.0
DEFAULT_NODE = "http://127.0.0.1:8001"
# /stats fields shown first, in this order; the rest follow sorted by name.
STATUS_FIRST = ("node", "node_id", "cluster", "ring_version", "keys_stored", "hints_pending", "node_gets",
                "node_puts", "node_deletes", "read_repairs", "aae_keys_repaired", "vnode_gets", "vnode_puts",
                "hints_written", "hints_delivered")
MEMBER_COLUMNS = ("status", "membership", "http", "rpc", "partitions", "hints_pending", "generation",
                  "incarnation", "heartbeat", "phi")


# Nodes are talked to directly, never through an HTTP proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class AdminError(ValueError):
    """The node could not be asked, or its answer could not be read: a one-line message."""


def node_url(text: str) -> str:
    """Normalise --node: "127.0.0.1:8001" and "http://127.0.0.1:8001/" both mean http://127.0.0.1:8001."""
    url = text.strip() if "://" in text else "http://" + text.strip()
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise AdminError(f"--node wants a URL like {DEFAULT_NODE}, got {text!r}")
    return f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"


def fetch_json(base_url: str, path: str, timeout_s: float = TIMEOUT_S, *, missing_ok: bool = False) -> Any:
    """GET base_url + path and decode its JSON body; AdminError on any failure. With `missing_ok`, a 404
    (a route an older node does not have) gives None instead."""
    return _request_json(base_url, path, None, timeout_s, missing_ok)


def post_json(base_url: str, path: str, body: Any = None, timeout_s: float = TIMEOUT_S) -> Any:
    """POST a JSON body (or none) and decode the JSON answer; AdminError on any failure."""
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(base_url + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    return _request_json(base_url, path, request, timeout_s, False)


def _request_json(base_url: str, path: str, request: Any, timeout_s: float, missing_ok: bool) -> Any:
    url = base_url + path
    try:
        with OPENER.open(request or url, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        if missing_ok and error.code == 404:
            return None
        detail = error.read(200).decode("utf-8", "replace").strip().splitlines()
        reason = detail[0] if detail else error.reason
        raise AdminError(f"{url} answered {error.code}: {reason}") from None
    except urllib.error.URLError as error:
        raise AdminError(f"cannot reach the node at {base_url}: {_reason(error.reason)}") from None
    except (socket.timeout, TimeoutError):
        raise AdminError(f"the node at {base_url} did not answer {path} within {timeout_s:g} s") from None
    except OSError as error:
        raise AdminError(f"cannot reach the node at {base_url}: {_reason(error)}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise AdminError(f"{url} did not return JSON") from None


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(reason) or type(reason).__name__


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain text table: left-aligned text, right-aligned numbers, a rule under the header."""
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [all(_is_number(row[i]) for row in cells if i < len(row) and row[i] != "-") and bool(cells)
               for i in range(len(headers))]
    widths = [max([len(h)] + [len(row[i]) for row in cells if i < len(row)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths])] + [line(row) for row in cells])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%"))
    except ValueError:
        return False
    return True


def render_status(stats: Mapping[str, Any]) -> str:
    """/stats as a two-column table; nested groups (latency_ms) become dotted names."""
    flat = dict(_flatten(stats))
    first = [name for name in STATUS_FIRST if name in flat]
    rest = sorted(name for name in flat if name not in STATUS_FIRST)
    return format_table(("stat", "value"), [(name, flat[name]) for name in first + rest])


def _flatten(value: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for name, item in value.items():
        if isinstance(item, Mapping) and item:
            yield from _flatten(item, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", item


def render_ring(ring: Mapping[str, Any]) -> str:
    """/admin/ring: a summary line, then one row per node with its share of the partitions."""
    owners = list(ring.get("owners") or ())
    partitions = ring.get("partitions") or len(owners) or None
    counts: dict[str, int] = {}
    for owner in owners:
        counts[owner] = counts.get(owner, 0) + 1
    nodes: Mapping[str, Any] = ring.get("nodes") or {}
    names = sorted(set(nodes) | set(counts))
    rows = []
    for name in names:
        info = nodes.get(name) or {}
        owned = counts.get(name, 0) if owners else info.get("partitions")
        share = f"{100 * owned / partitions:.1f}%" if isinstance(owned, int) and partitions else None
        rows.append((name, info.get("status"), info.get("http"), info.get("rpc"), owned, share))
    summary = (f"ring version {_cell(ring.get('version'))}, {_cell(partitions)} partitions, "
               f"n_val {_cell(ring.get('n_val'))}, target_n {_cell(ring.get('target_n'))}, {len(names)} nodes")
    table = format_table(("node", "status", "http", "rpc", "partitions", "share"), rows)
    return summary + "\n" + table


def render_members(members: Any) -> str:
    """/admin/members: one row per member, known columns first, other scalar fields after them.

    Accepts {id: {...}}, [{"id"/"node"/"node_id": ..., ...}], or either wrapped as {"members": ...} (with
    the answering node's id under "node", shown in a title line).
    """
    title = ""
    if isinstance(members, Mapping) and "members" in members:
        if isinstance(members.get("node"), str):
            title = f"members as seen by {members['node']}\n"
        members = members["members"]
    records = _member_records(members)
    fields: list[str] = [c for c in MEMBER_COLUMNS if any(c in r for _, r in records)]
    extra = sorted({k for _, r in records for k, v in r.items()
                    if k not in fields and k not in ("id", "node", "node_id") and not isinstance(v, (dict, list))})
    columns = fields + extra
    rows = [[name] + [record.get(c) for c in columns] for name, record in records]
    return title + format_table(["node"] + columns, rows)


def _member_records(members: Any) -> list[tuple[str, Mapping[str, Any]]]:
    if isinstance(members, Mapping):
        return sorted((str(k), v if isinstance(v, Mapping) else {"status": v}) for k, v in members.items())
    if isinstance(members, list):
        records = []
        for item in members:
            if not isinstance(item, Mapping):
                raise AdminError(f"cannot read a member entry: {item!r}")
            name = item.get("id", item.get("node", item.get("node_id", "?")))
            records.append((str(name), item))
        return sorted(records, key=lambda pair: pair[0])
    raise AdminError(f"/admin/members returned {type(members).__name__}, not a list or a map")


COMMANDS = {
    "status": ("/stats", render_status),
    "ring": ("/admin/ring", render_ring),
    "members": ("/admin/members", render_members),
}


def run_admin(command: str, node: str, timeout_s: float = TIMEOUT_S) -> str:
    """Fetch and render one admin command's table; AdminError on failure."""
    path, render = COMMANDS[command]
    data = fetch_json(node_url(node), path, timeout_s)
    if command != "members" and not isinstance(data, Mapping):
        raise AdminError(f"{path} returned {type(data).__name__}, not a JSON object")
    return render(data)
