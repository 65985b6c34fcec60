"""``free_port``: a port for a local server, drawn where no outgoing connection can take it first."""

from __future__ import annotations

import random
import socket

import pytest

from infaas.adapters.local.processes import ephemeral_ports, free_port


def test_the_port_is_free_and_outside_the_range_outgoing_connections_take_their_ports_from():
    eph = ephemeral_ports()
    for seed in range(20):
        port = free_port(rng=random.Random(seed))
        assert port not in eph
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free indeed


def test_a_port_a_server_holds_is_passed_over():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]

        class First(random.Random):  # draws the held port first
            def sample(self, population, k):
                return [taken, *super().sample(population, k - 1)]

        port = free_port(rng=First(0))
        assert port != taken and port not in ephemeral_ports()


def test_the_range_is_read_from_the_kernel_and_linuxs_default_stands_in(tmp_path):
    f = tmp_path / "range"
    f.write_text("40000\t40100\n")
    assert ephemeral_ports(str(f)) == range(40000, 40101)
    assert ephemeral_ports(str(tmp_path / "missing")) == range(32768, 61000)


def test_a_worker_binds_its_own_port_so_no_other_process_can_take_it_first():
    """``python -m infaas.worker`` without ``--port`` binds port 0 and serves on the socket it holds:
    the port is its own from the moment it is chosen."""
    from infaas.worker.server import listen_socket

    tcp = listen_socket("127.0.0.1", 0)
    try:
        port = tcp.getsockname()[1]
        assert port > 0
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))  # already the worker's
    finally:
        tcp.close()


def test_a_worker_given_a_port_another_process_holds_says_so(tmp_path):
    import subprocess
    import sys

    from infaas.worker.server import listen_socket

    held = listen_socket("127.0.0.1", 0)
    try:
        port = held.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "infaas.worker", "--port", str(port), "--data-dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
    finally:
        held.close()
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr, done.stderr
