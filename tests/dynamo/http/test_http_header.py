"""Riak header helpers: metadata and dates round-trip, conditions and Accept decide as HTTP says."""

import dataclasses
import json

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamo.http.message import Headers, error_response, make_request
from dynamo.http.riak import (check_preconditions, choose_media_type, content_headers, etag, format_http_date,
                              meta_from_headers, meta_headers, object_path, parse_etags, parse_http_date,
                              resource_map_response, sibling_media_type, unquote_etag, vclock_from_headers)

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
meta_names = st.text(TOKEN_CHARS, min_size=1, max_size=20)
visible = st.characters(min_codepoint=0x01, max_codepoint=0xFF, blacklist_characters="\t\n\x0b\x0c\r ")
meta_values = st.builds(" ".join, st.lists(st.text(visible, min_size=1, max_size=10), max_size=4))


@dataclasses.dataclass(frozen=True)
class Sibling:
    value: bytes = b"v"
    content_type: str = "text/plain"
    last_modified_us: int = 1_700_000_000_123_456
    metadata: tuple = ()
    deleted: bool = False
    vtag: str = "5mQ2x7"


@given(st.lists(st.tuples(meta_names, meta_values), max_size=6))
def test_meta_headers_round_trip(metadata):
    headers = meta_headers(metadata)
    assert meta_from_headers(Headers(headers)) == tuple(metadata)
    for name, value in headers:  # and h11 would put every one of them on the wire
        h11.Response(status_code=200, headers=[(name.encode("ascii"), value.encode("latin-1"))])


def test_meta_names_keep_their_spelling_and_other_headers_are_ignored():
    headers = Headers([("X-Riak-Meta-Color", "red"), ("content-type", "text/plain"),
                       ("x-riak-meta-SIZE", "L"), ("X-Riak-Meta-", "nameless"), ("X-Riak-Vclock", "a85=")])
    assert meta_from_headers(headers) == (("Color", "red"), ("SIZE", "L"))


@pytest.mark.parametrize("name, value", [("bad name", "v"), ("", "v"), ("ok", "line\r\nInjected: 1"),
                                         ("ok", " leading"), ("ok", "nul\x00"), ("ok", "wide\u20ac")])
def test_meta_that_cannot_be_sent_is_refused(name, value):
    with pytest.raises(ValueError):
        meta_headers([(name, value)])


@given(st.integers(min_value=0, max_value=253402300799_999_999))
def test_http_date_round_trips_to_the_second(time_us):
    text = format_http_date(time_us)
    assert text.endswith(" GMT") and len(text) == 29
    assert parse_http_date(text) == time_us - time_us % 1_000_000


