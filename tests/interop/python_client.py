#!/usr/bin/env python3
"""Interoperability checks of `ferrosock serve` with the Python `websockets` client (17.x).

Usage:
    python_client.py ws://127.0.0.1:PORT
    python_client.py ws://127.0.0.1:PORT --expect-shutdown   # used by run.sh (see below)

Runs the scenarios in order, prints one PASS line per scenario and exits 1 with a message
(what was expected, what was received) on the first failure. Every network await is bounded
by a timeout, so a misbehaving server makes the script fail, never hang.

`--expect-shutdown` connects to /echo and /chat, prints "READY" and then waits (up to 30 s)
for the server to close both connections; each must get close code 1001 (going away).
run.sh sends SIGTERM to the server after "READY".
"""

import asyncio
import base64
import os
import sys
import time
import urllib.error
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

TIMEOUT = 10  # seconds, for one ordinary network step
BIG_TIMEOUT = 120  # seconds, for one 16 MiB round trip on a slow machine
MIB = 1 << 20


class Failure(Exception):
    """A failed check: the message says what was expected and what was received."""


def short(value, limit=32):
    """A short printable form of a message, for failure reports."""
    if isinstance(value, (bytes, bytearray)):
        head = bytes(value[:limit]).hex(" ")
        more = f"... ({len(value)} bytes)" if len(value) > limit else ""
        return f"<binary {len(value)} bytes: {head}{more}>"
    if isinstance(value, str):
        if len(value) > limit:
            return f"<text {len(value)} chars: {value[:limit]!r}...>"
        return repr(value)
    return repr(value)


def check(condition, what, expected, received):
    if not condition:
        raise Failure(f"{what}: expected {short(expected)}, received {short(received)}")


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def check_same(what, expected, received):
    """Compares a sent and an echoed message: type (text/binary) and content."""
    if type(expected) is not type(received):
        kind = lambda v: "text (str)" if isinstance(v, str) else "binary (bytes)"
        raise Failure(
            f"{what}: expected a {kind(expected)} message, received a {kind(received)} one: "
            f"{short(received)}"
        )
    if expected != received:
        i = first_difference(expected, received)
        raise Failure(
            f"{what}: content differs (expected length {len(expected)}, received length "
            f"{len(received)}, first difference at index {i}: expected "
            f"{short(expected[i:i + 16])}, received {short(received[i:i + 16])})"
        )


async def within(awaitable, seconds, what):
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise Failure(f"{what}: timed out after {seconds} s") from None


def open_ws(url, **kwargs):
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", TIMEOUT)
    kwargs.setdefault("ping_interval", None)  # no keepalive noise during the checks
    return connect(url, **kwargs)


async def recv(ws, what, seconds=TIMEOUT):
    try:
        return await within(ws.recv(), seconds, what)
    except ConnectionClosed as exc:
        raise Failure(f"{what}: connection closed instead of a message ({exc})") from None


async def roundtrip(ws, message, what, seconds=TIMEOUT):
    await within(ws.send(message), seconds, f"{what} (send)")
    reply = await recv(ws, f"{what} (reply)", seconds)
    check_same(what, message, reply)


