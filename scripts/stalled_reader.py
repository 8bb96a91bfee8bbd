"""One /chat member that never reads and one sender of COUNT x SIZE text messages (Python
websockets, compression on unless "off"), against `ferrosock serve` at PORT with process PID:
prints the growth of the server's resident memory at its peak and for 20 s after both leave.

Usage: stalled_reader.py PORT PID [COUNT [SIZE [off]]]   (scripts/stalled-reader runs it)
"""

import asyncio
import base64
import os
import random
import socket
import sys
import time

from websockets.asyncio.client import connect

port, pid = int(sys.argv[1]), int(sys.argv[2])
count = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
size = int(sys.argv[4]) if len(sys.argv) > 4 else 64 << 10
compression = None if len(sys.argv) > 5 and sys.argv[5] == "off" else "deflate"


def rss_kib():
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def stalled_member():
    """A /chat member with a 4 KiB receive buffer that never reads after the handshake."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    return s


async def main():
    base = rss_kib()
    member = stalled_member()
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    text = " ".join(rng.choice(words) for _ in range(size // 5))[:size]
    peak = base
    async with connect(f"ws://127.0.0.1:{port}/chat", compression=compression, max_size=None) as ws:
        for i in range(count):
            await ws.send(text)
            if i % 100 == 0:
                peak = max(peak, rss_kib())
        await asyncio.sleep(0.5)
        peak = max(peak, rss_kib())
    member.close()
    mode = "compressed" if compression else "uncompressed"
    print(f"{count} x {size} B {mode}: RSS {base} KiB before, peak growth {(peak - base) / 1024:.1f} MiB")
    elapsed = 0
    for mark in [1, 2, 5, 10, 20]:
        time.sleep(mark - elapsed)
        elapsed = mark
        print(f"  {mark:2d} s after both left: growth {(rss_kib() - base) / 1024:.1f} MiB")


asyncio.run(main())
