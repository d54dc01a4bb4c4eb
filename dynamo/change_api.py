"""HTTP routes for membership changes and transfers (api.py mounts them; claimant.py does the work).

Theory of operation: each route is a thin translation. Changes are POSTs with an optional JSON body and
answer the claimant's JSON; `GET /admin/plan` shows what a commit would do without changing anything;
`GET /admin/transfers` is the handoff report (ownership.py). A change that cannot be made now
(ChangeError: a node that is not a member, a commit while a change runs, nothing staged) is a 409 with
its one-line reason; a malformed body is a 400.

    POST /admin/join          {"seed": "node1", "rpc": "127.0.0.1:7001"}   run on the new node
    POST /admin/leave                                                     run on the leaving node
    POST /admin/force-remove  {"node": "node3"}                           staged on the node asked
    GET  /admin/plan
    POST /admin/commit
    POST /admin/clear                                                     undo every live member's staging
    GET  /admin/transfers
"""

from __future__ import annotations

import json
from typing import Any

from dynamo.http.message import Request, Response, error_response
from dynamo.service.claimant import ChangeError

_JSON = (("Content-Type", "application/json"),)


def _json(status: int, value: Any) -> Response:
    return Response(status, _JSON, json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _body(request: Request, *fields: str) -> dict[str, str]:
    try:
        body = json.loads(request.body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"the body must be JSON: {error}") from None
    if not isinstance(body, dict) or not all(isinstance(body.get(name), str) and body[name] for name in fields):
        raise ValueError(f"the body must be a JSON object with string fields {', '.join(fields)}")
    return body


async def _change(request: Request, action) -> Response:
    try:
        result = action()
        if hasattr(result, "__await__"):
            result = await result
    except ChangeError as error:
        return error_response(409, str(error))
    except ValueError as error:
        return error_response(400, str(error))
    return _json(200, result)


async def join(api: Any, request: Request) -> Response:
    def action():
        body = _body(request, "seed", "rpc")
        return api.node.claimant.join(body["seed"], body["rpc"])
    return await _change(request, action)


async def leave(api: Any, request: Request) -> Response:
    return await _change(request, api.node.claimant.leave)


async def force_remove(api: Any, request: Request) -> Response:
    return await _change(request, lambda: api.node.claimant.force_remove(_body(request, "node")["node"]))


async def plan(api: Any, request: Request) -> Response:
    return await _change(request, api.node.claimant.plan)


async def commit(api: Any, request: Request) -> Response:
    return await _change(request, api.node.claimant.commit)


async def clear(api: Any, request: Request) -> Response:
    return await _change(request, api.node.claimant.clear)


async def transfers(api: Any, request: Request) -> Response:
    return _json(200, api.node.ownership.report())


ROUTES = {
    ("POST", b"admin/join"): join,
    ("POST", b"admin/leave"): leave,
    ("POST", b"admin/force-remove"): force_remove,
    ("GET", b"admin/plan"): plan,
    ("POST", b"admin/commit"): commit,
    ("POST", b"admin/clear"): clear,
    ("GET", b"admin/transfers"): transfers,
}
