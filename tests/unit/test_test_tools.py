"""The test suite's own port helper: several servers started together
(Swift's four, a registry and its debug listener) need distinct ports even
on kernels that hand the same ephemeral port to successive probes."""

import socket

from tests.e2e.tools import free_port, free_ports


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(16)
    assert len(set(ports)) == 16
    listeners = []
    try:
        for port in ports:
            listener = socket.socket()
            listeners.append(listener)
            listener.bind(("127.0.0.1", port))
    finally:
        for listener in listeners:
            listener.close()


def test_free_port_is_bindable():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
