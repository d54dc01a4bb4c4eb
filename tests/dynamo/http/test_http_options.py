"""Riak query options: symbolic quorums resolve against n_val, bad values are a one-line 400."""

import dataclasses

import pytest

from dynamo.http.message import parse_query
from dynamo.http.riak import DEFAULT_BUCKET_PROPS, BadRequest, Options, parse_request_options, resolve_quorum


def options(query: str, bucket=DEFAULT_BUCKET_PROPS) -> Options:
    return parse_request_options(parse_query(query), bucket)


VALID = [
    # query, bucket props, expected fields
    ("", {}, dict(n_val=3, r=2, w=2, dw=2, rw=2, pr=0, pw=0, basic_quorum=False, notfound_ok=True,
                  returnbody=False, timeout_ms=None, vtag=None)),
    ("r=one&w=all&dw=quorum", {}, dict(r=1, w=3, dw=2)),
    ("r=ONE&w=All", {}, dict(r=1, w=3)),
    ("r=3&pr=0&pw=3&dw=0", {}, dict(r=3, pr=0, pw=3, dw=0)),
    ("n_val=1", {}, dict(n_val=1, r=1, w=1, dw=1, rw=1)),          # quorum of 1 is 1
    ("n_val=2&r=all", {}, dict(n_val=2, r=2, w=2)),                 # quorum of 2 is 2
    ("n_val=5&r=quorum", {"n_val": 5}, dict(n_val=5, r=3)),
    ("n_val=4", {"n_val": 5}, dict(n_val=4, r=3)),
    ("r=default&n_val=default", {"n_val": 5, "r": "all"}, dict(n_val=5, r=5)),
    ("", {"r": 1, "w": "one", "pr": "quorum"}, dict(r=1, w=1, pr=2)),
    ("returnbody=true&basic_quorum=TRUE&notfound_ok=false", {},
     dict(returnbody=True, basic_quorum=True, notfound_ok=False)),
    ("basic_quorum=default&notfound_ok=default", {"basic_quorum": True, "notfound_ok": False},
     dict(basic_quorum=True, notfound_ok=False)),
    ("timeout=2500&vtag=5mQ2x7", {}, dict(timeout_ms=2500, vtag="5mQ2x7")),
    ("asis=true&sloppy_quorum=false&keys=stream", {}, dict(r=2)),  # unknown names are ignored
]


@pytest.mark.parametrize("query, bucket, expected", VALID)
def test_valid_options_resolve(query, bucket, expected):
    parsed = dataclasses.asdict(options(query, bucket))
    assert {name: parsed[name] for name in expected} == expected


INVALID = [
    ("r=4", {}, "r must be <= n_val: 4 > 3"),
    ("w=9", {}, "w must be <= n_val"),
    ("pw=4", {}, "pw must be <= n_val"),
    ("n_val=2&r=3", {}, "r must be <= n_val: 3 > 2"),
    ("n_val=2", {"r": 3}, "r must be <= n_val: 3 (bucket default) > 2"),
    ("n_val=4", {}, "n_val must be <= the bucket's n_val: 4 > 3"),
    ("n_val=0", {}, "n_val must be >= 1"),
    ("n_val=one", {}, "n_val must be a positive integer or default"),
    ("r=0", {}, "r must be >= 1"),
    ("w=0", {}, "w must be >= 1"),
    ("rw=0", {}, "rw must be >= 1"),
    ("r=-1", {}, "r must be a non-negative integer or one|quorum|all|default"),
    ("r=1.5", {}, "r must be a non-negative integer"),
    ("r=+1", {}, "r must be a non-negative integer"),
    ("r= 1", {}, "r must be a non-negative integer"),
    ("r=", {}, "r must be a non-negative integer"),
    ("dw=most", {}, "dw must be a non-negative integer"),
    ("r=\u0661", {}, "r must be a non-negative integer"),  # Arabic-Indic digit one: not ASCII
    ("returnbody=yes", {}, "returnbody must be true|false"),
    ("returnbody=default", {}, "returnbody must be true|false"),
    ("basic_quorum=1", {}, "basic_quorum must be true|false|default"),
    ("notfound_ok=", {}, "notfound_ok must be true|false|default"),
    ("timeout=0", {}, "timeout must be a positive integer"),
    ("timeout=abc", {}, "timeout must be a positive integer"),
    ("vtag=", {}, "vtag must not be empty"),
    ("r=1&r=2", {}, "query parameter r given more than once"),
]


@pytest.mark.parametrize("query, bucket, message", INVALID)
def test_invalid_options_are_bad_requests(query, bucket, message):
    with pytest.raises(BadRequest) as caught:
        options(query, bucket)
    assert caught.value.message.startswith(message)
    assert "\n" not in caught.value.message
    response = caught.value.response()
    assert response.status == 400 and response.body.endswith(b"\n") and response.body.count(b"\n") == 1


def test_bad_input_is_echoed_truncated_and_on_one_line():
    with pytest.raises(BadRequest) as caught:
        options("r=" + "x" * 500 + "%0Ainjected")
    assert len(caught.value.message) < 200 and "\n" not in caught.value.message


def test_bucket_props_may_be_an_object_with_attributes():
    @dataclasses.dataclass
    class Props:
        n_val: int = 5
        r: object = "all"

    parsed = options("", Props())
    assert (parsed.n_val, parsed.r, parsed.w) == (5, 5, 3)


@pytest.mark.parametrize("bucket", [{"n_val": 0}, {"n_val": "3"}, {"r": "most"}, {"notfound_ok": "yes"}])
def test_broken_bucket_defaults_are_a_server_fault_not_a_bad_request(bucket):
    with pytest.raises(ValueError) as caught:
        options("", bucket)
    assert not isinstance(caught.value, BadRequest)


def test_resolve_quorum_matches_riak_for_every_n_val():
    for n_val in range(1, 10):
        assert resolve_quorum("r", "quorum", n_val) == int(n_val / 2 + 1)  # riak_kv_util: trunc(N/2+1)
        assert resolve_quorum("r", "all", n_val) == n_val
        assert resolve_quorum("r", "one", n_val) == 1
