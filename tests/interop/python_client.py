#!/usr/bin/env python3
"""Interoperability checks of `ferrosock serve` with the Python `websockets` client (17.x).

Usage:
    python_client.py ws://127.0.0.1:PORT [ws://127.0.0.1:PORT2]
    python_client.py ws://127.0.0.1:PORT --expect-shutdown   # used by run.sh (see below)

The optional second URL is a `ferrosock serve --no-deflate` server: the "deflate" group checks
that it declines compression (the scenario is skipped, with a SKIP line, without that URL).

Runs the scenarios in order, prints one PASS line per scenario and exits 1 with a message
(what was expected, what was received) on the first failure. Every network await is bounded
by a timeout, so a misbehaving server makes the script fail, never hang.

`--expect-shutdown` connects to /echo and /chat, prints "READY" and then waits (up to 30 s)
for the server to close both connections; each must get close code 1001 (going away).
run.sh sends SIGTERM to the server after "READY".
"""

import asyncio
import zlib
import base64
import json
import os
import struct
import sys
import time
import urllib.error
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate
from websockets.frames import Opcode

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
    # The default max_size (1 MiB) on purpose: websockets applies it to a frame as received, so
    # a 1 MiB random message must not come back compressed into something larger (the server
    # sends incompressible data as it is).
    async with open_ws(f"{base}/echo", compression=compression, max_size=MIB + 64) as ws:
        # What the extension negotiation gave (shown in the PASS line; checked in the deflate group).
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
    """serve's message limit (16 MiB) counts all fragments: exactly 16 MiB, sent as 1 MiB
    frames, is echoed; one byte more closes the connection with 1009 (message too big)."""
    async with open_ws(f"{base}/echo", compression=None, max_size=None) as ws:
        parts = [os.urandom(MIB) for _ in range(8)]
        await within(ws.send(parts), BIG_TIMEOUT, "8 MiB in 1 MiB fragments (send)")
        check_same("8 MiB binary in 1 MiB fragments", b"".join(parts), await recv(ws, "8 MiB reply", BIG_TIMEOUT))
        parts = [os.urandom(MIB) for _ in range(16)]
        await within(ws.send(parts), BIG_TIMEOUT, "16 MiB in 1 MiB fragments (send)")
        check_same("16 MiB binary in 1 MiB fragments", b"".join(parts), await recv(ws, "16 MiB reply", BIG_TIMEOUT))
        # websockets sends a message as one frame: the frame limit must not be lower than the
        # message limit (a 16 MiB frame default once refused 40 MiB messages under a 64 MiB one).
        single = os.urandom(12 * MIB)
        await roundtrip(ws, single, "12 MiB binary in a single frame", BIG_TIMEOUT)
        await close(ws, "16 MiB echo")
    async with open_ws(f"{base}/echo", compression=None, max_size=None) as ws:
        try:
            await within(ws.send([b"\0" * MIB] * 16 + [b"!"]), BIG_TIMEOUT, "16 MiB + 1 byte (send)")
        except ConnectionClosed:
            pass  # the server may close before the last fragment is written
        try:
            unexpected = await within(ws.recv(), TIMEOUT, "16 MiB + 1 byte: waiting for the close")
        except ConnectionClosed:
            pass
        else:
            raise Failure(f"16 MiB + 1 byte message: expected close 1009, received a message {short(unexpected)}")
        await within(ws.wait_closed(), TIMEOUT, "16 MiB + 1 byte: wait_closed")
        check(ws.close_code == 1009, "close code for a 16 MiB + 1 byte message", 1009, ws.close_code)
    return "/echo message limit: 8 MiB and 16 MiB (fragmented) and 12 MiB (one frame) echoed, 16 MiB + 1 byte closed with 1009"


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


async def small_exchange(ws, i, r):
    """The round trip of concurrent client `i` in round `r`: small text and binary messages."""
    text = f"client {i} round {r}"
    message = text if r % 2 == 0 else text.encode() * 50
    await roundtrip(ws, message, f"concurrent client {i} round {r}", 30)


