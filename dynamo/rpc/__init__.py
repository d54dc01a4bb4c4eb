"""Node-to-node RPC: CBOR frames over one persistent, authenticated, multiplexed TCP connection per peer.

Layers, bottom up: `frame` (sans-IO framing and message validation), `handshake` (sans-IO mutual
authentication with the cluster secret), `channel` (trio: socket I/O that yields only when it must wait;
the HTTP server uses it too), `transport` (trio: connection loops and `RpcServer`) and `pool` (trio:
`PeerPool`, the calling side: `call`, or `request` with a callback). The message types carried are the
node's business: this package moves `type: str` plus a CBOR body, and reserves the types "reply", "error",
"hello" and "proof".
"""

from dynamo.rpc.frame import FrameDecoder, FrameError, encode_frame
from dynamo.rpc.handshake import Handshake, HandshakeError, Role
from dynamo.rpc.pool import PeerPool
from dynamo.rpc.transport import (RpcError, RpcRemoteError, RpcServer, RpcTimeout, RpcUnavailable,
                                  ServerStats, UnknownType)

__all__ = [
    "FrameDecoder", "FrameError", "encode_frame",
    "Handshake", "HandshakeError", "Role",
    "PeerPool",
    "RpcError", "RpcRemoteError", "RpcServer", "RpcTimeout", "RpcUnavailable", "ServerStats", "UnknownType",
]
