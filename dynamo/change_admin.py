"""`dynamo admin join|leave|force-remove|plan|commit|transfers`: membership changes from the command line.

Theory of operation: as admin.py, one HTTP exchange per command (two for join) and a pure rendering step.
`join SEED` runs against the new node (--node): it first asks the seed (a URL or host:port of its HTTP
API) for its node id and RPC address (/admin/members), then POSTs /admin/join to the new node. Changes
are staged; `plan` shows what a `commit` would move, `commit` makes the claimant compute and spread the
next ring, `transfers` follows the handoff, and `clear` undoes what every live member staged and no
commit took yet (a cleared joiner stops; as after a leave, its data dir must be wiped before it joins
again). A node's refusal (409: nothing staged, a change still running, ...) comes back as an AdminError
with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dynamo.admin import TIMEOUT_S, AdminError, fetch_json, format_table, node_url, post_json

CHANGE_COMMANDS = ("join", "leave", "force-remove", "plan", "commit", "clear", "transfers")


def seed_identity(seed: str, timeout_s: float = TIMEOUT_S) -> tuple[str, str]:
    """(node id, RPC address) of the node serving HTTP at `seed`."""
    report = fetch_json(node_url(seed), "/admin/members", timeout_s)
    try:
        me = report["node"]
        rpc = next(m["rpc"] for m in report["members"] if m["node"] == me)
    except (KeyError, TypeError, StopIteration):
        raise AdminError(f"{seed}/admin/members does not say who the seed is") from None
    return me, rpc


def run_change(command: str, node: str, target: str | None = None, timeout_s: float = TIMEOUT_S) -> str:
    base = node_url(node)
    if command in ("join", "force-remove") and not target:
        raise AdminError(f"{command} needs a {'seed URL' if command == 'join' else 'node id'}")
    if command == "join":
        seed, rpc = seed_identity(target, timeout_s)
        answer = post_json(base, "/admin/join", {"seed": seed, "rpc": rpc}, timeout_s)
        return f"{answer['node']}: joining the cluster of {seed} (staged; see `dynamo admin plan`, then commit)"
    if command == "leave":
        answer = post_json(base, "/admin/leave", None, timeout_s)
        return f"{answer['node']}: leaving (staged; see `dynamo admin plan`, then commit)"
    if command == "force-remove":
        answer = post_json(base, "/admin/force-remove", {"node": target}, timeout_s)
        return f"{answer['node']}: force-remove staged on {base} (plan and commit there)"
    if command == "plan":
        return render_plan(fetch_json(base, "/admin/plan", timeout_s))
    if command == "commit":
        answer = post_json(base, "/admin/commit", None, timeout_s)
        return f"committed ring v{answer['committed']} (claimant {answer['claimant']})\n" + render_plan(answer)
    if command == "clear":
        return render_clear(post_json(base, "/admin/clear", None, timeout_s))
    return render_transfers(fetch_json(base, "/admin/transfers", timeout_s))


def render_plan(plan: Mapping[str, Any]) -> str:
    """A plan (or a commit's answer): the changes, partitions per node before/after, balance and spacing."""
    changes = plan.get("staged") or plan.get("changes") or {}
    lines = [f"next ring v{plan.get('version')}: " + "; ".join(
        f"{kind} {', '.join(nodes)}" for kind, nodes in changes.items() if nodes)]
    rows = [(node, counts.get("before"), counts.get("after"), (counts.get("after") or 0) - (counts.get("before") or 0))
            for node, counts in sorted((plan.get("partitions") or {}).items())]
    lines.append(format_table(("node", "before", "after", "change"), rows))
    ideal = plan.get("ideal") or ["-", "-"]
    lines.append(f"ownership moves {plan.get('ownership_moves')}, data transfers {plan.get('transfers')}; "
                 f"balanced {'yes' if plan.get('balanced') else 'NO'} (ideal {ideal[0]}..{ideal[1]}); spacing "
                 f"violations {plan.get('spacing_violations')} (fewest possible {plan.get('spacing_violations_min')})")
    return "\n".join(lines)


def render_clear(answer: Mapping[str, Any]) -> str:
    """/admin/clear's answer: what was unstaged, the joins still staged, the members that did not answer."""
    cleared = answer.get("cleared") or {}
    done = "; ".join(f"{kind} {', '.join(nodes)}" for kind, nodes in cleared.items() if nodes)
    lines = [f"cleared: {done}" if done else "nothing staged to clear"]
    joins = (answer.get("kept") or {}).get("join") or []
    if joins:
        lines.append(f"still staged: join {', '.join(joins)} (its node did not clear it; stopping the node also "
                     "cancels its join)")
    if answer.get("unreachable"):
        lines.append(f"not cleared: {', '.join(answer['unreachable'])} did not answer and keep what they staged")
    return "\n".join(lines)


def render_transfers(report: Mapping[str, Any]) -> str:
    """/admin/transfers: a summary line, then one row per move (detail for the node asked's own streams)."""
    if report.get("next_version") is None:
        head = f"ring v{report.get('ring_version')}: no change under way"
    else:
        head = (f"ring v{report.get('ring_version')} -> v{report.get('next_version')}: {report.get('done')} done, "
                f"{report.get('remaining')} remaining")
    sent, received = report.get("sent") or {}, report.get("received") or {}
    head += (f"\n{report.get('node')} sent {sent.get('keys', 0)} keys ({sent.get('bytes', 0)} bytes), "
             f"received {received.get('keys', 0)} keys ({received.get('bytes', 0)} bytes)")
    moves = report.get("moves") or []
    if not moves:
        return head
    rows = [(m.get("partition"), m.get("source"), m.get("target"), m.get("state"), m.get("keys_sent"),
             m.get("keys_per_s"), m.get("error")) for m in moves]
    return head + "\n" + format_table(("partition", "source", "target", "state", "keys_sent", "keys/s", "error"),
                                      rows)
