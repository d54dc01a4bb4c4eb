"""What can go wrong in a client call, as one exception family, and how an HTTP answer maps onto it.

Rules kept:
- Every failure a caller can see is a `ClientError`; no http.client, socket or h11 exception leaks out.
  Mistakes the caller made before anything was sent are `InvalidArgument` (a ValueError).
- The server's one-line error text is kept verbatim in `.message`; `.status` is the HTTP status (None
  when no node answered) and `.node` the base URL that answered or failed last.
- A 503 whose text names an unmet quorum ("W-value unsatisfied: 1/2", as riak_kv words it) is a
  `QuorumError` with the quorum's name, the replies it got and the replies it needed, parsed; any other
  503 (overload, a failed local write) is plain `Unavailable`. Both say the cluster could not do it now.
- The mapping is a table (`_BY_STATUS`) so one answer always gives the same exception.
"""

from __future__ import annotations

import re

_QUORUM_TEXT = re.compile(r"\b(R|W|DW|PR|PW|RW)-value unsatisfied: (\d+)/(\d+)")


class ClientError(Exception):
    """Base of every error the client raises."""

    def __init__(self, message: str, *, status: int | None = None, node: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.node = message, status, node

    def __str__(self) -> str:
        where = f" [{self.status} from {self.node}]" if self.status is not None and self.node else \
            f" [{self.node}]" if self.node else ""
        return f"{self.message}{where}"


class InvalidArgument(ClientError, ValueError):
    """The caller passed something the client refuses to send (a bad quorum, a non-bytes value...)."""


class BadRequest(ClientError, ValueError):
    """The server refused the request as malformed (400), e.g. r greater than the bucket's n_val."""


class TooLarge(BadRequest):
    """The server refused a value, key or sibling count over its limits (413)."""


class NotFound(ClientError, KeyError):
    """The key holds no live value (404), or a missing value was asked for."""

    def __str__(self) -> str:  # KeyError would quote the message
        return ClientError.__str__(self)


class PreconditionFailed(ClientError):
    """A conditional write (If-None-Match, If-Match) found the key in another state (412)."""


class Siblings(ClientError):
    """The object holds several concurrent values and the caller asked for one without a resolver.

    `.siblings` has them all; read-resolve-write with the object's context (or pass a resolver).
    """

    def __init__(self, message: str, siblings: tuple = (), **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.siblings = siblings


Conflict = Siblings


class Unavailable(ClientError):
    """The cluster could not serve the request now: no node reachable, overloaded, a write failed."""


class QuorumError(Unavailable):
    """Too few replicas answered: `.quorum` ("R", "W", "PR", ...), `.got` out of `.needed`."""

    def __init__(self, message: str, *, quorum: str, got: int, needed: int, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.quorum, self.got, self.needed = quorum, got, needed


class Timeout(ClientError):
    """No answer in time: the server's 504, or the socket deadline passed. A write may have landed."""


class ServerError(ClientError):
    """Anything else the server answered that the client did not expect (500, a garbled body)."""


_BY_STATUS: dict[int, type[ClientError]] = {
    400: BadRequest, 404: NotFound, 412: PreconditionFailed, 413: TooLarge, 503: Unavailable, 504: Timeout,
}


def error_from_answer(status: int, body: bytes, node: str | None) -> ClientError:
    """The exception for an HTTP error answer: the server's one line, classified by status and text."""
    message = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
    message = message.splitlines()[0] if message else message
    if status == 503:
        match = _QUORUM_TEXT.search(message)
        if match is not None:
            return QuorumError(message, quorum=match.group(1), got=int(match.group(2)),
                               needed=int(match.group(3)), status=status, node=node)
    kind = _BY_STATUS.get(status, ServerError)
    return kind(message, status=status, node=node)
