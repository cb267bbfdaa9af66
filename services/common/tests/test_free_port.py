"""``pacs_common.local.free_port`` never hands out one port twice in a process, even when the
kernel offers it again (it may, once the probing socket is closed)."""

from __future__ import annotations

import socket
from typing import Any, ClassVar

import pytest
from pacs_common import local


class _KernelOffering:
    """A socket whose ``bind(0)`` gets the next port of a fixed sequence."""

    offers: ClassVar[list[int]] = []

    def __init__(self, *_args: Any) -> None:
        self.port = 0

    def __enter__(self) -> _KernelOffering:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def bind(self, _address: tuple[str, int]) -> None:
        self.port = self.offers.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_a_port_offered_again_is_not_handed_out_again(monkeypatch: pytest.MonkeyPatch) -> None:
    first = local.free_port()  # a real one, remembered
    # Port 1 is below the kernel's ephemeral range: bind(0) never gave it to anyone before.
    _KernelOffering.offers = [first, first, 1]
    monkeypatch.setattr(local.socket, "socket", _KernelOffering)

    second = local.free_port()

    assert second == 1  # it asked the kernel again until it got a port never handed out
    assert not _KernelOffering.offers


def test_ports_handed_out_are_real_and_distinct() -> None:
    ports = [local.free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # free indeed
