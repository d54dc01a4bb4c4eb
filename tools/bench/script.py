"""The Lua script wrk runs for one cell of the benchmark (one operation at one consistency).

Theory of operation. wrk gives every thread its own Lua state, plus one more state for `setup` and
`done`. The script is generated here from a frozen `CellSpec`, every parameter written in as a Lua
literal, so what a cell sends is decided in Python and can be read and tested as text:

- setup(thread), in the main state: numbers the threads 0..T-1 and points thread i at target
  i mod len(targets), so connections spread over the nodes (wrk only lets a whole thread be aimed).
- request(), per thread: a put writes the key <run>-<consistency>-<thread>-<counter>, so every put of a
  run goes to a key never written before (a blind put to an existing key would make a sibling and
  measure sibling growth instead of writes); a get reads <run>-load-<j>, j uniform over the keyspace
  that the preload (preload.py) wrote before any get cell.
- response(status), per thread: counts responses by status. wrk itself only counts "status > 399".
- With `api="etcd"` (the reference the issue compares with, etcd.py) the same keys go to etcd's v3 JSON
  gateway instead: a put is `POST /v3/kv/put`, a get `POST /v3/kv/range` (linearizable, etcd's default),
  keys and values base64-encoded in Lua as the gateway wants them. A range that finds no key is
  counted as a 404, as the Riak API would answer it.
- done(), in the main state: prints `@bench` lines (result.py reads them back): requests, duration,
  latency percentiles from wrk's histogram, socket errors, and every thread's status counts summed.
"""

from __future__ import annotations

import dataclasses
import re

CONSISTENCIES = ("one", "quorum", "all")
OPERATIONS = ("put", "get")
APIS = ("riak", "etcd")
PERCENTILES = (50.0, 99.0, 99.9)
MARKER = "@bench"
_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class BenchSpecError(ValueError):
    """A cell that cannot be run as asked: the message names the bad setting."""


def load_key_prefix(run_id: str) -> str:
    """Keys the preload writes and the get cells read are this prefix and an index in the keyspace."""
    return f"{run_id}-load-"


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """One cell: what to send, where, and how the keys are named."""

    operation: str  # "put" or "get"
    consistency: str  # "one", "quorum" or "all": sent as w= (put) or r= (get)
    targets: tuple[tuple[str, int], ...]  # (host, port) of each node, in the order threads are spread
    run_id: str  # names this run's keys so reruns never overwrite earlier keys
    bucket: str = "bench"
    keyspace: int = 10_000  # keys the preload wrote; gets pick among them
    value_size_bytes: int = 100
    seed: int = 1  # gets draw keys from math.random seeded with seed + thread number
    api: str = "riak"  # or "etcd": the same keys and values through etcd's v3 JSON gateway

    def __post_init__(self):
        if self.api not in APIS:
            raise BenchSpecError(f"api must be one of {', '.join(APIS)}, got {self.api!r}")
        if self.api == "etcd" and self.consistency != "quorum":
            raise BenchSpecError("etcd has one consistency: quorum puts and linearizable gets (say quorum)")
        if self.operation not in OPERATIONS:
            raise BenchSpecError(f"operation must be one of {', '.join(OPERATIONS)}, got {self.operation!r}")
        if self.consistency not in CONSISTENCIES:
            raise BenchSpecError(f"consistency must be one of {', '.join(CONSISTENCIES)}, "
                                 f"got {self.consistency!r}")
        if not self.targets:
            raise BenchSpecError("at least one target is needed")
        for host, port in self.targets:
            if not re.match(r"^[A-Za-z0-9_.:\[\]-]+$", host) or not 0 < port < 65536:
                raise BenchSpecError(f"bad target {host!r}:{port!r}")
        for name in ("bucket", "run_id"):
            if not _SAFE_NAME_RE.match(getattr(self, name)):
                raise BenchSpecError(f"{name} must be 1-64 of [A-Za-z0-9_.-], got {getattr(self, name)!r}")
        if self.keyspace < 1:
            raise BenchSpecError(f"keyspace must be >= 1, got {self.keyspace}")
        if self.value_size_bytes < 0:
            raise BenchSpecError(f"value size must be >= 0, got {self.value_size_bytes}")

    @property
    def query(self) -> str:
        parameter = "w" if self.operation == "put" else "r"
        return f"?{parameter}={self.consistency}"

    @property
    def key_prefix(self) -> str:
        """The key up to its varying part."""
        if self.operation == "put":
            return f"{self.run_id}-{self.consistency}-"
        return load_key_prefix(self.run_id)

    @property
    def key_path_prefix(self) -> str:
        """The path up to the varying part of the key (the Riak API's)."""
        return f"/buckets/{self.bucket}/keys/{self.key_prefix}"


