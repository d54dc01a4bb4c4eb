"""Handshake: both ends authenticate; wrong secrets, clusters, reflections and tampering are refused."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamo.rpc import frame
from dynamo.rpc.handshake import Handshake, HandshakeError, Role, State

NONCE_C, NONCE_S, NONCE_M = b"c" * 16, b"s" * 16, b"m" * 16


def pair(client_secret=b"k", server_secret=b"k", client_cluster="prod", server_cluster="prod",
         expected="B"):
    client = Handshake(Role.CLIENT, "A", client_cluster, client_secret, NONCE_C, expected_peer_id=expected)
    server = Handshake(Role.SERVER, "B", server_cluster, server_secret, NONCE_S)
    return client, server


def exchange(client, server):
    """Deliver messages both ways until neither end has anything to say (as two sockets would)."""
    to_server, to_client = [client.hello()], [server.hello()]
    while to_server or to_client:
        if to_server:
            to_client += server.receive(to_server.pop(0))
        if to_client:
            to_server += client.receive(to_client.pop(0))


def test_success_both_ways():
    client, server = pair()
    exchange(client, server)
    assert client.done and server.done
    assert client.peer_id == "B" and server.peer_id == "A"


def test_str_secret_equals_its_utf8_bytes():
    client, server = pair(client_secret="sécret", server_secret="sécret".encode())
    exchange(client, server)
    assert client.done and server.done


def test_wrong_secret_is_caught_by_both_ends():
    client, server = pair(client_secret=b"k", server_secret=b"other")
    client_proof = client.receive(server.hello())
    server_proof = server.receive(client.hello())
    with pytest.raises(HandshakeError, match="bad proof"):
        server.receive(client_proof[0])
    with pytest.raises(HandshakeError, match="bad proof"):
        client.receive(server_proof[0])
    assert client.state is server.state is State.FAILED


def test_wrong_cluster():
    client, server = pair(client_cluster="prod", server_cluster="staging")
    with pytest.raises(HandshakeError, match="cluster"):
        server.receive(client.hello())
    with pytest.raises(HandshakeError, match="cluster"):
        client.receive(server.hello())


def test_proof_reflected_to_a_client_is_refused():
    """Mallory (no secret) poses as server B and hands the client its own proof back."""
    client, _ = pair()
    mallory = {"v": 1, "id": 0, "t": "hello", "b": {"cluster": "prod", "node": "B", "nonce": NONCE_M,
                                                      "proto": 1}}
    [client_proof] = client.receive(mallory)
    with pytest.raises(HandshakeError, match="bad proof"):
        client.receive(client_proof)


def test_proof_reflected_to_a_server_is_refused():
    """Mallory poses as node A to server B and returns the server's own proof as the client's."""
    _, server = pair()
    mallory = {"v": 1, "id": 0, "t": "hello", "b": {"cluster": "prod", "node": "A", "nonce": NONCE_M,
                                                      "proto": 1}}
    [server_proof] = server.receive(mallory)
    with pytest.raises(HandshakeError, match="bad proof"):
        server.receive(server_proof)


def test_proof_replayed_on_a_new_connection_is_refused():
    first_client = Handshake(Role.CLIENT, "A", "prod", b"k", NONCE_C)
    old_server = Handshake(Role.SERVER, "B", "prod", b"k", NONCE_S)
    [old_proof] = first_client.receive(old_server.hello())
    fresh_server = Handshake(Role.SERVER, "B", "prod", b"k", b"t" * 16)
    fresh_server.receive(first_client.hello())  # same client hello, new server nonce
    with pytest.raises(HandshakeError, match="bad proof"):
        fresh_server.receive(old_proof)


@pytest.mark.parametrize("victim", ["client", "server"])
def test_tampered_nonce_breaks_both_proofs(victim):
    client, server = pair()
    client_hello, server_hello = client.hello(), server.hello()
    tampered = client_hello if victim == "client" else server_hello
    tampered["b"]["nonce"] = bytes(16)
    [client_proof] = client.receive(server_hello)
    [server_proof] = server.receive(client_hello)
    with pytest.raises(HandshakeError, match="bad proof"):
        server.receive(client_proof)
    with pytest.raises(HandshakeError, match="bad proof"):
        client.receive(server_proof)


def test_peer_must_be_the_node_we_dialled():
    client, server = pair(expected="C")
    with pytest.raises(HandshakeError, match="expected 'C'"):
        client.receive(server.hello())


def test_peer_claiming_our_id_or_echoing_our_nonce_is_refused():
    server = Handshake(Role.SERVER, "B", "prod", b"k", NONCE_S)
    with pytest.raises(HandshakeError, match="own node id"):
        server.receive(Handshake(Role.CLIENT, "B", "prod", b"k", NONCE_C).hello())
    server = Handshake(Role.SERVER, "B", "prod", b"k", NONCE_S)
    with pytest.raises(HandshakeError, match="nonce"):
        server.receive(Handshake(Role.CLIENT, "A", "prod", b"k", NONCE_S).hello())


def test_out_of_order_and_late_messages():
    client, server = pair()
    with pytest.raises(HandshakeError, match="expected hello"):
        server.receive(frame.one_way("proof", {"mac": b"x" * 32}))
    with pytest.raises(HandshakeError, match="failed"):
        server.receive(client.hello())
    client, server = pair()
    exchange(client, server)
    with pytest.raises(HandshakeError, match="done"):
        server.receive(client.hello())


def test_other_protocol_version():
    client, server = pair()
    hello = client.hello()
    hello["b"]["proto"] = 2
    with pytest.raises(HandshakeError, match="protocol"):
        server.receive(hello)


@given(st.dictionaries(st.sampled_from(["cluster", "node", "nonce", "proto", "mac", "x"]),
                       st.none() | st.integers() | st.text(max_size=5) | st.binary(max_size=40)),
       st.sampled_from(["hello", "proof", "other"]))
def test_arbitrary_bodies_fail_only_with_handshake_error(body, type_):
    server = Handshake(Role.SERVER, "B", "prod", b"k", NONCE_S)
    try:
        server.receive(frame.one_way(type_, body))
        server.receive(frame.one_way("proof", body))
    except HandshakeError:
        return
    pytest.fail("a handshake without the secret completed")


@pytest.mark.parametrize("kwargs", [dict(secret=b""), dict(secret=None), dict(nonce=b"short"),
                                    dict(node_id=""), dict(cluster="")])
def test_bad_arguments(kwargs):
    args = dict(role=Role.CLIENT, node_id="A", cluster="prod", secret=b"k", nonce=NONCE_C) | kwargs
    with pytest.raises(ValueError):
        Handshake(**args)
