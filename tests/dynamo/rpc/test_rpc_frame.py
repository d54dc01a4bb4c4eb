"""Frames: round trips, arbitrary read boundaries, limits, and that feed() fails only with FrameError."""

import struct

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo.rpc import frame
from dynamo.rpc.frame import FrameDecoder, FrameError, encode_frame

LIMIT = 1 << 20

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
           | st.text(max_size=20) | st.binary(max_size=40))
bodies = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=8) | st.integers(0, 1000), inner, max_size=5),
                      max_leaves=25)
types = st.text(min_size=1, max_size=12).filter(lambda t: t not in (frame.REPLY, frame.ERROR))
messages = st.one_of(
    st.builds(frame.request, st.integers(1, frame.REQUEST_ID_MAX), types, bodies),
    st.builds(frame.one_way, types, bodies),
    st.builds(frame.reply, st.integers(1, frame.REQUEST_ID_MAX), bodies),
    st.builds(frame.error, st.integers(1, 2**32), st.text(max_size=30), st.text(max_size=10)),
)


def raw_frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


@given(st.lists(messages, min_size=1, max_size=8))
def test_round_trip_in_one_feed(msgs):
    data = b"".join(encode_frame(m) for m in msgs)
    assert FrameDecoder(LIMIT).feed(data) == msgs


@given(messages)
def test_split_at_every_byte_boundary(msg):
    data = encode_frame(msg) + encode_frame(frame.one_way("tail", 1))
    for cut in range(len(data) + 1):
        decoder = FrameDecoder(LIMIT)
        out = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert out == [msg, frame.one_way("tail", 1)]
        assert decoder.buffered_bytes == 0


def test_byte_by_byte_and_many_frames_in_one_feed():
    msgs = [frame.request(i, "put", {"k": b"x" * (i % 50), "i": i}) for i in range(1, 301)]
    data = b"".join(encode_frame(m) for m in msgs)
    decoder = FrameDecoder(LIMIT)
    trickled = [m for b in range(len(data)) for m in decoder.feed(data[b:b + 1])]
    assert trickled == msgs
    assert FrameDecoder(LIMIT).feed(data) == msgs


def test_frames_max_leaves_the_rest_buffered():
    msgs = [frame.one_way("a", 1), frame.request(7, "b", 2), frame.reply(7, 3)]
    decoder = FrameDecoder(LIMIT)
    assert decoder.feed(b"".join(encode_frame(m) for m in msgs), frames_max=1) == msgs[:1]
    assert decoder.feed(b"", frames_max=1) == msgs[1:2]
    assert decoder.feed(b"") == msgs[2:]


def test_oversize_is_refused_from_the_header_alone():
    decoder = FrameDecoder(100)
    with pytest.raises(FrameError, match="over the limit"):
        decoder.feed(struct.pack(">I", 101))
    with pytest.raises(FrameError, match="already failed"):  # the stream has lost its framing
        decoder.feed(encode_frame(frame.one_way("x", 1)))
    at_limit = frame.one_way("x", b"")
    at_limit["b"] = b"y" * (100 - len(cbor2.dumps(at_limit)) - 1)  # 2-byte string head
    assert len(cbor2.dumps(at_limit)) == 100
    assert FrameDecoder(100).feed(encode_frame(at_limit)) == [at_limit]


def test_encode_refuses_what_the_peer_would_refuse():
    with pytest.raises(FrameError, match="over the limit"):
        encode_frame(frame.one_way("x", b"y" * 200), size_bytes_max=100)


@pytest.mark.parametrize("payload, reason", [
    (b"\xff\xff", "malformed"),
    (b"\x61\xff", "malformed"),                                   # bad UTF-8
    (cbor2.dumps([1, 2]), "not a map"),
    (cbor2.dumps({"id": 1, "t": "x", "b": 1}), "version"),
    (cbor2.dumps({"v": 2, "id": 1, "t": "x", "b": 1}), "version"),
    (cbor2.dumps({"v": True, "id": 1, "t": "x", "b": 1}), "version"),
    (cbor2.dumps({"v": 1, "id": -1, "t": "x", "b": 1}), "request id"),
    (cbor2.dumps({"v": 1, "id": "1", "t": "x", "b": 1}), "request id"),
    (cbor2.dumps({"v": 1, "id": 2**64, "t": "x", "b": 1}), "request id"),
    (cbor2.dumps({"v": 1, "id": 1, "t": 5, "b": 1}), "message type"),
    (cbor2.dumps({"v": 1, "id": 1, "t": "", "b": 1}), "message type"),
    (cbor2.dumps({"v": 1, "id": 1, "t": "x"}), "without a body"),
    (cbor2.dumps({"v": 1, "id": 0, "t": "reply", "b": 1}), "without a request id"),
    (cbor2.dumps({"v": 1, "id": 3, "t": "error", "b": 1}), "error frame"),
    (cbor2.dumps(frame.one_way("x", 1)) + b"\x00", "trailing"),
    (cbor2.dumps(frame.one_way("x", cbor2.CBORTag(35, "(a+)+$"))), "malformed"),   # regex
    (cbor2.dumps(frame.one_way("x", cbor2.CBORTag(28, [1]))), "malformed"),       # shared reference
    (b"\xa2\x61v\x01\x61v\x01", "malformed"),                                      # duplicate key
    (b"\x81" * 1000 + b"\x00", "malformed"),                                       # nesting bomb
])
def test_garbage_is_a_frame_error(payload, reason):
    with pytest.raises(FrameError, match=reason):
        FrameDecoder(LIMIT).feed(raw_frame(payload))


def test_harmless_tags_decode():
    msg = frame.one_way("x", {"big": 2**100, "set": {1, 2}})
    assert FrameDecoder(LIMIT).feed(encode_frame(msg)) == [msg]


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=6), st.integers(8, 64))
def test_any_bytes_give_messages_or_frame_error(chunks, limit):
    decoder = FrameDecoder(limit)
    try:
        for chunk in chunks:
            for msg in decoder.feed(chunk):
                assert type(msg) is dict and msg["v"] == 1
    except FrameError:
        pass


@given(st.binary(max_size=200))
def test_any_payload_behind_a_valid_header(payload):
    try:
        msgs = FrameDecoder(LIMIT).feed(raw_frame(payload))
    except FrameError:
        return
    assert len(msgs) == 1 and type(msgs[0]) is dict


@given(messages, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_frames_give_messages_or_frame_error(msg, corruptions):
    data = bytearray(encode_frame(msg))
    for index, value in corruptions:
        data[index % len(data)] = value
    try:
        out = FrameDecoder(LIMIT).feed(bytes(data))
    except FrameError:
        return
    assert all(type(m) is dict for m in out)


def test_bad_limit_is_refused():
    with pytest.raises(ValueError):
        FrameDecoder(0)


def test_an_item_longer_than_its_frame_does_not_borrow_the_next_frames_bytes():
    """Frames decoded from one read share a decoder over the buffer: a payload cut short by its declared
    length must fail, not finish its item with the bytes of the frame behind it."""
    whole = cbor2.dumps(frame.one_way("x", b"a" * 40))
    cut = raw_frame(whole[:-8])  # the bytes string's last 8 bytes fall outside the frame
    behind = encode_frame(frame.one_way("y", b"b" * 40))
    with pytest.raises(FrameError, match="runs past|malformed"):
        FrameDecoder(LIMIT).feed(cut + behind)
    messages = [frame.one_way("x", i) for i in range(5)]
    assert FrameDecoder(LIMIT).feed(b"".join(encode_frame(m) for m in messages)) == messages
