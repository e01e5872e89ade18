"""SocketChannel over a real socket pair: what a worker reads, in what order, and when."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from shoal._errors import ShoalError
from shoal._runtime import protocol
from shoal._runtime.channels import SocketChannel


@pytest.fixture
def pair() -> Iterator[tuple[SocketChannel, socket.socket]]:
    ours, theirs = socket.socketpair()
    try:
        yield SocketChannel(ours, None), theirs
    finally:
        ours.close()
        theirs.close()


def test_a_reply_is_found_behind_jobs_that_stay_queued_in_order(
    pair: tuple[SocketChannel, socket.socket],
) -> None:
    channel, driver = pair
    # Jobs sent ahead arrive before the reply, all in one read.
    driver.sendall(
        protocol.frame({"op": "run", "n": 1})
        + protocol.frame({"op": "run", "n": 2})
        + protocol.frame({"id": 1, "ok": "value"})
    )
    assert channel.request("globals.get", {"key": "w"}) == "value"
    assert protocol.recv(driver)["op"] == "globals.get"
    assert [channel.next_message()["n"] for _ in range(2)] == [1, 2]


def test_take_arrived_returns_what_is_there_without_waiting(
    pair: tuple[SocketChannel, socket.socket],
) -> None:
    channel, driver = pair
    t = time.monotonic()
    assert channel.take_arrived("versions") == []
    assert time.monotonic() - t < 1.0
    driver.sendall(
        protocol.frame({"op": "run", "n": 1})
        + protocol.frame({"op": "versions", "epoch": 1})
        + protocol.frame({"op": "run", "n": 2})
        + protocol.frame({"op": "versions", "epoch": 2})
    )
    taken = channel.take_arrived("versions")
    assert [m["epoch"] for m in taken] == [1, 2]
    assert [channel.next_message()["n"] for _ in range(2)] == [1, 2]


def test_take_arrived_takes_more_than_one_read_holds() -> None:
    ours, driver = socket.socketpair()
    with ours, driver:
        channel = SocketChannel(ours, None, read_size=1024)
        # ~10 KB of jobs (ten reads' worth), then the update that must be seen.
        jobs = [protocol.frame({"op": "run", "n": i, "pad": "x" * 1000}) for i in range(10)]
        driver.sendall(b"".join(jobs) + protocol.frame({"op": "versions", "epoch": 9}))
        assert [m["epoch"] for m in channel.take_arrived("versions")] == [9]
        assert [channel.next_message()["n"] for _ in range(10)] == list(range(10))


def test_frames_that_arrived_before_the_other_end_closed_are_still_read(
    pair: tuple[SocketChannel, socket.socket],
) -> None:
    channel, driver = pair
    driver.sendall(protocol.frame({"op": "run", "n": 1}))
    driver.close()
    assert channel.take_arrived("versions") == []  # the close is not an error here
    assert channel.next_message() == {"op": "run", "n": 1}
    with pytest.raises(protocol.ChannelClosed):
        channel.next_message()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (protocol._LEN.pack(3) + b"\x92\x01\x02", "not a map"),  # [1, 2], not a map
        (protocol._LEN.pack(3) + b"\x93\x01\x02", "malformed frame"),  # not msgpack
        (protocol._LEN.pack(protocol.MAX_FRAME + 1), "exceeds the bound"),
    ],
)
def test_a_bad_frame_breaks_the_stream_after_the_good_ones(data: bytes, match: str) -> None:
    reader = protocol.FrameReader()
    good = protocol.frame({"op": "done", "n": 1})
    assert reader.feed(good + data + good) == [{"op": "done", "n": 1}]
    assert reader.broken is not None and reader.broken.code == "channel.frame"
    assert match in reader.broken.message
    assert reader.feed(good) == []  # nothing after a bad frame can be trusted


def test_a_channel_whose_stream_broke_raises_the_reason() -> None:
    ours, driver = socket.socketpair()
    with ours, driver:
        channel = SocketChannel(ours, None)
        driver.sendall(protocol._LEN.pack(3) + b"\x92\x01\x02")
        with pytest.raises(ShoalError, match="not a map"):
            channel.next_message()
