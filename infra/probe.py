"""Does a TCP port answer as an AMQP broker or a MongoDB-compatible server? Standard library only.

Usage: ``probe.py amqp|mongo HOST PORT``. Exit status 0: it answers as that kind of server (a short
description is printed); 1: nothing accepts connections there; 3: something else is listening.

The infra scripts use this before starting a server (is the port free, or already served by the right
kind of server, e.g. a user's own Docker stack?) and as their readiness check, so it speaks just enough
of each wire protocol to tell a real server from any other listener.
"""

from __future__ import annotations

import socket
import struct
import sys

TIMEOUT_S = 3.0


class NotThatServer(Exception):
    """The peer accepted the connection but did not answer as the expected protocol."""


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise NotThatServer("connection closed early")
        data += chunk
    return data


def _amqp_table(payload: bytes) -> dict[str, str]:
    """The long-string entries of an AMQP field table (enough to read `product` and `version`)."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(payload):
        klen = payload[pos]
        key = payload[pos + 1 : pos + 1 + klen].decode("utf-8", "replace")
        kind = payload[pos + 1 + klen : pos + 2 + klen]
        pos += 2 + klen
        if kind in (b"S", b"F"):
            (vlen,) = struct.unpack_from(">I", payload, pos)
            if kind == b"S":
                out[key] = payload[pos + 4 : pos + 4 + vlen].decode("utf-8", "replace")
            pos += 4 + vlen
        elif kind == b"t":
            pos += 1
        else:  # a type we do not need to read: stop rather than guess its size
            break
    return out


def probe_amqp(sock: socket.socket) -> str:
    """Send the AMQP 0-9-1 protocol header and expect Connection.Start."""
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    frame_type, channel, size = struct.unpack(">BHI", _recv_exactly(sock, 7))
    if frame_type != 1 or channel != 0 or size > 1 << 20:
        raise NotThatServer("not an AMQP method frame")
    payload = _recv_exactly(sock, size)
    if payload[:4] != b"\x00\x0a\x00\x0a":  # class 10 (connection), method 10 (start)
        raise NotThatServer("not AMQP Connection.Start")
    (tlen,) = struct.unpack_from(">I", payload, 6)
    props = _amqp_table(payload[10 : 10 + tlen])
    return f"{props.get('product', 'AMQP broker')} {props.get('version', '')}".strip()


def _bson_command(name: str) -> bytes:
    body = b"\x10" + name.encode() + b"\x00" + struct.pack("<i", 1)
    body += b"\x02$db\x00" + struct.pack("<i", 6) + b"admin\x00"
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def _bson_top_level(doc: bytes) -> dict[str, object]:
    """Top-level scalars of a BSON document; nested documents are skipped (presence noted as True)."""
    fixed = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16}
    out: dict[str, object] = {}
    pos = 4
    while pos < len(doc) - 1:
        kind = doc[pos]
        end = doc.index(b"\x00", pos + 1)
        key = doc[pos + 1 : end].decode("utf-8", "replace")
        pos = end + 1
        if kind == 0x01:
            out[key] = struct.unpack_from("<d", doc, pos)[0]
        elif kind == 0x10:
            out[key] = struct.unpack_from("<i", doc, pos)[0]
        elif kind == 0x02:
            (slen,) = struct.unpack_from("<i", doc, pos)
            out[key] = doc[pos + 4 : pos + 3 + slen].decode("utf-8", "replace")
            pos += 4 + slen
            continue
        if kind in fixed:
            pos += fixed[kind]
        elif kind in (0x03, 0x04):
            out[key] = True
            pos += struct.unpack_from("<i", doc, pos)[0]
        elif kind == 0x05:
            pos += 5 + struct.unpack_from("<i", doc, pos)[0]
        else:
            break
    return out


def _mongo_command(sock: socket.socket, name: str, request_id: int) -> dict[str, object]:
    section = b"\x00" + _bson_command(name)
    header = struct.pack("<iiii", 16 + 4 + len(section), request_id, 0, 2013)  # OP_MSG
    sock.sendall(header + struct.pack("<I", 0) + section)
    length, _, _, opcode = struct.unpack("<iiii", _recv_exactly(sock, 16))
    if opcode != 2013 or not 21 <= length <= 48 << 20:
        raise NotThatServer("not a MongoDB OP_MSG reply")
    body = _recv_exactly(sock, length - 16)
    if body[4] != 0:
        raise NotThatServer("unexpected OP_MSG section")
    return _bson_top_level(body[5:])


def probe_mongo(sock: socket.socket) -> str:
    """Send `hello` and `buildInfo` as OP_MSG and expect ok: 1."""
    hello = _mongo_command(sock, "hello", 1)
    if hello.get("ok") != 1:
        raise NotThatServer("hello did not answer ok")
    info = _mongo_command(sock, "buildInfo", 2)
    if "ferretdbVersion" in info:
        return f"FerretDB {info['ferretdbVersion']}"
    return f"MongoDB {info.get('version', '')}".strip()


def main(argv: list[str]) -> int:
    """Run one probe; see the module docstring for arguments and exit status."""
    if len(argv) != 4 or argv[1] not in ("amqp", "mongo"):
        print("usage: probe.py amqp|mongo HOST PORT", file=sys.stderr)
        return 2
    probe = probe_amqp if argv[1] == "amqp" else probe_mongo
    try:
        sock = socket.create_connection((argv[2], int(argv[3])), timeout=TIMEOUT_S)
    except OSError:
        print("nothing is listening")
        return 1
    with sock:
        try:
            print(probe(sock))
        except (NotThatServer, OSError, struct.error, ValueError, IndexError) as exc:
            print(f"something else is listening ({exc or type(exc).__name__})")
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
