"""Prints the SETTINGS the agent's HTTP/2 server advertises, as `id=value`
lines: what any client (or attacker) sees before its first request."""
import socket
import struct
import sys

s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + struct.pack(">I", 0)[1:] + b"\x04\x00\x00\x00\x00\x00")
s.settimeout(5)
buf = b""
while True:
    while len(buf) < 9:
        buf += s.recv(4096)
    length = int.from_bytes(buf[:3], "big")
    ftype, flags = buf[3], buf[4]
    while len(buf) < 9 + length:
        buf += s.recv(4096)
    payload, buf = buf[9:9 + length], buf[9 + length:]
    if ftype == 4 and not flags & 1:
        for i in range(0, len(payload), 6):
            ident, value = struct.unpack(">HI", payload[i:i + 6])
            print(f"{ident}={value}")
        break
