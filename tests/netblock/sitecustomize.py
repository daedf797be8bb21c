"""Test-only: the network off for everything but loopback, in this process and every
Python process it starts with this folder on PYTHONPATH (tests/test_beam.py: the CLI
and Beam's local worker processes). Each process writes ``loaded PID`` to the file
``KERINSPECT_TEST_NETLOG`` names, and ``refused ADDRESS`` for each connection or name
lookup it stopped: a local Beam run must refuse nothing (nothing downloaded)."""

import os
import socket

_LOG = os.environ.get("KERINSPECT_TEST_NETLOG")
_LOCAL = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "", None)


def _note(line):
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _local(host):
    host = host.decode() if isinstance(host, bytes) else host
    return host in _LOCAL or str(host).startswith("127.") or str(host) == socket.gethostname()


if _LOG:
    _note(f"loaded {os.getpid()}")
    _connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            _note(f"refused {address!r}")
            raise OSError("the network is off in this test")
        return _connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            _note(f"refused {address!r}")
            return 111
        return _connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _local(host):
            _note(f"refused {host!r}")
            raise socket.gaierror("the network is off in this test")
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