def test_http_date_formats():
    assert format_http_date(784111777_500_000) == "Sun, 06 Nov 1994 08:49:37 GMT"
    rfc_1123, rfc_850, asctime = ("Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                                  "Sun Nov  6 08:49:37 1994")
    for text in (rfc_1123, rfc_850, asctime):
        assert parse_http_date(text) == 784111777_000_000, text
    assert parse_http_date("yesterday") is None
    with pytest.raises(ValueError):
        format_http_date(-1)


def test_etag_quoting():
    assert etag("5mQ2x7") == '"5mQ2x7"'
    assert unquote_etag('"5mQ2x7"') == unquote_etag("5mQ2x7") == unquote_etag('W/"5mQ2x7"') == "5mQ2x7"
    assert parse_etags('"a", W/"b" ,c') == ["a", "b", "c"]
    assert parse_etags(" * ") is None
    with pytest.raises(ValueError):
        etag('has"quote')


def test_vclock_is_read_back_opaque():
    assert vclock_from_headers(Headers([("x-riak-vclock", " a85hYGBgzGDKBVIc=  ")])) == "a85hYGBgzGDKBVIc="
    assert vclock_from_headers(Headers([("X-Riak-Vclock", "")])) is None
    assert vclock_from_headers(Headers()) is None


def cond(method, current, **headers):
    pairs = [(name.replace("_", "-"), value) for name, value in headers.items()]
    return check_preconditions(method, Headers(pairs), current, last_modified_us=1_000_000_000_000_000)


SECOND_AFTER = "Sun, 09 Sep 2001 01:46:41 GMT"  # last modified is 01:46:40
SECOND_BEFORE = "Sun, 09 Sep 2001 01:46:39 GMT"


@pytest.mark.parametrize("method, current, headers, expected", [
    ("PUT", None, {}, None),
    ("PUT", None, {"If_None_Match": "*"}, None),             # create-only write, key absent
    ("PUT", "v1", {"If_None_Match": "*"}, 412),              # ... key present
    ("GET", "v1", {"If_None_Match": '"v1"'}, 304),
    ("HEAD", '"v1"', {"If_None_Match": '"v0", "v1"'}, 304),
    ("GET", "v1", {"If_None_Match": '"v2"'}, None),
    ("DELETE", "v1", {"If_None_Match": 'W/"v1"'}, 412),      # weak comparison for If-None-Match
    ("PUT", "v1", {"If_Match": '"v1"'}, None),
    ("PUT", "v1", {"If_Match": '"v2"'}, 412),
    ("PUT", None, {"If_Match": "*"}, 412),                   # nothing there to match
    ("PUT", "v1", {"If_Match": "*"}, None),
    ("PUT", "v1", {"If_Match": "garbage\x01"}, 412),
    ("PUT", "v1", {"If_Unmodified_Since": SECOND_BEFORE}, 412),
    ("PUT", "v1", {"If_Unmodified_Since": SECOND_AFTER}, None),
    ("PUT", "v1", {"If_Match": '"v1"', "If_Unmodified_Since": SECOND_BEFORE}, None),  # If-Match wins
    ("GET", "v1", {"If_Modified_Since": SECOND_AFTER}, 304),
    ("GET", "v1", {"If_Modified_Since": SECOND_BEFORE}, None),
    ("PUT", "v1", {"If_Modified_Since": SECOND_AFTER}, None),  # only for GET and HEAD
    ("GET", "v1", {"If_None_Match": '"v2"', "If_Modified_Since": SECOND_AFTER}, None),
    ("GET", "v1", {"If_Modified_Since": "not a date"}, None),
])
def test_preconditions(method, current, headers, expected):
    assert cond(method, current, **headers) == expected


@pytest.mark.parametrize("accept, expected", [
    (None, "multipart/mixed"),
    ("*/*", "multipart/mixed"),
    ("multipart/mixed, application/json, */*;q=0.5", "multipart/mixed"),  # riak-python-client
    ("text/plain", "text/plain"),
    ("text/*", "text/plain"),
    ("multipart/*;q=0.2, text/plain", "text/plain"),
    ("*/*;q=0.9, text/plain;q=0.1", "multipart/mixed"),
    ("*/*, multipart/mixed;q=0", "text/plain"),              # an explicit refusal beats the wildcard
    ("text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2", "multipart/mixed"),  # Java's default
    ("application/json", None),
    ("multipart/mixed;q=abc, text/plain", "text/plain"),
])
def test_sibling_media_type(accept, expected):
    assert sibling_media_type(accept) == expected


def test_choose_media_type_prefers_the_earlier_offer_on_a_tie():
    assert choose_media_type(["text/plain", "multipart/mixed"], "*/*") == "text/plain"
    assert choose_media_type([], "*/*") is None


def test_content_headers_for_a_single_object():
    sibling = Sibling(metadata=(("Color", "red"),), deleted=True)
    assert content_headers(sibling, b"my bucket") == [
        ("Content-Type", "text/plain"), ("Link", '</buckets/my+bucket>; rel="up"'), ("ETag", '"5mQ2x7"'),
        ("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT"), ("X-Riak-Deleted", "true"),
        ("X-Riak-Meta-Color", "red")]
    assert content_headers(Sibling(content_type=""))[0] == ("Content-Type", "application/octet-stream")
    with pytest.raises(ValueError):
        content_headers(Sibling(content_type="text/plain\r\nX-Injected: 1"))


def test_resource_map_lists_riak_resource_names():
    response = resource_map_response()
    body = json.loads(response.body)
    assert body["riak_kv_wm_buckets"] == "/buckets" and body["riak_kv_wm_ping"] == "/ping"
    assert body["riak_kv_wm_stats"] == "/stats" and body["riak_kv_wm_object"] == "/buckets"
    assert dict(response.headers)["Content-Type"] == "application/json"
    assert '</ping>; rel="riak_kv_wm_ping"' in dict(response.headers)["Link"]


def test_object_path_escapes_slashes_and_round_trips_through_the_router():
    path = object_path(b"b/1", b"k ?%/\xff")
    assert path == "/buckets/b%2F1/keys/k%20%3F%25%2F%FF"
    assert make_request("GET", path).path_segments() == (b"buckets", b"b/1", b"keys", b"k ?%/\xff")


def test_error_response_is_one_plain_line():
    response = error_response(503, "W-value unsatisfied: 1/2\nsecond line\r")
    assert response.status == 503 and dict(response.headers)["Content-Type"] == "text/plain"
    assert response.body == b"W-value unsatisfied: 1/2 second line\n"
