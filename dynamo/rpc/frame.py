"""Length-prefixed CBOR frames for node-to-node RPC (sans-IO: bytes in, messages out).

Theory of operation
-------------------
A frame is a 4-byte big-endian payload length followed by exactly one CBOR map, the message:

    request   {"v": 1, "id": n,  "t": type,    "b": body}     n >= 1: the sender waits for a reply
    one-way   {"v": 1, "id": 0,  "t": type,    "b": body}     no reply is ever sent (gossip, hints)
    reply     {"v": 1, "id": n,  "t": "reply", "b": body}     answers request n
    error     {"v": 1, "id": n,  "t": "error", "e": message, "k": kind}

`FrameDecoder.feed` appends to one bytearray and walks it with an offset, so a frame that arrives in many
small reads costs linear time, and many frames in one read cost one buffer compaction. Rules it keeps:

- It raises only `FrameError`, whatever the bytes. After an error the stream has lost its framing, so the
  decoder refuses further input: the connection must be closed.
- The declared length is checked against `size_bytes_max` before any payload is buffered, so a peer cannot
  make us hold more than one frame's worth of memory.
- A payload must be one well-formed CBOR item with nothing after it, a map with the fields above. Bodies are
  plain CBOR data; the tags that build live objects or graphs (shared references, string references,
  regular expressions, MIME messages) are refused, the harmless ones (bignums, dates, sets) decode normally.
"""

import io
import struct

import cbor2

VERSION = 1
ONE_WAY_ID = 0
REPLY = "reply"
ERROR = "error"
HEADER_BYTES = 4
REQUEST_ID_MAX = 2**64 - 1

_HEADER = struct.Struct(">I")
# Tags whose decoders build more than passive data: cycles (28, 29), aliasing tables (25, 256),
# compiled regular expressions (35) and a run of the email parser (36).
_REFUSED_TAGS = (25, 28, 29, 35, 36, 256)


class FrameError(ValueError):
    """The byte stream is not a valid frame sequence (or a frame to send is too big); `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _refuse_tag(decoder, *_args):
    raise ValueError("refused CBOR tag")


_SEMANTIC_DECODERS = {tag: _refuse_tag for tag in _REFUSED_TAGS}


def request(request_id: int, type_: str, body) -> dict:
    return {"v": VERSION, "id": request_id, "t": type_, "b": body}


def one_way(type_: str, body) -> dict:
    return {"v": VERSION, "id": ONE_WAY_ID, "t": type_, "b": body}


def reply(request_id: int, body) -> dict:
    return {"v": VERSION, "id": request_id, "t": REPLY, "b": body}


def error(request_id: int, message: str, kind: str) -> dict:
    return {"v": VERSION, "id": request_id, "t": ERROR, "e": message, "k": kind}


def encode_frame(msg: dict, size_bytes_max: int | None = None) -> bytes:
    """Frame one message. Raises FrameError if the payload exceeds `size_bytes_max` (the peer would drop
    the connection on it), and cbor2's encode errors for values CBOR cannot carry."""
    payload = cbor2.dumps(msg)
    if size_bytes_max is not None and len(payload) > size_bytes_max:
        raise FrameError(f"frame of {len(payload)} bytes is over the limit of {size_bytes_max}")
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get back whole, validated messages."""

    def __init__(self, size_bytes_max: int):
        if size_bytes_max < 1:
            raise ValueError(f"size_bytes_max must be positive, got {size_bytes_max}")
        # Public and mutable: the transport keeps it small until the peer has authenticated.
        self.size_bytes_max = size_bytes_max
        self._buffer = bytearray()
        self._failed: FrameError | None = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes, frames_max: int | None = None) -> list[dict]:
        """Append `data`; return the complete messages now available, oldest first.

        With `frames_max`, stop after that many and keep the rest buffered for a later `feed(b"")`; the
        handshake uses this so that requests pipelined behind it are decoded under the post-handshake limit.
        """
        if self._failed is not None:
            raise FrameError(f"decoder already failed: {self._failed.reason}")
        buffer = self._buffer
        buffer += data
        messages: list[dict] = []
        offset = 0
        reader = None  # one decoder over the buffer for all the frames of this feed (made at the first)
        try:
            while frames_max is None or len(messages) < frames_max:
                available = len(buffer) - offset
                if available < HEADER_BYTES:
                    break
                (length,) = _HEADER.unpack_from(buffer, offset)
                if length > self.size_bytes_max:
                    raise FrameError(f"frame of {length} bytes is over the limit of {self.size_bytes_max}")
                end = offset + HEADER_BYTES + length
                if end > len(buffer):
                    break
                if reader is None:
                    reader = _Reader(bytes(buffer))
                messages.append(reader.message(offset + HEADER_BYTES, end))
                offset = end
        except FrameError as exc:
            self._failed = exc
            raise
        finally:
            # Deleting a prefix of a bytearray only moves its start pointer in CPython: no copy.
            del buffer[:offset]
        return messages


class _Reader:
    """Decodes the frames found in one snapshot of the buffer: one BytesIO and one CBOR decoder for all
    of them, instead of a copy of each payload and a decoder per frame (a visible share of a small
    request's CPU)."""

    __slots__ = ("_source", "_decoder")

    def __init__(self, data: bytes) -> None:
        self._source = io.BytesIO(data)
        self._decoder = cbor2.CBORDecoder(self._source, semantic_decoders=_SEMANTIC_DECODERS,
                                          allow_duplicate_keys=False)

    def message(self, start: int, end: int) -> dict:
        """The message whose payload is data[start:end]: exactly one CBOR item, ending at `end`."""
        source = self._source
        source.seek(start)
        try:
            msg = self._decoder.decode()
        except Exception as exc:  # any failure on untrusted bytes means "malformed", whatever its type
            raise FrameError(f"malformed CBOR: {exc}") from exc
        # The decoder leaves a seekable source right after the item it read (it reads ahead, then seeks
        # back), so the position tells whether the item filled the payload exactly: short of `end` there
        # are trailing bytes; past it, the item ran on into the next frame (or the declared length lied).
        position = source.tell()
        if position != end:
            raise FrameError("trailing bytes after the CBOR item" if position < end else
                             "the CBOR item runs past the end of its frame")
        _validate(msg)
        return msg


def _validate(msg) -> None:
    if type(msg) is not dict:
        raise FrameError(f"frame is a CBOR {type(msg).__name__}, not a map")
    version = msg.get("v")
    if type(version) is not int or version != VERSION:
        raise FrameError(f"unsupported frame version {version!r}")
    request_id = msg.get("id")
    if type(request_id) is not int or not 0 <= request_id <= REQUEST_ID_MAX:
        raise FrameError(f"bad request id {request_id!r}")
    type_ = msg.get("t")
    if type(type_) is not str or not type_:
        raise FrameError(f"bad message type {type_!r}")
    if type_ == ERROR or type_ == REPLY:
        if request_id == ONE_WAY_ID:
            raise FrameError(f"{type_} frame without a request id")
        if type_ == ERROR and (type(msg.get("e")) is not str or type(msg.get("k")) is not str):
            raise FrameError("error frame without a text message and kind")
    if type_ != ERROR and "b" not in msg:
        raise FrameError(f"{type_} frame without a body")
