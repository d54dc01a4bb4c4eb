"""Byte I/O on a connected TCP socket that yields to trio only when the kernel makes it wait.

Theory of operation
-------------------
trio's `SocketStream.receive_some` and `send_all` are checkpoints every time: each successful call also
passes through the scheduler, with the cancellation and error-translation wrappers around it. A connection
loop that reads a batch of frames, or writes one, pays that twice per wake-up, and on this store's small
messages it was a visible share of a request's CPU. `SocketChannel` offers the same two calls over a
private duplicate of the stream's socket: `recv` and `send` are tried at once, and the task waits
(`trio.lowlevel.wait_readable` / `wait_writable`, public trio API) only when the kernel says EAGAIN.

Rules it keeps:
- Fairness: a reader that always finds data would never yield. `receive_some` therefore checkpoints before
  reading when the previous read also found data without waiting, so a flooding peer costs the loop one
  scheduler pass every other read, and the common read-process-wait cycle costs none.
- `send_all` returns once the kernel has every byte; it only waits (and so only checkpoints) on a full
  socket buffer. Its caller (the outbox writer) parks right after, which is its yield. `send_nowait` is
  the part of it that never waits: a reader flushing its own answers uses it (transport.Outbox.flush).
- Errors come out as trio's stream errors (BrokenResourceError, ClosedResourceError), so connection loops
  handle both kinds of channel the same way. End of stream is b"", as with trio.
- The duplicate is closed (after `notify_closing`, as trio requires for a descriptor it may be watching)
  by `close`; the stream itself stays open and belongs to whoever opened it.

`open_channel(stream)` gives a SocketChannel for a trio SocketStream and the stream itself otherwise (memory
streams in tests), so callers need not care which one they hold.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

import trio

RECEIVE_BYTES_MAX = 65536


class SocketChannel:
    """receive_some / send_all / close on a duplicate of a connected socket's descriptor."""

    __slots__ = ("_sock", "_read_without_wait")

    def __init__(self, stream_socket: Any) -> None:
        self._sock = socket.socket(fileno=os.dup(stream_socket.fileno()))
        self._sock.setblocking(False)
        self._read_without_wait = False

    async def receive_some(self, max_bytes: int = RECEIVE_BYTES_MAX) -> bytes:
        if max_bytes < 1:  # recv(0) would read as the end of the stream
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        sock = self._sock
        if self._read_without_wait:  # the last read found data at once: let the others run first
            self._read_without_wait = False
            await trio.lowlevel.checkpoint()
        waited = False
        while True:
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:
                waited = True
                await self._wait(trio.lowlevel.wait_readable)
                continue
            except OSError as exc:
                raise _stream_error(exc) from exc
            self._read_without_wait = not waited
            return data

    async def send_all(self, data: bytes) -> None:
        sock = self._sock
        with memoryview(data) as view:
            sent = 0
            while sent < len(view):
                try:
                    sent += sock.send(view[sent:])
                except BlockingIOError:
                    await self._wait(trio.lowlevel.wait_writable)
                except OSError as exc:
                    raise _stream_error(exc) from exc

    def send_nowait(self, data: bytes) -> int:
        """Send what the kernel takes at once, never waiting: the number of bytes sent, 0 when its buffer
        is full. For a writer that hands the rest to `send_all` (see transport.Outbox.flush)."""
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise _stream_error(exc) from exc

    async def _wait(self, wait_fn) -> None:
        if self._sock.fileno() < 0:
            raise trio.ClosedResourceError("the channel is closed")
        try:
            await wait_fn(self._sock)
        except trio.ClosedResourceError:
            raise
        except OSError as exc:
            raise _stream_error(exc) from exc

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()


def _stream_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the channel is closed")
    return trio.BrokenResourceError(f"socket error: {exc!r}")


def open_channel(stream: Any) -> Any:
    """A SocketChannel for a trio SocketStream; any other stream is returned as it is."""
    if isinstance(stream, trio.SocketStream):
        return SocketChannel(stream.socket)
    return stream


def close_channel(channel: Any) -> None:
    if isinstance(channel, SocketChannel):
        channel.close()
