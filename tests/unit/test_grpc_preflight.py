"""Unit: before any worker starts, the gRPC adapter's preflight check refuses a port another
process holds (every worker binds it with SO_REUSEPORT, which would share it silently), and
says nothing when gRPC is off or the port is free."""

import socket

from api.protocols import preflight
from api.protocols.oip_grpc import port_in_use
from api.settings import Settings


def test_a_held_port_is_in_use_and_a_free_one_is_not():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert port_in_use("127.0.0.1", port) is True
    assert port_in_use("127.0.0.1", port) is False


def test_an_ipv6_host_is_probed_over_ipv6():
    with socket.socket(socket.AF_INET6) as held:
        held.bind(("::1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert port_in_use("::1", port) is True
    assert port_in_use("::1", port) is False


def test_preflight_names_the_taken_port_and_the_setting():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        problem = preflight(Settings(grpc_port=port, grpc_host="127.0.0.1"))
    assert problem == (
        f"gRPC port 127.0.0.1:{port} is in use (LOCKSERVE_GRPC_PORT; 0 turns gRPC off)"
    )


def test_preflight_passes_a_free_port_and_grpc_off():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert preflight(Settings(grpc_port=port, grpc_host="127.0.0.1")) is None
    assert preflight(Settings(grpc_port=0)) is None


def test_the_grpc_host_defaults_to_the_http_servers_host(monkeypatch):
    monkeypatch.setenv("HOST", "0.0.0.0")
    assert Settings().grpc_host == "0.0.0.0"
    monkeypatch.delenv("HOST")
    assert Settings().grpc_host == "127.0.0.1"
