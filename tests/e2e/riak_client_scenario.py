"""Riak's own Python client (riak 2.7.0, its last release) against a running cluster; run as a script.

    python tests/e2e/riak_client_scenario.py HTTP_PORT_A HTTP_PORT_B

It stores, fetches, makes siblings from two nodes, resolves them with the fetched context, lists keys and
buckets, deletes, and uses quorum options, each through the client's public API only, and prints what it
saw as one JSON line for test_kv.py to check. Run in its own process because the client, written for
Python up to 3.9, needs what Python 3.10 removed put back before it is imported (the abstract collections
in `collections`, namedtuple's `verbose`; below), and those changes must not reach the test process.
"""

import collections
import collections.abc
import json
import sys
import uuid

# riak 2.7.0 imports the abstract collections from `collections` and passes `verbose` to namedtuple.
for _name in collections.abc.__all__:
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))
_namedtuple = collections.namedtuple
collections.namedtuple = lambda *args, verbose=False, **kwargs: _namedtuple(*args, **kwargs)
import riak  # noqa: E402
from riak import ConflictError, RiakError  # noqa: E402

collections.namedtuple = _namedtuple


def main(port_a: int, port_b: int) -> dict:
    a = riak.RiakClient(protocol="http", nodes=[{"host": "127.0.0.1", "http_port": port_a}])
    b = riak.RiakClient(protocol="http", nodes=[{"host": "127.0.0.1", "http_port": port_b}])
    seen: dict = {"ping": [a.ping(), b.ping()]}
    prefix = uuid.uuid4().hex
    bucket_a, bucket_b = a.bucket(f"riakclient-{prefix}"), b.bucket(f"riakclient-{prefix}")
    bucket_a.set_property("allow_mult", True)
    seen["allow_mult"] = bucket_b.get_property("allow_mult")

    stored = bucket_a.new("plain", data="hello", content_type="text/plain")
    stored.usermeta = {"colour": "blue"}
    stored.store(w=3, dw=2, pw=2)
    fetched = bucket_b.get("plain", r=3, pr=3)
    seen["plain"] = [fetched.exists, fetched.data, fetched.content_type, fetched.usermeta,
                     fetched.vclock is not None]

    bucket_a.new("json", data={"n": [1, 2]}).store()
    seen["json"] = bucket_b.get("json").data

    bucket_a.new("two", data="from a", content_type="text/plain").store()
    bucket_b.new("two", data="from b", content_type="text/plain").store()  # no context: a sibling
    conflicted = bucket_a.get("two")
    seen["siblings"] = sorted(sibling.data for sibling in conflicted.siblings)
    try:
        conflicted.data
        seen["conflict_raised"] = False
    except ConflictError:
        seen["conflict_raised"] = True
    conflicted.siblings = [s for s in conflicted.siblings if s.data == "from b"]
    conflicted.store()  # with the vclock the fetch brought: replaces both
    resolved = bucket_b.get("two", r="all")
    seen["resolved"] = [len(resolved.siblings), resolved.data]

    seen["keys"] = sorted(bucket_b.get_keys())
    seen["streamed_keys"] = sorted(key for chunk in bucket_a.stream_keys() for key in chunk)
    seen["bucket_listed"] = bucket_a.name in [bucket.name for bucket in a.get_buckets()]
    streamed_buckets = [bucket.name for chunk in a.stream_buckets() for bucket in chunk]
    seen["bucket_streamed_once"] = streamed_buckets.count(bucket_a.name) == 1

    bucket_b.get("plain").delete()
    seen["deleted_exists"] = bucket_a.get("plain", r="all").exists

    try:
        bucket_a.get("json", r=9)
        seen["r_above_n_val"] = "no error"
    except RiakError as error:
        seen["r_above_n_val"] = str(error)
    return seen


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
