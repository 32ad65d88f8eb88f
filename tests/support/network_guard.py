"""Network guard for the test suite: a test that tries to reach anything but this machine fails
loudly instead of hanging on a hub lookup. Installed by conftest.py; subprocesses get the offline
environment variables instead."""

from __future__ import annotations

import ipaddress
import socket

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkAccessError(RuntimeError):
    pass


def _check_address(sock: socket.socket, address: object) -> None:
    if sock.family == socket.AF_UNIX:
        return
    host = address[0] if isinstance(address, tuple) else address
    try:
        loopback = host == "localhost" or ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise NetworkAccessError(f"test tried to connect to {address!r}; only loopback is allowed")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check_address(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check_address(self, address)
    return _real_connect_ex(self, address)


def install() -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
