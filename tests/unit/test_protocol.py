"""Control-socket framing."""
import socket
import struct

import pytest

from msd.errors import ProtocolError
from msd.supervisor import protocol


def pair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def test_round_trip():
    a, b = pair()
    with a, b:
        protocol.write_frame(a, protocol.request("retrain", strategy="s1"))
        assert protocol.read_frame(b) == {"v": 1, "cmd": "retrain", "args": {"strategy": "s1"}}


@pytest.mark.parametrize("body, message", [
    (b"not json", "not UTF-8 JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"v": 2, "cmd": "status"}', "unsupported protocol version 2"),
    (b'{"cmd": "status"}', "unsupported protocol version None"),
    (b"\xff\xfe", "not UTF-8 JSON"),
])
def test_bad_frames_are_refused(body, message):
    a, b = pair()
    with a, b:
        a.sendall(struct.pack(">I", len(body)) + body)
        with pytest.raises(ProtocolError, match=message):
            protocol.read_frame(b)


def test_oversized_length_is_refused_before_reading():
    a, b = pair()
    with a, b:
        a.sendall(struct.pack(">I", protocol.MAX_FRAME + 1))
        with pytest.raises(ProtocolError, match="exceeds"):
            protocol.read_frame(b)


def test_truncated_frame_is_reported():
    a, b = pair()
    with b:
        a.sendall(struct.pack(">I", 100) + b'{"v": 1')
        a.close()
        with pytest.raises(ProtocolError, match="connection closed"):
            protocol.read_frame(b)