async def expect_silence(ws, seconds, what):
    """No message may arrive within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            unexpected = await ws.recv()
    except TimeoutError:
        return
    raise Failure(f"{what}: expected no message, received {short(unexpected)}")


async def close(ws, what, code=1000, reason=""):
    await within(ws.close(code, reason), TIMEOUT + 2, f"{what} (close)")


# --------------------------------------------------------------------------- scenarios

UNICODE_TEXT = "héllo wörld — ✓ 日本語 Ελληνικά русский 🚀🦀 \u0000 tab\tnewline\n end \U0010FFFF"


async def echo_basics(base, compression):
    """Text, binary (all 256 byte values), empty, unicode, fragmented messages on /echo."""
    label = f"compression={compression!r}"
    async with open_ws(f"{base}/echo", compression=compression) as ws:
        # What the extension negotiation gave (the server has no permessage-deflate yet).
        ext = ws.response.headers.get("Sec-WebSocket-Extensions")
        if compression is None:
            check(ext is None, f"[{label}] no extension offered, none negotiated", None, ext)

        await roundtrip(ws, "hello, ferrosock", f"[{label}] text echo")
        await roundtrip(ws, bytes(range(256)), f"[{label}] binary echo of all 256 byte values")
        await roundtrip(ws, bytes(range(255, -1, -1)) * 4, f"[{label}] binary echo (1 KiB)")
        await roundtrip(ws, "", f"[{label}] empty text echo")
        await roundtrip(ws, b"", f"[{label}] empty binary echo")
        await roundtrip(ws, UNICODE_TEXT, f"[{label}] unicode text echo")
        await roundtrip(ws, "x" * 125 + "é", f"[{label}] text of 127 bytes (7-bit length edge)")
        await roundtrip(ws, b"\xab" * 126, f"[{label}] binary of 126 bytes (16-bit length)")
        await roundtrip(ws, b"\xcd" * 65535, f"[{label}] binary of 65535 bytes (16-bit max)")
        await roundtrip(ws, b"\xef" * 65536, f"[{label}] binary of 65536 bytes (64-bit length)")

        # Fragmented messages sent by the client: echoed as ONE message with the whole content.
        # The marker message after each one proves no extra (per-fragment) echo followed.
        async def fragmented(fragments, what):
            await within(ws.send(fragments), TIMEOUT, f"{what} (send)")
            whole = fragments[0][:0].join(fragments)
            reply = await recv(ws, f"{what} (reply)")
            check_same(what, whole, reply)
            await roundtrip(ws, "marker", f"{what}: next message after the reassembled echo")

        await fragmented(["frag-1 ", "frag-2 ", "frag-3"], f"[{label}] fragmented text (3 frames)")
        await fragmented(
            ["", "ü", "", "日本", "🚀", ""], f"[{label}] fragmented unicode text with empty frames"
        )
        await fragmented(
            [bytes([i]) * 1000 for i in range(256)], f"[{label}] fragmented binary (256 frames)"
        )
        await fragmented(
            [os.urandom(64 * 1024) for _ in range(16)],
            f"[{label}] fragmented binary (16 x 64 KiB)",
        )

        # An async iterable is sent as fragments too.
        async def parts():
            for part in ("async ", "fragments ", "ünïcode"):
                yield part

        await within(ws.send(parts()), TIMEOUT, f"[{label}] async-iterable fragments (send)")
        reply = await recv(ws, f"[{label}] async-iterable fragments (reply)")
        check_same(f"[{label}] async-iterable fragments", "async fragments ünïcode", reply)

        # Many small messages pipelined before reading any reply keep their order.
        sent = [f"pipelined {i}" if i % 2 else f"pipelined {i}".encode() for i in range(100)]
        for message in sent:
            await within(ws.send(message), TIMEOUT, f"[{label}] pipelined send")
        for i, message in enumerate(sent):
            reply = await recv(ws, f"[{label}] pipelined reply {i}")
            check_same(f"[{label}] pipelined message {i} (order kept)", message, reply)

        await close(ws, label)
        check(ws.close_code == 1000, f"[{label}] close code after a normal close", 1000, ws.close_code)
    return f"/echo text, binary (256 values), empty, unicode, sizes, fragments, order [{label}, negotiated extension: {ext}]"


def big_text(size):
    """Exactly `size` bytes of UTF-8 text mixing random ASCII and multi-byte characters."""
    chunks, total = [], 0
    while True:
        chunk = base64.b64encode(os.urandom(3000)).decode() + "é✓🚀日"  # 4000 + 12 bytes
        if total + len(chunk.encode()) > size:
            break
        chunks.append(chunk)
        total += len(chunk.encode())
    chunks.append("z" * (size - total))
    text = "".join(chunks)
    assert len(text.encode()) == size
    return text


async def echo_big(base, compression=None, size=16 * MIB):
    # max_size=None: websockets' default limit (1 MiB) would refuse the echo.
    async with open_ws(f"{base}/echo", compression=compression, max_size=None) as ws:
        text = big_text(size)
        start = time.monotonic()
        await roundtrip(ws, text, f"{len(text.encode()) / MIB:.1f} MiB text echo", BIG_TIMEOUT)
        t_text = time.monotonic() - start
        data = os.urandom(size)
        start = time.monotonic()
        await roundtrip(ws, data, f"{size / MIB:.0f} MiB binary echo", BIG_TIMEOUT)
        t_bin = time.monotonic() - start
        await close(ws, "big echo")
    return f"/echo {size // MIB} MiB text ({t_text:.1f} s) and binary ({t_bin:.1f} s) round trips, content identical"


async def message_limit(base):
    """The default message limit (64 MiB) counts all fragments: exactly 64 MiB, sent as 1 MiB
    frames, is echoed; one byte more closes the connection with 1009 (message too big)."""
    async with open_ws(f"{base}/echo", compression=None, max_size=None) as ws:
        parts = [os.urandom(MIB) for _ in range(20)]
        await within(ws.send(parts), BIG_TIMEOUT, "20 MiB in 1 MiB fragments (send)")
        check_same("20 MiB binary in 1 MiB fragments", b"".join(parts), await recv(ws, "20 MiB reply", BIG_TIMEOUT))
        parts = [os.urandom(MIB) for _ in range(64)]
        await within(ws.send(parts), BIG_TIMEOUT, "64 MiB in 1 MiB fragments (send)")
        check_same("64 MiB binary in 1 MiB fragments", b"".join(parts), await recv(ws, "64 MiB reply", BIG_TIMEOUT))
        # websockets sends a message as one frame: the frame limit must not be lower than the
        # message limit (a 16 MiB frame default once refused this).
        single = os.urandom(40 * MIB)
        await roundtrip(ws, single, "40 MiB binary in a single frame", BIG_TIMEOUT)
        await close(ws, "64 MiB echo")
    async with open_ws(f"{base}/echo", compression=None, max_size=None) as ws:
        try:
            await within(ws.send([b"\0" * MIB] * 64 + [b"!"]), BIG_TIMEOUT, "64 MiB + 1 byte (send)")
        except ConnectionClosed:
            pass  # the server may close before the last fragment is written
        try:
            unexpected = await within(ws.recv(), TIMEOUT, "64 MiB + 1 byte: waiting for the close")
        except ConnectionClosed:
            pass
        else:
            raise Failure(f"64 MiB + 1 byte message: expected close 1009, received a message {short(unexpected)}")
        await within(ws.wait_closed(), TIMEOUT, "64 MiB + 1 byte: wait_closed")
        check(ws.close_code == 1009, "close code for a 64 MiB + 1 byte message", 1009, ws.close_code)
    return "/echo message limit: 20 MiB and 64 MiB (fragmented) and 40 MiB (one frame) echoed, 64 MiB + 1 byte closed with 1009"


async def uppercase(base):
    async with open_ws(f"{base}/uppercase") as ws:
        cases = [
            ("hello", "HELLO"),
            ("Hello, ferrosock! äöü ß ÿ", "HELLO, FERROSOCK! ÄÖÜ SS Ÿ"),
            ("already UPPER 123 !?", "ALREADY UPPER 123 !?"),
            ("", ""),
            ("日本語 🚀 ελληνικά", "日本語 🚀 ΕΛΛΗΝΙΚΆ"),
        ]
        for text, expected in cases:
            await within(ws.send(text), TIMEOUT, "uppercase send")
            reply = await recv(ws, f"/uppercase reply to {text!r}")
            check_same(f"/uppercase of {text!r}", expected, reply)
        # Binary input is decoded as UTF-8 lossily; the reply is text.
        await within(ws.send(b"abc\xffdef"), TIMEOUT, "uppercase send binary")
        reply = await recv(ws, "/uppercase reply to binary b'abc\\xffdef'")
        check_same("/uppercase of binary b'abc\\xffdef' (lossy UTF-8, text reply)", "ABC\ufffdDEF", reply)
        # Fragmented text is upper-cased as a whole.
        await within(ws.send(["abc", "déf"]), TIMEOUT, "uppercase send fragments")
        reply = await recv(ws, "/uppercase reply to fragments")
        check_same("/uppercase of fragmented 'abc'+'déf'", "ABCDÉF", reply)
        await close(ws, "uppercase")
    return "/uppercase text, unicode, empty, binary (lossy) and fragmented input"


async def chat(base):
    url = f"{base}/chat"
    welcome, joined, left = "Welcome on the chat!", "New client connected", "Client disconnected"

    own = {}  # client -> the last message it sent, to name an echo to the sender clearly

    async def expect(ws, who, expected):
        got = await recv(ws, f"/chat {who} waiting for {expected!r}")
        if got != expected and own.get(ws) == got:
            raise Failure(
                f"/chat {who}: expected {short(expected)}, received its own message {short(got)} "
                "back (the server must not send a message to its sender)"
            )
        check_same(f"/chat message received by {who}", expected, got)

    c1 = await within(open_ws(url), TIMEOUT, "/chat connect client 1")
    try:
        await expect(c1, "client 1", welcome)
        c2 = await within(open_ws(url), TIMEOUT, "/chat connect client 2")
        try:
            await expect(c2, "client 2", welcome)
            await expect(c1, "client 1 (client 2 joined)", joined)
            c3 = await within(open_ws(url), TIMEOUT, "/chat connect client 3")
            try:
                await expect(c3, "client 3", welcome)
                await expect(c1, "client 1 (client 3 joined)", joined)
                await expect(c2, "client 2 (client 3 joined)", joined)

                # Fan-out: each message goes to the two others, never back to the sender.
                # Each sender's next message proves the previous sender got no copy: a copy
                # would have been queued to the sender before the next sender's message.
                clients = {"client 1": c1, "client 2": c2, "client 3": c3}
                for sender in clients:
                    text = f"hello from {sender} ✓"
                    await within(clients[sender].send(text), TIMEOUT, f"/chat send by {sender}")
                    own[clients[sender]] = text
                    for name, ws in clients.items():
                        if name != sender:
                            await expect(ws, f"{name} (message of {sender})", text)
                # /chat uses the default data type (text): binary input is relayed as text,
                # decoded as UTF-8 with invalid bytes replaced by U+FFFD.
                await within(c2.send(b"\x00\x01binary\xff"), TIMEOUT, "/chat binary send")
                await expect(c1, "client 1 (binary of client 2, as text)", "\x00\x01binary\ufffd")
                await expect(c3, "client 3 (binary of client 2, as text)", "\x00\x01binary\ufffd")
                for name, ws in clients.items():
                    await expect_silence(ws, 0.5, f"/chat {name} after the fan-out (no echo to sender)")
            finally:
                await close(c3, "/chat client 3")
            await expect(c1, "client 1 (client 3 left)", left)
            await expect(c2, "client 2 (client 3 left)", left)
        finally:
            await close(c2, "/chat client 2")
        await expect(c1, "client 1 (client 2 left)", left)
        await expect_silence(c1, 0.3, "/chat client 1 alone")
    finally:
        await close(c1, "/chat client 1")
    return "/chat with 3 clients: welcome, join notices to others, fan-out without echo, binary relayed as text, disconnect notices"


async def close_codes(base):
    results, reasons = [], set()
    for code, reason in [(1000, ""), (1000, "normal bye"), (3000, "app code"), (4000, "bye from python"), (4999, "x" * 100)]:
        async with open_ws(f"{base}/echo") as ws:
            await roundtrip(ws, "before close", f"close {code}: echo before closing")
            await close(ws, f"close {code}", code, reason)
            check(
                ws.close_code == code,
                f"server close code after the client closed with {code} {reason!r}",
                code,
                ws.close_code,
            )
            results.append(f"{code}->{ws.close_code}")
            reasons.add(ws.close_reason)
    # The reason is not checked (RFC 6455 does not require echoing it); it is shown.
    return f"close codes echoed: {', '.join(results)} (server reasons seen: {sorted(reasons)})"


async def plain_http(base):
    """GET / is the demo page (HTML); another plain HTTP path is 404."""
    http_base = "http" + base[len("ws"):]

    def get(path):
        try:
            with urllib.request.urlopen(http_base + path, timeout=TIMEOUT) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Content-Type", ""), err.read()

    status, ctype, body = await within(asyncio.to_thread(get, "/"), TIMEOUT + 2, "GET /")
    check(status == 200, "HTTP status of GET /", 200, status)
    check(ctype.startswith("text/html"), "Content-Type of GET /", "text/html...", ctype)
    for marker in (b'id="status"', b'id="log"', b'id="form"'):
        check(marker in body, f"GET / body contains {marker.decode()}", marker, body[:200])
    status, _, _ = await within(asyncio.to_thread(get, "/nope"), TIMEOUT + 2, "GET /nope")
    check(status == 404, "HTTP status of GET /nope", 404, status)
    return f"plain HTTP: GET / is the demo page ({len(body)} bytes, {ctype}), GET /nope is 404"


async def not_found(base):
    for path in ("/nope", "/", "/echo/extra", "/ECHO"):
        try:
            async with open_ws(f"{base}{path}") as ws:
                await close(ws, f"upgrade to {path}")
        except InvalidStatus as exc:
            status = exc.response.status_code
            check(status == 404, f"HTTP status of an upgrade to {path}", 404, status)
        else:
            raise Failure(f"upgrade to {path}: expected HTTP 404, the upgrade was accepted")
    return "upgrades to /nope, /, /echo/extra, /ECHO rejected with HTTP 404"


async def concurrent(base, clients=200, rounds=5):
    """`clients` connections open at once, then each does `rounds` round trips."""
    all_open = asyncio.Event()
    opened = 0

    async def one(i):
        nonlocal opened
        try:
            async with open_ws(f"{base}/echo", open_timeout=30) as ws:
                opened += 1
                if opened == clients:
                    all_open.set()
                # Wait until every client is connected, so the round trips really overlap.
                await within(all_open.wait(), 30, f"client {i} waiting for the others to connect")
                for r in range(rounds):
                    text = f"client {i} round {r}"
                    message = text if r % 2 == 0 else text.encode() * 50
                    await roundtrip(ws, message, f"concurrent client {i} round {r}", 30)
                await close(ws, f"concurrent client {i}")
                check(ws.close_code == 1000, f"concurrent client {i} close code", 1000, ws.close_code)
        except BaseException:
            all_open.set()  # do not leave the others waiting
            raise

    start = time.monotonic()
    tasks = [asyncio.create_task(one(i)) for i in range(clients)]
    results = await within(
        asyncio.gather(*tasks, return_exceptions=True), 120, f"{clients} concurrent clients"
    )
    failures = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
    if failures:
        i, first = failures[0]
        raise Failure(
            f"{len(failures)} of {clients} concurrent clients failed ({opened} had connected); "
            f"first: client {i}: {type(first).__name__}: {first}"
        )
    check(opened == clients, "concurrent clients connected at once", clients, opened)
    return (
        f"{clients} concurrent /echo clients x {rounds} round trips, all open at once "
        f"({time.monotonic() - start:.1f} s)"
    )


async def expect_shutdown(base):
    """Stays connected until the server goes away: both connections must get close 1001."""
    async with open_ws(f"{base}/echo", ping_interval=None) as echo, open_ws(f"{base}/chat") as chat_ws:
        await roundtrip(echo, "still here", "shutdown watcher: echo before shutdown")
        await recv(chat_ws, "shutdown watcher: chat welcome")
        print("READY", flush=True)

        async def until_closed(ws, name):
            try:
                async with asyncio.timeout(30):
                    while True:
                        await ws.recv()
            except ConnectionClosed:
                pass
            except TimeoutError:
                raise Failure(f"{name}: the server did not close the connection within 30 s") from None
            await within(ws.wait_closed(), TIMEOUT, f"{name} wait_closed")
            check(ws.close_code == 1001, f"{name}: close code when the server stops", 1001, ws.close_code)
            return ws.close_code

        codes = await asyncio.gather(until_closed(echo, "/echo"), until_closed(chat_ws, "/chat"))
    print(f"PASS  shutdown: /echo and /chat clients closed with {codes[0]} and {codes[1]}")


async def main(argv):
    if len(argv) < 2 or not argv[1].startswith(("ws://", "wss://")):
        print("usage: python_client.py ws://HOST:PORT [--expect-shutdown]", file=sys.stderr)
        return 2
    base = argv[1].rstrip("/")
    if argv[2:] == ["--expect-shutdown"]:
        await expect_shutdown(base)
        return 0
    scenarios = [
        ("echo (default compression offer)", lambda: echo_basics(base, "deflate")),
        ("echo 16 MiB", lambda: echo_big(base)),
        ("message limit", lambda: message_limit(base)),
        ("uppercase", lambda: uppercase(base)),
        ("chat", lambda: chat(base)),
        ("close codes", lambda: close_codes(base)),
        ("plain HTTP", lambda: plain_http(base)),
        ("404", lambda: not_found(base)),
        ("200 concurrent clients", lambda: concurrent(base)),
        ("echo (compression=None)", lambda: echo_basics(base, None)),
        ("echo 4 MiB (compression=None)", lambda: echo_big(base, None, 4 * MIB)),
    ]
    start = time.monotonic()
    for name, scenario in scenarios:
        try:
            detail = await within(scenario(), 300, name)
        except Failure as exc:
            print(f"FAIL  python/{name}: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # an unexpected error is a failure too, with its type
            print(f"FAIL  python/{name}: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"PASS  {detail}", flush=True)
    print(f"python: all {len(scenarios)} scenarios passed in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(sys.argv)))
    except Failure as exc:
        print(f"FAIL  python: {exc}", file=sys.stderr)
        sys.exit(1)