async def concurrent(base, clients=200, rounds=5, connect=None, exchange=small_exchange, what="/echo clients"):
    """`clients` connections open at once, then each does `rounds` round trips.

    `connect(url)` opens a connection (default: open_ws with the default compression offer);
    `exchange(ws, i, r)` does client i's round trip of round r."""
    connect = connect or (lambda url: open_ws(url, open_timeout=30))
    all_open = asyncio.Event()
    opened = 0

    async def one(i):
        nonlocal opened
        try:
            async with connect(f"{base}/echo") as ws:
                opened += 1
                if opened == clients:
                    all_open.set()
                # Wait until every client is connected, so the round trips really overlap.
                await within(all_open.wait(), 30, f"client {i} waiting for the others to connect")
                for r in range(rounds):
                    await exchange(ws, i, r)
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
        f"{clients} concurrent {what} x {rounds} round trips, all open at once "
        f"({time.monotonic() - start:.1f} s)"
    )


# --------------------------------------------------------------------------- permessage-deflate

KIB = 1 << 10
THRESHOLD = 1024  # the server sends messages shorter than this uncompressed (RSV1=0)
DEFLATE_SIZES = [0, 1, 100, 1023, 1024, 1025, 64 * KIB, MIB, 16 * MIB]
# What the server answers to an offer with client_max_window_bits and no other parameter.
# ferrosock's defaults: no context takeover either way (codec memory only while a message is
# being compressed), 12-bit windows.
NO_TAKEOVER = {"server_no_context_takeover": None, "client_no_context_takeover": None}
DEFAULT_ANSWER = {**NO_TAKEOVER, "server_max_window_bits": "12", "client_max_window_bits": "12"}


class RecordingDeflate(PerMessageDeflate):
    """websockets' permessage-deflate, recording the RSV1 bit of each data message received
    (its first frame): True = the server sent the message compressed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.received_rsv1 = []

    def decode(self, frame, *, max_size=None):
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.received_rsv1.append(frame.rsv1)
        return super().decode(frame, max_size=max_size)


class RecordingDeflateFactory(ClientPerMessageDeflateFactory):
    def process_response_params(self, params, accepted_extensions):
        ext = super().process_response_params(params, accepted_extensions)
        return RecordingDeflate(
            ext.remote_no_context_takeover,
            ext.local_no_context_takeover,
            ext.remote_max_window_bits,
            ext.local_max_window_bits,
            ext.compress_settings,
        )


def deflate_offer(**params):
    """A permessage-deflate offer; without params the one websockets makes by default
    (`permessage-deflate; client_max_window_bits`, memLevel 5)."""
    return RecordingDeflateFactory(compress_settings={"memLevel": 5}, **params)


def offer_text(factory):
    return "; ".join(
        ["permessage-deflate"] + [n if v is None else f"{n}={v}" for n, v in factory.get_request_params()]
    )


def open_deflate(url, offer, **kwargs):
    kwargs.setdefault("max_size", None)  # the server's limit (16 MiB) applies, not websockets' 1 MiB
    return open_ws(url, compression=None, extensions=[offer], **kwargs)


def deflate_ext(ws):
    """The connection's RecordingDeflate (None if nothing was negotiated)."""
    return next((e for e in ws.protocol.extensions if isinstance(e, RecordingDeflate)), None)


def answer_of(ws):
    """The server's Sec-WebSocket-Extensions, as the raw value (None if absent) and, if it is a
    single permessage-deflate element, its parameters as a sorted list of (name, value)."""
    values = ws.response.headers.get_all("Sec-WebSocket-Extensions")
    if not values:
        return None, None
    raw = ", ".join(values)
    elements = [e for e in raw.split(",") if e.strip()]
    if len(elements) != 1:
        return raw, None
    name, *params = [p.strip() for p in elements[0].split(";")]
    if name.lower() != "permessage-deflate":
        return raw, None
    parsed = []
    for param in params:
        key, eq, value = param.partition("=")
        parsed.append((key.strip().lower(), value.strip().strip('"') if eq else None))
    return raw, sorted(parsed, key=lambda kv: kv[0])


