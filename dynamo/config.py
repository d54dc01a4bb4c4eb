"""A node's settings: one frozen `NodeConfig`, from a TOML file and/or keyword overrides.

Theory of operation: every setting has a default that works on loopback, so `NodeConfig()` is a
one-node cluster on 127.0.0.1:7001 (RPC) and :8001 (HTTP). `load_config(path, **overrides)` reads a TOML
file (flat keys, plus `[[members]]` tables), applies the overrides and validates the whole; anything wrong
raises ConfigError (a ValueError) naming the setting. Durations end in _s, sizes in _bytes.

Cluster formation (this issue): `members` lists every node with its RPC and HTTP address, as `dynamo
cluster up` knows them all; every node builds the same ring from it, and the other members are the gossip
seeds. The node itself must be a member (it is added when the list is empty).

    node_id = "node1"
    rpc = "127.0.0.1:7001"
    http = "127.0.0.1:8001"
    data_dir = "dynamo-data/node1"
    [[members]]
    id = "node2"
    rpc = "127.0.0.1:7002"
    http = "127.0.0.1:8002"
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import tomllib
from typing import Any, Mapping

from ring.hashing import check_partitions


class ConfigError(ValueError):
    """A setting that is missing, of the wrong type or out of range."""


@dataclasses.dataclass(frozen=True)
class Member:
    """One node of the cluster as the configuration knows it."""

    node_id: str
    rpc: str  # "host:port"
    http: str  # "host:port"

    def __post_init__(self) -> None:
        check_node_id(self.node_id)
        parse_address(self.rpc, f"rpc address of {self.node_id}")
        parse_address(self.http, f"http address of {self.node_id}")


QUORUM_SYMBOLS = ("one", "quorum", "all")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    node_id: str = "node1"
    cluster: str = "dynamo"
    # Loopback default only: a real cluster must set its own (the RPC handshake proves knowledge of it).
    secret: str = "dynamo-local-secret"
    rpc_host: str = "127.0.0.1"
    rpc_port: int = 7001
    http_host: str = "127.0.0.1"
    http_port: int = 8001
    data_dir: str | None = ""  # "": dynamo-data/<node_id>; None: nothing on disk (memory backend only)
    backend: str = "sqlite"  # or "memory"
    value_cache_mib: int = 32  # SQLite: recently read and written values kept in memory (0: none)
    # SQLite: write small group commits from the event loop (storage/commit.py); false on a disk whose
    # fsync takes ms (network storage), so the loop serves on while a worker thread waits on the disk.
    commit_from_loop: bool = True
    # SQLite: flush those commits through Linux io_uring, the loop serving on while the disk flushes
    # (storage/uring.py); where io_uring is not available the loop waits in each fdatasync, as with false.
    # The handoff costs CPU and some latency: on the bench's 2-core machine it gave 5% more quorum puts
    # and 5% fewer puts at w=1 (whose only wait is the coordinator's own flush). Measure yours.
    fsync_in_background: bool = True
    members: tuple[Member, ...] = ()
    partitions: int = 256
    target_n: int = 3
    # Bucket defaults (a bucket's own properties override them).
    n_val: int = 3
    r: int | str = "quorum"
    w: int | str = "quorum"
    dw: int | str = "quorum"
    rw: int | str = "quorum"
    pr: int | str = 0
    pw: int | str = 0
    # Limits. Riak has no key limit, but a key rides in every hint row, Merkle leaf, RPC frame and URL
    # (percent-encoded: up to 3 bytes each), so 1 KiB keeps a request line within common 8 KiB limits.
    key_bytes_max: int = 1024
    bucket_bytes_max: int = 255
    value_bytes_max: int = 8 * 1024 * 1024
    siblings_warn: int = 25
    siblings_max: int = 100
    inflight_max: int = 512
    request_timeout_s: float = 10.0
    # Intervals.
    gossip_interval_s: float = 1.0
    handoff_interval_s: float = 1.0
    handoff_batch: int = 64
    handoff_backoff_max_s: float = 30.0
    # Ownership handoff during a ring change (dynamo/service/ownership.py): keys per batch, batches in
    # flight per stream, streams at a time per node.
    transfer_batch_keys: int = 256
    transfer_window: int = 4
    transfer_streams_max: int = 2
    # Active anti-entropy (dynamo/service/aae.py): seconds between rounds, partitions synced at a time,
    # keys repaired per second (token bucket), leaf segments per partition tree (a power of two).
    aae_enabled: bool = True
    aae_interval_s: float = 15.0
    aae_concurrency_max: int = 1
    aae_keys_per_s: int = 500
    aae_tree_segments: int = 1024
    # Tombstone reaping (dynamo/service/reaper.py): how long every primary must have agreed on a tombstone.
    tombstone_reap: bool = True
    tombstone_reap_grace_s: float = 60.0
    read_repair: bool = True  # off only to test anti-entropy alone
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        check_node_id(self.node_id)
        for name in ("cluster", "secret"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name} must be a non-empty string")
        for name in ("rpc_port", "http_port"):
            _check_int(name, getattr(self, name), 0, 65535)
        if self.backend not in ("sqlite", "memory"):
            raise ConfigError(f"backend must be sqlite or memory, got {self.backend!r}")
        if self.data_dir == "":
            object.__setattr__(self, "data_dir", f"dynamo-data/{self.node_id}")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ConfigError(f"data_dir must be a path string, got {self.data_dir!r}")
        if self.backend == "sqlite" and not self.data_dir:
            raise ConfigError("the sqlite backend needs a data_dir")
        try:
            check_partitions(self.partitions)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        _check_int("target_n", self.target_n, 1, 64)
        _check_int("n_val", self.n_val, 1, 16)
        for name in ("r", "w", "dw", "rw", "pr", "pw"):
            check_quorum_value(name, getattr(self, name), self.n_val)
        for name in ("key_bytes_max", "bucket_bytes_max", "value_bytes_max", "siblings_warn", "siblings_max",
                     "inflight_max", "handoff_batch", "transfer_batch_keys", "transfer_window",
                     "transfer_streams_max", "aae_concurrency_max", "aae_keys_per_s"):
            _check_int(name, getattr(self, name), 1, 2**40)
        _check_int("value_cache_mib", self.value_cache_mib, 0, 1 << 20)
        _check_int("aae_tree_segments", self.aae_tree_segments, 2, 1 << 20)
        if self.aae_tree_segments & (self.aae_tree_segments - 1):
            raise ConfigError(f"aae_tree_segments must be a power of two, got {self.aae_tree_segments}")
        for name in ("aae_enabled", "tombstone_reap", "read_repair", "commit_from_loop", "fsync_in_background"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("request_timeout_s", "gossip_interval_s", "handoff_interval_s", "handoff_backoff_max_s",
                     "aae_interval_s", "tombstone_reap_grace_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(self.log_level, str) or self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        members = tuple(self.members)
        if not all(isinstance(m, Member) for m in members):
            raise ConfigError("members must be Member values")
        ids = [m.node_id for m in members]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"members lists a node twice: {sorted(ids)}")
        if not members:
            members = (Member(self.node_id, self.rpc_address, self.http_address),)
        elif self.node_id not in ids:
            raise ConfigError(f"node {self.node_id!r} is not in members {sorted(ids)}")
        object.__setattr__(self, "members", tuple(sorted(members, key=lambda m: m.node_id)))

    @property
    def rpc_address(self) -> str:
        return f"{self.rpc_host}:{self.rpc_port}"

    @property
    def http_address(self) -> str:
        return f"{self.http_host}:{self.http_port}"

    def member_ids(self) -> tuple[str, ...]:
        return tuple(m.node_id for m in self.members)

    def bucket_defaults(self) -> dict[str, Any]:
        return {"n_val": self.n_val, "r": self.r, "w": self.w, "dw": self.dw, "rw": self.rw,
                "pr": self.pr, "pw": self.pw}

    def replace(self, **changes: Any) -> NodeConfig:
        return dataclasses.replace(self, **changes)


def check_node_id(node_id: object) -> str:
    # ":" separates the node id from its incarnation in actor ids (see node.py), so it cannot be in one.
    if not isinstance(node_id, str) or not node_id or len(node_id) > 64 or not node_id.isprintable() \
            or ":" in node_id or " " in node_id:
        raise ConfigError(f"node id must be 1-64 printable characters without ':' or spaces, got {node_id!r}")
    return node_id


def check_quorum_value(name: str, value: object, n_val: int) -> None:
    if isinstance(value, str) and value in QUORUM_SYMBOLS:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= n_val:
        raise ConfigError(f"{name} must be one|quorum|all or an integer in 0..{n_val}, got {value!r}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in {low}..{high}, got {value!r}")


def parse_address(text: object, what: str = "address") -> tuple[str, int]:
    """"host:port" -> (host, port); an IPv6 host goes in brackets: "[::1]:7001"."""
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be a 'host:port' string, got {text!r}")
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} must be 'host:port', got {text!r}")
    return host, int(port)


_FIELDS = {field.name for field in dataclasses.fields(NodeConfig)}


def config_from_mapping(raw: Mapping[str, Any], **overrides: Any) -> NodeConfig:
    """A NodeConfig from parsed TOML (or any mapping) plus overrides; "rpc"/"http" may be "host:port"."""
    values: dict[str, Any] = {}
    for source in (raw, overrides):
        for name, value in source.items():
            if value is None and name != "data_dir":
                continue
            if name in ("rpc", "http"):
                host, port = parse_address(value, name)
                values[f"{name}_host"], values[f"{name}_port"] = host, port
            elif name == "members":
                values["members"] = tuple(_member(item) for item in value)
            elif name in _FIELDS:
                values[name] = value
            else:
                raise ConfigError(f"unknown setting {name!r}")
    try:
        return NodeConfig(**values)
    except TypeError as error:
        raise ConfigError(str(error)) from None


def _member(item: Any) -> Member:
    if isinstance(item, Member):
        return item
    if not isinstance(item, Mapping) or set(item) - {"id", "rpc", "http"} or "id" not in item:
        raise ConfigError(f"a member is a table with id, rpc and http: {item!r}")
    return Member(item["id"], item.get("rpc", ""), item.get("http", ""))


def load_config(path: str | pathlib.Path | None = None, **overrides: Any) -> NodeConfig:
    """Read a TOML file (if given) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as file:
                raw = tomllib.load(file)
        except OSError as error:
            raise ConfigError(f"cannot read {path}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None
    return config_from_mapping(raw, **overrides)
