"""Siblings in Riak's multipart/mixed layout: exact bytes, round trips, hostile values, a client's view."""

import dataclasses
import re
from email import message_from_string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamo.http.riak import (MultipartError, decode_multipart, encode_multipart, multipart_boundary,
                              siblings_text)

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclasses.dataclass(frozen=True)
class Sibling:
    value: bytes
    content_type: str = "text/plain"
    last_modified_us: int = 1_700_000_000_000_000
    metadata: tuple = ()
    deleted: bool = False
    vtag: str = "vt"


visible = st.characters(min_codepoint=0x21, max_codepoint=0xFF)
header_text = st.builds(" ".join, st.lists(st.text(visible, min_size=1, max_size=8), max_size=3))
siblings = st.builds(
    Sibling,
    value=st.binary(max_size=200)
    | st.sampled_from([b"", b"\r\n", b"--", b"\r\n--B\r\n", b"\r\n\r\n--B--\r\n"]),
    content_type=st.sampled_from(["text/plain", "application/json; charset=utf-8", "image/png"]),
    last_modified_us=st.integers(min_value=0, max_value=4_102_444_800_000_000),
    metadata=st.lists(st.tuples(st.text(TOKEN_CHARS, min_size=1, max_size=10), header_text), max_size=3)
    .map(tuple),
    deleted=st.booleans(),
    vtag=st.text("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=27),
)


def floor_to_second(sibling):
    return dataclasses.replace(sibling, last_modified_us=sibling.last_modified_us // 1_000_000 * 1_000_000)


def as_tuple(sibling):
    return (sibling.value, sibling.content_type, sibling.last_modified_us, sibling.metadata, sibling.deleted,
            sibling.vtag)


@given(st.lists(siblings, max_size=5), st.text("0123456789abcdefXYZ-", min_size=1, max_size=4))
def test_multipart_round_trip(parts, boundary):
    content_type, body = encode_multipart(parts, boundary=boundary)
    chosen = multipart_boundary(content_type)
    assert all(chosen.encode() not in part.value for part in parts)
    decoded = decode_multipart(content_type, body)
    assert [as_tuple(part) for part in decoded] == [as_tuple(floor_to_second(part)) for part in parts]


@given(st.lists(siblings, min_size=1, max_size=3), st.data())
def test_values_holding_the_requested_boundary_force_another(parts, data):
    boundary = "rIaKbOuNdArY"
    index = data.draw(st.integers(0, len(parts) - 1))
    hostile_value = parts[index].value + b"\r\n--" + boundary.encode() + b"--\r\n"
    hostile = dataclasses.replace(parts[index], value=hostile_value)
    parts[index] = hostile
    content_type, body = encode_multipart(parts, boundary=boundary)
    assert multipart_boundary(content_type) != boundary
    assert decode_multipart(content_type, body)[index].value == hostile.value


def test_exact_layout_matches_riak():
    parts = [Sibling(b"one", metadata=(("Color", "red"),), vtag="a1"),
             Sibling(b"", content_type="application/json", deleted=True, vtag="b2")]
    content_type, body = encode_multipart(parts, boundary="B0und", bucket=b"things")
    assert content_type == "multipart/mixed; boundary=B0und"
    assert body == (
        b"\r\n--B0und\r\n"
        b"Content-Type: text/plain\r\n"
        b'Link: </buckets/things>; rel="up"\r\n'
        b"Etag: a1\r\n"
        b"Last-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
        b"X-Riak-Meta-Color: red\r\n"
        b"\r\n"
        b"one"
        b"\r\n--B0und\r\n"
        b"Content-Type: application/json\r\n"
        b'Link: </buckets/things>; rel="up"\r\n'
        b"Etag: b2\r\n"
        b"Last-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
        b"X-Riak-Deleted: true\r\n"
        b"\r\n"
        b"\r\n--B0und--\r\n")


def test_riak_python_clients_parser_reads_our_body():
    """The split riak-python-client applies (regex on the delimiter, email parser per part)."""
    parts = [Sibling(b"first", metadata=(("Color", "red"),), vtag="a1"), Sibling(b"second", vtag="b2")]
    content_type, body = encode_multipart(parts)
    boundary = re.compile(r"\r?\n--%s(?:--)?\r?\n" % re.escape(multipart_boundary(content_type)))
    messages = [message_from_string(piece) for piece in re.split(boundary, body.decode())[1:-1]]
    assert [message.get_payload() for message in messages] == ["first", "second"]
    assert [message["etag"] for message in messages] == ["a1", "b2"]
    assert messages[0]["x-riak-meta-color"] == "red"


def test_derived_boundary_is_deterministic():
    parts = [Sibling(b"x"), Sibling(b"y")]
    assert encode_multipart(parts) == encode_multipart(parts)
    assert encode_multipart(parts)[0] != encode_multipart([Sibling(b"z")])[0]


def test_decoder_takes_what_rfc_2046_allows():
    body = (b"preamble\r\n--q  \r\nContent-Type: text/plain\r\nX-Riak-Meta-K: a\r\n  b\r\n\r\nv1"
            b"\r\n--q\r\n\r\nheaderless\r\n--q--\r\nepilogue")
    first, second = decode_multipart('multipart/mixed; charset=x; boundary="q"', body)
    assert (first.value, first.metadata, first.content_type) == (b"v1", (("K", "a b"),), "text/plain")
    assert (second.value, second.content_type, second.vtag, second.last_modified_us) == (
        b"headerless", "application/octet-stream", "", 0)
    assert decode_multipart("multipart/mixed; boundary=q", b"--q\r\n\r\nv\r\n--q--")[0].value == b"v"


@pytest.mark.parametrize("content_type, body", [
    ("text/plain", b""),
    ("multipart/mixed", b"\r\n--q\r\n\r\nv\r\n--q--\r\n"),
    ("multipart/mixed; boundary=q", b"no delimiter at all"),
    ("multipart/mixed; boundary=q", b"\r\n--q\r\n\r\nnever closed"),
    ("multipart/mixed; boundary=q", b"\r\n--q\r\nno blank line after headers"),
    ("multipart/mixed; boundary=q", b"\r\n--q\r\nbad header line\r\n\r\nv\r\n--q--\r\n"),
    ("multipart/mixed; boundary=q", b"\r\n--qjunk\r\n\r\nv\r\n--q--\r\n"),
    ("multipart/mixed; boundary=q", b"\r\n--q\r\nLast-Modified: soon\r\n\r\nv\r\n--q--\r\n"),
])
def test_decoder_refuses_malformed_input(content_type, body):
    with pytest.raises(MultipartError):
        decode_multipart(content_type, body)


def test_encoder_refuses_what_cannot_be_sent():
    with pytest.raises(ValueError):
        encode_multipart([Sibling(b"v", metadata=(("k", "a\r\nInjected: 1"),))])
    with pytest.raises(ValueError):
        encode_multipart([Sibling(b"v")], boundary="bad\r\nboundary")


def test_siblings_text_is_riaks_plain_list():
    assert siblings_text(["a1", "b2"]) == b"Siblings:\na1\nb2\n"
