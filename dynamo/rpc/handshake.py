"""Mutual authentication of a fresh RPC connection (sans-IO state machine, messages in and out).

Theory of operation
-------------------
Both ends send a hello as soon as the connection is up:

    {"t": "hello", "b": {"cluster": name, "node": node id, "nonce": 16 fresh bytes, "proto": 1}}

When an end has the peer's hello it checks the cluster name, the protocol version and (on the dialling side)
that the peer is the node it meant to reach, then sends a proof of the shared cluster secret:

    {"t": "proof", "b": {"mac": HMAC-SHA256(secret, transcript(role of the sender))}}
    transcript(role) = CBOR [label, role, cluster, client id, server id, client nonce, server nonce]

and checks the peer's proof against the transcript for the peer's role with `hmac.compare_digest`.

Why it holds: both fresh nonces are in the transcript, so a proof recorded on one connection is worthless on
the next; the sender's role is in it, so a client's proof reflected back as the server's proof (or the other
way) does not verify; both node ids are in it, so a proof is bound to who is talking to whom. A peer that
echoes our own nonce or claims our own node id is refused outright. This authenticates the ends only: it
does not encrypt or sign the frames that follow.

States: HELLO_WAIT -> PROOF_WAIT -> DONE. Any check that fails raises HandshakeError with a reason and
leaves the machine FAILED; every later call raises again. Nonces come in as arguments (the driver passes
os.urandom(16)), so the machine is deterministic under test.
"""

import enum
import hashlib
import hmac

import cbor2

from dynamo.rpc import frame

PROTOCOL_VERSION = 1
NONCE_BYTES = 16
MAC_BYTES = 32
NODE_ID_CHARS_MAX = 255
HELLO = "hello"
PROOF = "proof"
_LABEL = "dynamo-rpc-handshake"


class Role(enum.Enum):
    CLIENT = "client"  # dialled the connection
    SERVER = "server"  # accepted it


class State(enum.Enum):
    HELLO_WAIT = "hello_wait"
    PROOF_WAIT = "proof_wait"
    DONE = "done"
    FAILED = "failed"


class HandshakeError(ValueError):
    """The peer failed to authenticate (or broke the handshake protocol); `reason` says how."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _as_secret(secret) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes) or not secret:
        raise ValueError("the cluster secret must be non-empty bytes or str")
    return secret


def _check_node_id(node_id) -> None:
    if not isinstance(node_id, str) or not 0 < len(node_id) <= NODE_ID_CHARS_MAX:
        raise ValueError(f"node id must be a non-empty str of at most {NODE_ID_CHARS_MAX} chars: {node_id!r}")


class Handshake:
    """One end of one handshake. `hello()` gives the first message; feed each peer message to `receive`
    and send what it returns; when `done`, `peer_id` is the authenticated peer."""

    def __init__(self, role: Role, node_id: str, cluster: str, secret, nonce: bytes,
                 expected_peer_id: str | None = None):
        _check_node_id(node_id)
        if not isinstance(cluster, str) or not cluster:
            raise ValueError(f"cluster name must be a non-empty str: {cluster!r}")
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
        self.role = role
        self.node_id = node_id
        self.cluster = cluster
        self._secret = _as_secret(secret)
        self._nonce = nonce
        self.expected_peer_id = expected_peer_id
        self.state = State.HELLO_WAIT
        self.peer_id: str | None = None
        self._peer_nonce: bytes | None = None

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    def hello(self) -> dict:
        body = {"cluster": self.cluster, "node": self.node_id, "nonce": self._nonce, "proto": PROTOCOL_VERSION}
        return frame.one_way(HELLO, body)

    def receive(self, msg: dict) -> list[dict]:
        """Take one decoded frame from the peer; return the messages to send. Raises HandshakeError."""
        try:
            if self.state is State.HELLO_WAIT:
                return self._receive_hello(msg)
            if self.state is State.PROOF_WAIT:
                self._receive_proof(msg)
                return []
        except HandshakeError:
            self.state = State.FAILED
            raise
        raise HandshakeError(f"handshake is {self.state.value}, got another message")

    def _receive_hello(self, msg: dict) -> list[dict]:
        body = _body_of(msg, HELLO)
        proto = body.get("proto")
        if type(proto) is not int or proto != PROTOCOL_VERSION:
            raise HandshakeError(f"peer speaks protocol {proto!r}, we speak {PROTOCOL_VERSION}")
        cluster, peer_id, nonce = body.get("cluster"), body.get("node"), body.get("nonce")
        if cluster != self.cluster:
            raise HandshakeError(f"peer is in cluster {cluster!r}, we are in {self.cluster!r}")
        if not isinstance(peer_id, str) or not 0 < len(peer_id) <= NODE_ID_CHARS_MAX:
            raise HandshakeError(f"bad peer node id {peer_id!r}")
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise HandshakeError("bad peer nonce")
        if peer_id == self.node_id:
            raise HandshakeError(f"peer claims our own node id {peer_id!r}")
        if self.expected_peer_id is not None and peer_id != self.expected_peer_id:
            raise HandshakeError(f"peer is {peer_id!r}, expected {self.expected_peer_id!r}")
        if hmac.compare_digest(nonce, self._nonce):
            raise HandshakeError("peer echoed our nonce")
        self.peer_id, self._peer_nonce = peer_id, nonce
        self.state = State.PROOF_WAIT
        return [frame.one_way(PROOF, {"mac": self._mac(self.role)})]

    def _receive_proof(self, msg: dict) -> None:
        mac = _body_of(msg, PROOF).get("mac")
        if not isinstance(mac, bytes) or len(mac) != MAC_BYTES:
            raise HandshakeError("malformed proof")
        peer_role = Role.SERVER if self.role is Role.CLIENT else Role.CLIENT
        if not hmac.compare_digest(mac, self._mac(peer_role)):
            raise HandshakeError(f"bad proof from {self.peer_id!r} (wrong cluster secret?)")
        self.state = State.DONE

    def _mac(self, role: Role) -> bytes:
        assert self.peer_id is not None and self._peer_nonce is not None
        if self.role is Role.CLIENT:
            client_id, server_id, client_nonce, server_nonce = (
                self.node_id, self.peer_id, self._nonce, self._peer_nonce)
        else:
            client_id, server_id, client_nonce, server_nonce = (
                self.peer_id, self.node_id, self._peer_nonce, self._nonce)
        # A CBOR array is an unambiguous encoding of the fields: no separator games between ids.
        transcript = cbor2.dumps([_LABEL, role.value, self.cluster, client_id, server_id,
                                  client_nonce, server_nonce])
        return hmac.new(self._secret, transcript, hashlib.sha256).digest()


def _body_of(msg: dict, expected_type: str) -> dict:
    if msg.get("t") != expected_type:
        raise HandshakeError(f"expected {expected_type}, got {msg.get('t')!r}")
    body = msg.get("b")
    if not isinstance(body, dict):
        raise HandshakeError(f"{expected_type} body is not a map")
    return body