def answer_text(params):
    return "; ".join(["permessage-deflate"] + [k if v is None else f"{k}={v}" for k, v in params.items()])


def check_answer(ws, what, expected):
    """The server accepted permessage-deflate with exactly the `expected` parameters."""
    raw, params = answer_of(ws)
    want = sorted(expected.items(), key=lambda kv: kv[0])
    if params != want:
        raise Failure(
            f"{what}: expected the answer Sec-WebSocket-Extensions: {answer_text(expected)} "
            f"(parameters in any order), received {raw!r}"
        )
    return raw


def _repeat_to(block, size):
    return (block * (size // len(block) + 1))[:size]


def exact_text(raw, size):
    """Text of exactly `size` UTF-8 bytes from `raw` (bytes of at least `size` bytes)."""
    text = raw[:size].decode("utf-8", "ignore")  # drops a character cut at the end
    return text + " " * (size - len(text.encode()))


_JSON_BLOCK = "".join(
    json.dumps(
        {
            "id": i,
            "user": f"user-{i % 50:02d}",
            "city": ["Zürich", "Genève", "Besançon", "Köln"][i % 4],
            "status": "active" if i % 3 else "idle",
            "tags": ["alpha", "beta", "gamma"][: i % 3 + 1],
            "score": (i * 37) % 1000,
        },
        ensure_ascii=False,
    )
    + ",\n"
    for i in range(600)
).encode()
_RECORD_BLOCK = b"".join(
    struct.pack("<IHHd", i, i % 7, 0xBEEF, i * 0.5) + b"\0\0\0\0sensor-%02d" % (i % 10) for i in range(4000)
)
_samples = {}


def sample(kind, content, size):
    """A message of exactly `size` bytes: "text" or "binary", "compressible" (repetitive JSON-ish
    records) or "random" (os.urandom; for text, base64 of random bytes with a few multi-byte
    characters). Cached: the same arguments give the same message."""
    key = (kind, content, size)
    if key not in _samples:
        if content == "compressible":
            if kind == "text":
                message = exact_text(_repeat_to(_JSON_BLOCK, size + 4), size)
            else:
                message = _repeat_to(_RECORD_BLOCK, size)
        elif kind == "text":
            chunks = [base64.b64encode(os.urandom(3000)) + "é✓🚀日".encode() for _ in range(size // 4012 + 1)]
            message = exact_text(b"".join(chunks), size)
        else:
            message = os.urandom(size)
        _samples[key] = message
    return _samples[key]


def size_of(message):
    return len(message.encode()) if isinstance(message, str) else len(message)


def shrinks(message, window_bits):
    """Whether DEFLATE makes the message smaller (as the server checks before sending it
    compressed; with no context takeover it sends incompressible data as it is). Predicted with
    zlib at the server's settings and window; the samples are far from the boundary."""
    raw = message.encode() if isinstance(message, str) else message
    deflate = zlib.compressobj(6, zlib.DEFLATED, -max(window_bits, 9), 5)
    compressed = deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)
    return len(compressed) - 4 < len(raw)


async def deflate_roundtrip(ws, message, what, seconds=TIMEOUT):
    """A round trip on a compressed connection; the echo must arrive compressed (RSV1=1) iff the
    message has THRESHOLD bytes or more and compresses."""
    ext = deflate_ext(ws)
    before = len(ext.received_rsv1)
    await roundtrip(ws, message, what, seconds)
    check_rsv1(ext, before, [message], what)


def check_rsv1(ext, before, messages, what):
    """The echoes of `messages` (received after `before` RSV1 records) have the expected RSV1."""
    got = ext.received_rsv1[before:]
    check(len(got) == len(messages), f"{what}: data frames starting a message received", len(messages), len(got))
    for message, rsv1 in zip(messages, got):
        size = size_of(message)
        expected = size >= THRESHOLD and shrinks(message, ext.remote_max_window_bits)
        if rsv1 != expected:
            raise Failure(
                f"{what}: the echo of a {size}-byte message arrived with RSV1={int(rsv1)}, expected "
                f"RSV1={int(expected)} (messages of {THRESHOLD} bytes or more are sent compressed "
                "when that makes them smaller, the others uncompressed)"
            )


async def deflate_negotiation(base):
    """What the server answers to various offers (the parameters, in any order)."""
    cases = [
        # (label, parameters of the offer (or connect's `compression`), expected answer parameters)
        ("default offer (compression='deflate')", {"compression": "deflate"}, DEFAULT_ANSWER),
        (
            "server_no_context_takeover",
            {"server_no_context_takeover": True},
            {**DEFAULT_ANSWER, "server_no_context_takeover": None},
        ),
        (
            "client_no_context_takeover",
            {"client_no_context_takeover": True},
            {**DEFAULT_ANSWER, "client_no_context_takeover": None},
        ),
        (
            "both no_context_takeover",
            {"server_no_context_takeover": True, "client_no_context_takeover": True},
            {**DEFAULT_ANSWER, "server_no_context_takeover": None, "client_no_context_takeover": None},
        ),
        ("no client_max_window_bits", {"client_max_window_bits": None}, {**NO_TAKEOVER, "server_max_window_bits": "12"}),
        (
            "15-bit windows asked",
            {"server_max_window_bits": 15, "client_max_window_bits": 15},
            DEFAULT_ANSWER,
        ),
        (
            "smaller windows asked",
            {"server_max_window_bits": 11, "client_max_window_bits": 9},
            {**NO_TAKEOVER, "server_max_window_bits": "11", "client_max_window_bits": "9"},
        ),
    ]
    seen = []
    for label, params, expected in cases:
        if "compression" in params:
            kwargs, offer = params, "websockets' default"
        else:
            factory = deflate_offer(**params)
            kwargs, offer = {"compression": None, "extensions": [factory]}, offer_text(factory)
        try:
            ws = await within(open_ws(f"{base}/echo", max_size=None, **kwargs), TIMEOUT + 2, f"[{label}] connect")
        except InvalidHandshake as exc:
            raise Failure(f"[{label}] offer {offer!r}: the handshake failed: {type(exc).__name__}: {exc}") from None
        try:
            raw = check_answer(ws, f"[{label}] offer {offer!r}", expected)
            message = sample("text", "compressible", 4 * KIB)
            await roundtrip(ws, message, f"[{label}] 4 KiB compressible text echo")
        finally:
            await close(ws, label)
        seen.append(f"{offer} -> {raw}")
    return "deflate negotiation on /echo: " + " | ".join(seen)


async def deflate_roundtrips(base, label, offer_params, answer, sizes=DEFLATE_SIZES):
    """Echo round trips of all sizes, text and binary, compressible and random, on one
    compressed connection; then messages that depend on context takeover, a fragmented
    compressed message, and pipelined messages."""
    offer = deflate_offer(**offer_params)
    start = time.monotonic()
    count = 0
    async with open_deflate(f"{base}/echo", offer) as ws:
        raw = check_answer(ws, f"[{label}] offer {offer_text(offer)!r}", answer)
        ext = deflate_ext(ws)
        check(ext is not None, f"[{label}] websockets negotiated permessage-deflate", "an extension", ws.protocol.extensions)

        async def one(message, what, seconds=None):
            nonlocal count
            size = size_of(message)
            seconds = seconds or (BIG_TIMEOUT if size >= MIB else TIMEOUT)
            await deflate_roundtrip(ws, message, f"[{label}] {what}", seconds)
            count += 1

        for size in sizes:
            for kind in ("text", "binary"):
                for content in ("compressible", "random"):
                    await one(sample(kind, content, size), f"{content} {kind} of {size} bytes")

        # Context takeover across messages: the same message several times in a row (with
        # takeover, a repeat is mostly back-references into the previous message; without, such
        # a reference would make the decompression fail), and a random message larger than the
        # negotiated window twice (a reference farther back than the window would fail too).
        for size in (100, 1024, 3000, 64 * KIB):
            for kind in ("text", "binary"):
                for n in range(3):
                    await one(sample(kind, "compressible", size), f"compressible {kind} of {size} bytes, repeat {n + 1}")
        probe = os.urandom(6000)
        for n in range(2):
            await one(probe, f"the same random 6000 bytes, time {n + 1}")
        for n in range(2):
            await one(probe[:3000] + probe[:3000], f"3000 random bytes twice in one message, time {n + 1}")

        # A compressed fragmented message (websockets compresses each fragment, RSV1 on the first).
        fragments = [sample("text", "compressible", 64 * KIB)[i * 4096 : (i + 1) * 4096] for i in range(16)]
        before = len(ext.received_rsv1)
        await within(ws.send(fragments), TIMEOUT, f"[{label}] 16 compressed fragments (send)")
        reply = await recv(ws, f"[{label}] 16 compressed fragments (reply)")
        check_same(f"[{label}] 16 compressed text fragments echoed as one message", "".join(fragments), reply)
        check_rsv1(ext, before, ["".join(fragments)], f"[{label}] 16 compressed fragments")

        # Pipelined: 60 messages of 10 B to 3 KiB sent before any reply is read.
        sent = [
            sample("text", "compressible", 3000)[: 50 * i + 10] if i % 2 else sample("binary", "random", 50 * i + 10)
            for i in range(60)
        ]
        before = len(ext.received_rsv1)
        for message in sent:
            await within(ws.send(message), TIMEOUT, f"[{label}] pipelined send")
        for i, message in enumerate(sent):
            reply = await recv(ws, f"[{label}] pipelined reply {i}")
            check_same(f"[{label}] pipelined message {i} ({size_of(message)} bytes, order kept)", message, reply)
        check_rsv1(ext, before, sent, f"[{label}] pipelined messages")
        count += 1 + len(sent)

        await close(ws, label)
        check(ws.close_code == 1000, f"[{label}] close code after a normal close", 1000, ws.close_code)
    largest = max(sizes)
    largest = f"{largest // MIB} MiB" if largest >= MIB else f"{largest} B"
    return (
        f"deflate [{label}] answer {raw!r}: {count} /echo round trips (0 B to {largest}, text/binary, "
        f"compressible/random, repeats, fragmented, pipelined) identical; echoes < {THRESHOLD} B "
        f"uncompressed, others compressed ({time.monotonic() - start:.1f} s)"
    )


async def deflate_window_bits(base):
    """The client asks for small windows; the server must keep to them (a back-reference beyond
    the 512-byte window would make websockets' decompression fail)."""
    detail = await deflate_roundtrips(
        base,
        "server_max_window_bits=9; client_max_window_bits=10",
        {"server_max_window_bits": 9, "client_max_window_bits": 10},
        {**NO_TAKEOVER, "server_max_window_bits": "9", "client_max_window_bits": "10"},
        sizes=[0, 1, 100, 1023, 1024, 1025, 64 * KIB, MIB],
    )
    # websockets' own view of the agreement.
    async with open_deflate(f"{base}/echo", deflate_offer(server_max_window_bits=9, client_max_window_bits=10)) as ws:
        ext = deflate_ext(ws)
        got = (ext.remote_max_window_bits, ext.local_max_window_bits)
        check(got == (9, 10), "websockets' (server, client) window bits after the answer", (9, 10), got)
        await close(ws, "window bits")
    return detail


async def deflate_message_limit(base):
    """The 16 MiB limit counts decompressed bytes: 16 MiB of zeros (a few dozen KiB compressed)
    is echoed, 16 MiB + 1 byte closes the connection with 1009."""
    async with open_deflate(f"{base}/echo", deflate_offer()) as ws:
        await deflate_roundtrip(ws, bytes(16 * MIB), "16 MiB of zeros, compressed", BIG_TIMEOUT)
        await close(ws, "16 MiB compressed")
    async with open_deflate(f"{base}/echo", deflate_offer()) as ws:
        try:
            await within(ws.send(bytes(16 * MIB + 1)), BIG_TIMEOUT, "16 MiB + 1 byte of zeros, compressed (send)")
        except ConnectionClosed:
            pass
        try:
            unexpected = await within(ws.recv(), BIG_TIMEOUT, "16 MiB + 1 byte compressed: waiting for the close")
        except ConnectionClosed:
            pass
        else:
            raise Failure(f"16 MiB + 1 byte compressed message: expected close 1009, received a message {short(unexpected)}")
        await within(ws.wait_closed(), TIMEOUT, "16 MiB + 1 byte compressed: wait_closed")
        check(ws.close_code == 1009, "close code for a compressed message of 16 MiB + 1 byte (decompressed)", 1009, ws.close_code)
    return "deflate message limit: 16 MiB of zeros (compressed) echoed, 16 MiB + 1 byte closed with 1009 (decompressed size counts)"


async def deflate_exchange(ws, i, r):
    """Concurrent client i's round trip r on a compressed connection."""
    if r == 0:
        check_answer(ws, f"concurrent client {i}", DEFAULT_ANSWER)
    prefix = f"client {i} round {r} "
    message = [
        lambda: prefix + sample("text", "compressible", 4 * KIB),
        lambda: prefix.encode() + sample("binary", "random", 2 * KIB),
        lambda: prefix.encode() + sample("binary", "compressible", 20 * KIB),
        lambda: prefix + "small",
        lambda: prefix + sample("text", "compressible", 4 * KIB),
    ][r % 5]()
    await deflate_roundtrip(ws, message, f"concurrent client {i} round {r}", 30)


async def deflate_concurrent(base):
    return await concurrent(
        base,
        connect=lambda url: open_deflate(url, deflate_offer(), open_timeout=30),
        exchange=deflate_exchange,
        what="compressed /echo clients (4 KiB text, 2 KiB random, 20 KiB binary, small text, 4 KiB text)",
    )


async def deflate_chat(base):
    """/chat relays each message to connections with different compression settings: each one
    must get it intact (each connection has its own compressor state)."""
    url = f"{base}/chat"
    offers = [
        ("default offer", deflate_offer()),
        ("server_no_context_takeover", deflate_offer(server_no_context_takeover=True)),
        ("server_max_window_bits=9", deflate_offer(server_max_window_bits=9)),
        ("no compression", None),
    ]
    clients = []
    try:
        for name, offer in offers:
            if offer is None:
                ws = await within(open_ws(url, compression=None, max_size=None), TIMEOUT + 2, f"/chat connect ({name})")
            else:
                ws = await within(open_deflate(url, offer), TIMEOUT + 2, f"/chat connect ({name})")
            clients.append((name, ws))
            check_same(f"/chat welcome ({name})", "Welcome on the chat!", await recv(ws, f"/chat welcome ({name})"))
        for i, (name, ws) in enumerate(clients):
            for _ in range(len(clients) - 1 - i):
                check_same(f"/chat join notice ({name})", "New client connected", await recv(ws, f"/chat join notice ({name})"))
        count = 0
        for r in range(4):
            for s, (sender, ws) in enumerate(clients):
                # Compressible and random parts, over the 1024-byte threshold; repeated rounds
                # exercise context takeover on the connections that keep it.
                text = f"round {r} from {sender} " + sample("text", "compressible", 5000) + sample("text", "random", 3000)
                await within(ws.send(text), TIMEOUT, f"/chat send by {sender}")
                for name, other in clients:
                    if other is not ws:
                        got = await recv(other, f"/chat {name} waiting for round {r} of {sender}")
                        check_same(f"/chat message of {sender} (round {r}) received by {name}", text, got)
                        count += 1
        for name, ws in clients:
            ext = deflate_ext(ws)
            if ext is not None:
                check(all(ext.received_rsv1[-3 * 4 :]), f"/chat {name}: the relayed 8 KB messages arrived compressed", True, ext.received_rsv1[-3 * 4 :])
    finally:
        for name, ws in clients:
            await close(ws, f"/chat {name}")
    return f"deflate /chat: {count} relayed 8 KB messages intact to 4 clients with different settings ({', '.join(n for n, _ in offers)})"


async def deflate_declined(no_deflate_base):
    """A `ferrosock serve --no-deflate` declines every offer; the echo still works."""
    offers = [
        ("default offer (compression='deflate')", {"compression": "deflate"}),
        (
            "offer with every parameter",
            {
                "compression": None,
                "extensions": [
                    deflate_offer(
                        server_no_context_takeover=True,
                        client_no_context_takeover=True,
                        server_max_window_bits=10,
                        client_max_window_bits=10,
                    )
                ],
            },
        ),
    ]
    count = 0
    for label, kwargs in offers:
        async with open_ws(f"{no_deflate_base}/echo", max_size=None, **kwargs) as ws:
            raw = ws.response.headers.get_all("Sec-WebSocket-Extensions")
            check(raw == [], f"[--no-deflate, {label}] Sec-WebSocket-Extensions in the answer", "none", raw)
            check(ws.protocol.extensions == [], f"[--no-deflate, {label}] extensions in use", [], ws.protocol.extensions)
            for size in (0, 100, 1024, 64 * KIB, MIB):
                for kind in ("text", "binary"):
                    for content in ("compressible", "random"):
                        message = sample(kind, content, size)
                        seconds = BIG_TIMEOUT if size >= MIB else TIMEOUT
                        await roundtrip(ws, message, f"[--no-deflate, {label}] {content} {kind} of {size} bytes", seconds)
                        count += 1
            await close(ws, f"--no-deflate {label}")
    return f"--no-deflate server: both offers declined (no Sec-WebSocket-Extensions), {count} uncompressed /echo round trips identical"


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
    usage = "usage: python_client.py ws://HOST:PORT [ws://HOST:PORT2 (a --no-deflate server) | --expect-shutdown]"
    if len(argv) < 2 or not argv[1].startswith(("ws://", "wss://")) or len(argv) > 3:
        print(usage, file=sys.stderr)
        return 2
    base = argv[1].rstrip("/")
    if argv[2:] == ["--expect-shutdown"]:
        await expect_shutdown(base)
        return 0
    no_deflate_base = None
    if argv[2:]:
        if not argv[2].startswith(("ws://", "wss://")):
            print(usage, file=sys.stderr)
            return 2
        no_deflate_base = argv[2].rstrip("/")
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
        # permessage-deflate
        ("deflate: negotiation", lambda: deflate_negotiation(base)),
    ]
    for label, params, extra in [
        ("context takeover both ways", {}, {}),
        ("server_no_context_takeover", {"server_no_context_takeover": True}, {"server_no_context_takeover": None}),
        ("client_no_context_takeover", {"client_no_context_takeover": True}, {"client_no_context_takeover": None}),
        (
            "server_ and client_no_context_takeover",
            {"server_no_context_takeover": True, "client_no_context_takeover": True},
            {"server_no_context_takeover": None, "client_no_context_takeover": None},
        ),
    ]:
        scenarios.append(
            (
                f"deflate: round trips, {label}",
                lambda label=label, params=params, extra=extra: deflate_roundtrips(
                    base, label, params, {**DEFAULT_ANSWER, **extra}
                ),
            )
        )
    scenarios += [
        ("deflate: window bits 9 and 10", lambda: deflate_window_bits(base)),
        ("deflate: message limit", lambda: deflate_message_limit(base)),
        ("deflate: 200 concurrent clients", lambda: deflate_concurrent(base)),
        ("deflate: /chat fan-out", lambda: deflate_chat(base)),
    ]
    if no_deflate_base:
        scenarios.append(("deflate: --no-deflate server", lambda: deflate_declined(no_deflate_base)))
    else:
        print("SKIP  deflate: --no-deflate server (no second URL given)", flush=True)
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
