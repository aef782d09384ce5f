"""devstack.stack.free_port: ports below the ephemeral range, never the same one twice in a process."""
import socket

from devstack.stack import FREE_PORTS, free_port


def test_ports_are_below_the_ephemeral_range_and_never_repeated():
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(FREE_PORTS.start <= p < FREE_PORTS.stop for p in ports)
    low, _ = (int(v) for v in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    assert max(ports) < low


def test_a_port_a_server_holds_is_not_given():
    held = []
    try:
        for port in FREE_PORTS[:50]:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                held.append(s)
            except OSError:
                s.close()
        taken = {s.getsockname()[1] for s in held}
        assert not taken & {free_port() for _ in range(500)}
    finally:
        for s in held:
            s.close()
