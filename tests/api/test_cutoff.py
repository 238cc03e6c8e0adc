"""The cut-off of streamed answers: the socket is shut down at the deadline, in deadline order,
and a cancelled cut-off never fires."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers.waiting import wait_for

from lmstrix.api.cutoff import Cutoff


class _Stream:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for a, b in made:
        a.close()
        b.close()


def response_on(pairs: list[tuple[socket.socket, socket.socket]]) -> tuple[httpx.Response, Any]:
    ours, peer = socket.socketpair()
    pairs.append((ours, peer))
    resp = httpx.Response(200, extensions={"network_stream": _Stream(ours)})
    return resp, ours


def test_fires_at_the_deadline_and_wakes_a_blocked_read(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    resp, sock = response_on(pairs)
    cutoff = Cutoff(resp, 0.05)
    assert sock.recv(1) == b""  # blocked until the cut-off shut the socket down
    assert cutoff.fired and not cutoff.cancelled


def test_cancelled_never_fires_and_order_is_by_deadline(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    later = Cutoff(response_on(pairs)[0], 0.2)
    sooner = Cutoff(response_on(pairs)[0], 0.01)  # armed after, due first
    cancelled = Cutoff(response_on(pairs)[0], 0.05)
    cancelled.cancel()
    wait_for(lambda: later.fired, timeout=30, what="the last cut-off")
    assert sooner.fired and not cancelled.fired


def test_without_a_socket_nothing_is_armed() -> None:
    cutoff = Cutoff(httpx.Response(200), 0.0)
    cutoff.cancel()
    assert not cutoff.fired
