"""Request options of the client: quorum levels, per-client defaults and per-request overrides.

Theory of operation: an `Options` holds what a caller may tune (n_val, r w dw pr pw rw, timeout_s,
basic_quorum, notfound_ok, returnbody); None means "not said here". A client keeps one Options as its
defaults; each call lays its keyword overrides on top (`Options.merged`) and sends only the values that
are said, so whatever is left unsaid falls to the bucket's properties on the server, as in Riak.

Rules kept:
- Quorums are integers or the named levels ONE, QUORUM, ALL, DEFAULT (case-insensitive text). r, w and rw
  must be >= 1, dw, pr and pw >= 0; when n_val is known here an integer above it is refused before
  anything is sent. Booleans are not integers here. Every refusal is an InvalidArgument (a ValueError).
- timeout_s is seconds (a float > 0); the wire takes whole milliseconds, rounded up.
- Read-your-writes (`check_read_your_writes`): R + W > N makes every read quorum meet every write quorum.
  Unsaid values are taken as the Riak defaults (quorum, n_val 3): the client cannot see the bucket's
  props without asking. With a sloppy quorum this holds only among primaries (pr + pw > n is the strict
  form); the check names the plain quorums, as Riak's and Cassandra's documentation do.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

from dynamo.client.error import InvalidArgument

ONE, QUORUM, ALL, DEFAULT = "one", "quorum", "all", "default"
LEVELS = (ONE, QUORUM, ALL, DEFAULT)
QUORUM_NAMES = ("r", "w", "dw", "pr", "pw", "rw")
QUORUM_MIN = {"r": 1, "w": 1, "rw": 1, "dw": 0, "pr": 0, "pw": 0}
FLAG_NAMES = ("basic_quorum", "notfound_ok", "returnbody")
OPTION_NAMES = ("n_val",) + QUORUM_NAMES + ("timeout_s",) + FLAG_NAMES
N_VAL_ASSUMED = 3  # Riak's default n_val, for checks made without the bucket's props

# Which options each kind of request sends (the others mean nothing to it).
READ_OPTIONS = ("n_val", "r", "pr", "basic_quorum", "notfound_ok", "timeout_s")
WRITE_OPTIONS = ("n_val", "w", "dw", "pw", "returnbody", "timeout_s")
DELETE_OPTIONS = ("n_val", "rw", "w", "dw", "pw", "timeout_s")


class ConsistencyWarning(UserWarning):
    """The quorums asked for do not make reads see the latest acknowledged write."""


Quorum = int | str


@dataclasses.dataclass(frozen=True)
class Options:
    n_val: int | None = None
    r: Quorum | None = None
    w: Quorum | None = None
    dw: Quorum | None = None
    pr: Quorum | None = None
    pw: Quorum | None = None
    rw: Quorum | None = None
    timeout_s: float | None = None
    basic_quorum: bool | None = None
    notfound_ok: bool | None = None
    returnbody: bool | None = None

    def __post_init__(self) -> None:
        n_val = self.n_val
        if n_val is not None and (isinstance(n_val, bool) or not isinstance(n_val, int) or n_val < 1):
            raise InvalidArgument(f"n_val must be an integer >= 1, got {n_val!r:.40}")
        for name in QUORUM_NAMES:
            object.__setattr__(self, name, _check_quorum(name, getattr(self, name), n_val))
        timeout_s = self.timeout_s
        if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                      or not 0 < timeout_s < math.inf):
            raise InvalidArgument(f"timeout_s must be a positive number of seconds, got {timeout_s!r:.40}")
        for name in FLAG_NAMES:
            if getattr(self, name) not in (None, True, False):
                raise InvalidArgument(f"{name} must be True or False, got {getattr(self, name)!r:.40}")

    def merged(self, overrides: dict[str, Any]) -> "Options":
        """These options with `overrides` (None values ignored) on top; unknown names are refused."""
        unknown = sorted(set(overrides) - set(OPTION_NAMES))
        if unknown:
            raise InvalidArgument(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}")
        said = {name: value for name, value in overrides.items() if value is not None}
        return dataclasses.replace(self, **said) if said else self

    def query(self, names: tuple[str, ...]) -> list[tuple[str, str]]:
        """The said options among `names` as query pairs, in the wire's spelling."""
        pairs = []
        for name in names:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "timeout_s":
                pairs.append(("timeout", str(max(1, math.ceil(value * 1000)))))
            elif isinstance(value, bool):
                pairs.append((name, "true" if value else "false"))
            else:
                pairs.append((name, str(value)))
        return pairs


def _check_quorum(name: str, value: Any, n_val: int | None) -> Quorum | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value.lower() not in LEVELS:
            raise InvalidArgument(f"{name} must be an integer or one|quorum|all|default, got {value!r:.40}")
        return value.lower()
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be an integer or one|quorum|all|default, got {value!r:.40}")
    if value < QUORUM_MIN[name]:
        raise InvalidArgument(f"{name} must be >= {QUORUM_MIN[name]}, got {value}")
    if n_val is not None and value > n_val:
        raise InvalidArgument(f"{name} must be <= n_val: {value} > {n_val}")
    return value


def resolve(value: Quorum | None, n_val: int) -> int:
    """A quorum as a count of replicas out of n_val; unsaid and DEFAULT are taken as QUORUM."""
    if value is None or value in (DEFAULT, QUORUM):
        return n_val // 2 + 1
    if value == ONE:
        return 1
    if value == ALL:
        return n_val
    assert isinstance(value, int), value
    return value


def check_read_your_writes(options: Options, *, strict: bool) -> None:
    """Warn (ConsistencyWarning), or with `strict` refuse (InvalidArgument), when R + W <= N."""
    n_val = options.n_val or N_VAL_ASSUMED
    r, w = resolve(options.r, n_val), resolve(options.w, n_val)
    if r + w > n_val:
        return
    message = (f"read-your-writes asked for but r + w <= n_val ({r} + {w} <= {n_val}): a read may miss "
               f"the latest acknowledged write")
    if strict:
        raise InvalidArgument(message)
    warnings.warn(message, ConsistencyWarning, stacklevel=4)
