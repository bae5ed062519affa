"""Framing for the control socket: a 4-byte big-endian length, then one UTF-8 JSON object.

Requests are `{"v": 1, "cmd": str, "args": {...}}`; replies `{"v": 1, "ok": bool, "result"|"error": ...}`.
The version field lets msd-ctl and the daemon refuse each other cleanly across upgrades.
"""
from __future__ import annotations

import json
import socket
import struct
from typing import Any

from msd.errors import ProtocolError

VERSION = 1
MAX_FRAME = 1 << 20
_HEADER = struct.Struct(">I")


def encode_frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), default=str).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame is not UTF-8 JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    if message.get("v") != VERSION:
        raise ProtocolError(f"unsupported protocol version {message.get('v')!r} (this side speaks {VERSION})")
    return message


def request(cmd: str, **args: Any) -> dict[str, Any]:
    return {"v": VERSION, "cmd": cmd, "args": args}


def ok(result: Any) -> dict[str, Any]:
    return {"v": VERSION, "ok": True, "result": result}


def error(message: str) -> dict[str, Any]:
    return {"v": VERSION, "ok": False, "error": message}


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, remaining = [], n
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ProtocolError(f"connection closed with {remaining} of {n} bytes unread")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket) -> dict[str, Any]:
    (length,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    return decode_body(_recv_exact(sock, length))


def write_frame(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode_frame(message))