def lua_string(text: str) -> str:
    """A Lua string literal for `text` (ASCII printable passes through; the rest as decimal escapes)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.extend(f"\\{byte}" for byte in char.encode("utf-8"))
    return '"' + "".join(out) + '"'


_TEMPLATE = """\
-- Generated by tools.bench (script.py) for one cell: {operation} at {consistency}.
local operation = {operation_literal}
local {prefix_name} = {prefix_literal}
local query = {query_literal}
local keyspace = {keyspace}
local value_size_bytes = {value_size_bytes}
local seed = {seed}
local targets = {{ {targets} }}
local percentiles = {{ {percentiles} }}

-- the value every put writes: the bytes preload.bench_value makes
function bench_value(size_bytes)
   local pattern = "0123456789abcdefghijklmnopqrstuvwxyz"
   return string.sub(string.rep(pattern, math.floor(size_bytes / #pattern) + 1), 1, size_bytes)
end

-- main state: setup() and done()
local threads = {{}}

function setup(thread)
   local index = #threads
   local target = targets[(index % #targets) + 1]
   thread.addr = wrk.lookup(target[1], target[2])[1]
   thread:set("thread_number", index)
   table.insert(threads, thread)
end

{thread_functions}
function done(summary, latency, requests)
   local out = {{}}
   local function line(...)
      table.insert(out, table.concat({{ "{marker}", ... }}, " "))
   end
   line("requests", string.format("%d", summary.requests))
   line("duration_us", string.format("%d", summary.duration))
   for _, p in ipairs(percentiles) do
      line("latency_us", tostring(p), string.format("%d", latency:percentile(p)))
   end
   line("latency_us", "max", string.format("%d", latency.max))
   for _, kind in ipairs({{ "connect", "read", "write", "timeout" }}) do
      line("socket_errors", kind, string.format("%d", summary.errors[kind]))
   end
   local total = {{}}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         total[status] = (total[status] or 0) + count
      end
   end
   for status, count in pairs(total) do
      line("status", string.format("%d", status), string.format("%d", count))
   end
   line("end")
   io.write(table.concat(out, "\\n") .. "\\n")
end
"""


_RIAK_THREAD = """\
-- thread states: init(), request(), response()
function init(args)
   counter = 0
   statuses = {}
   math.randomseed(seed + thread_number)
   value = bench_value(value_size_bytes)
   put_prefix = key_path_prefix .. thread_number .. "-"
end

function request()
   if operation == "put" then
      counter = counter + 1
      local headers = { ["Content-Type"] = "application/octet-stream" }
      return wrk.format("PUT", put_prefix .. counter .. query, headers, value)
   end
   return wrk.format("GET", key_path_prefix .. math.random(0, keyspace - 1) .. query)
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end
"""

_ETCD_THREAD = """\
-- thread states: init(), request(), response()
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function sextet(n, shift)
   local index = math.floor(n / shift) % 64 + 1
   return string.sub(alphabet, index, index)
end

function base64(text)
   local out = {}
   for i = 1, #text, 3 do
      local a, b, c = string.byte(text, i, i + 2)
      local n = a * 65536 + (b or 0) * 256 + (c or 0)
      local quad = sextet(n, 262144) .. sextet(n, 4096)
      quad = quad .. (b and sextet(n, 64) or "=") .. (c and sextet(n, 1) or "=")
      table.insert(out, quad)
   end
   return table.concat(out)
end

function init(args)
   counter = 0
   statuses = {}
   math.randomseed(seed + thread_number)
   value64 = base64(bench_value(value_size_bytes))
   put_prefix = key_prefix .. thread_number .. "-"
   headers = { ["Content-Type"] = "application/json" }
end

function request()
   if operation == "put" then
      counter = counter + 1
      local body = '{"key":"' .. base64(put_prefix .. counter) .. '","value":"' .. value64 .. '"}'
      return wrk.format("POST", "/v3/kv/put", headers, body)
   end
   local key = key_prefix .. math.random(0, keyspace - 1)
   return wrk.format("POST", "/v3/kv/range", headers, '{"key":"' .. base64(key) .. '"}')
end

function response(status, headers, body)
   if operation == "get" and status == 200 and not string.find(body, '"kvs"', 1, true) then
      status = 404  -- etcd answers a missing key with 200 and no kvs
   end
   statuses[status] = (statuses[status] or 0) + 1
end
"""


def build_script(spec: CellSpec) -> str:
    """The Lua source wrk runs for `spec`."""
    targets = ", ".join(f"{{ {lua_string(host)}, {lua_string(str(port))} }}" for host, port in spec.targets)
    etcd = spec.api == "etcd"
    return _TEMPLATE.format(
        thread_functions=_ETCD_THREAD if etcd else _RIAK_THREAD,
        prefix_name="key_prefix" if etcd else "key_path_prefix",
        operation=spec.operation, consistency=spec.consistency,
        operation_literal=lua_string(spec.operation), prefix_literal=lua_string(spec.key_prefix if etcd else spec.key_path_prefix),
        query_literal=lua_string(spec.query), keyspace=spec.keyspace,
        value_size_bytes=spec.value_size_bytes, seed=spec.seed, targets=targets,
        percentiles=", ".join(repr(p) for p in PERCENTILES), marker=MARKER)
