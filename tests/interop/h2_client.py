#!/usr/bin/env python3
"""WebSockets over HTTP/2 (RFC 8441), driven by hand with Python's `h2` package (4.x).

Usage: h2_client.py SCENARIO HOST:PORT [--tls CA_FILE] [--path PATH]

Speaks HTTP/2 by prior knowledge in plain text, or over TLS with ALPN `h2` (--tls). Each
scenario prints result lines that the Rust test (tests/it/http2.rs) compares, and exits 1 with
a message on a failure of its own checks. Every socket read is bounded by a timeout, so a
misbehaving server fails the script, never hangs it.
"""

import collections
import os
import socket
import ssl
import struct
import sys
import time
import zlib

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

TIMEOUT = 20


def fail(message):
    print(f"FAIL {message}", flush=True)
    sys.exit(1)


def frame(opcode, payload, fin=True, rsv1=False, mask=True):
    """A client WebSocket frame (masked unless told otherwise)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    length = len(payload)
    if length < 126:
        head = bytes([first, (0x80 if mask else 0) | length])
    elif length < 65536:
        head = bytes([first, (0x80 if mask else 0) | 126]) + struct.pack("!H", length)
    else:
        head = bytes([first, (0x80 if mask else 0) | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def parse_frames(buf):
    """Complete server frames at the front of buf: ([(fin, rsv1, opcode, payload)], rest)."""
    frames = []
    while len(buf) >= 2:
        fin, rsv1, opcode = buf[0] & 0x80, buf[0] & 0x40, buf[0] & 0x0F
        length, pos = buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                break
            length, pos = struct.unpack("!H", buf[2:4])[0], 4
        elif length == 127:
            if len(buf) < 10:
                break
            length, pos = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < pos + length:
            break
        frames.append((bool(fin), bool(rsv1), opcode, bytes(buf[pos:pos + length])))
        buf = buf[pos + length:]
    return frames, buf


class Client:
    """One HTTP/2 connection: streams, their WebSocket frames and their events."""

    def __init__(self, addr, tls_ca=None, window=65535, auto_ack=True):
        host, port = addr.rsplit(":", 1)
        self.authority = addr
        sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        self.scheme = "http"
        if tls_ca:
            context = ssl.create_default_context(cafile=tls_ca)
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(sock, server_hostname="localhost")
            if sock.selected_alpn_protocol() != "h2":
                fail(f"ALPN chose {sock.selected_alpn_protocol()!r}, not h2")
            self.scheme = "https"
        self.sock = sock
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
        self.conn.initiate_connection()
        self.auto_ack = auto_ack
        self.held = set()  # streams whose received data is not acknowledged (not "read")
        self.unacked = {}  # stream -> bytes received and not acknowledged
        self.buffers = {}  # stream -> bytes of WebSocket frames not parsed yet
        self.messages = {}  # stream -> [(opcode, payload)]
        self.responses = {}  # stream -> headers dict
        self.ended = set()
        self.resets = {}  # stream -> error code
        self.goaway = None
        self.pong = False
        self.settings = None
        self.eof = False
        self.log = []  # (stream, what) in the order things happened
        self.flush()
        self.pump(lambda: self.settings is not None)

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self, until, timeout=TIMEOUT):
        """Reads and handles events until `until()` is true."""
        deadline = time.monotonic() + timeout
        while not until():
            if self.eof:
                fail("the server closed the connection")
            left = deadline - time.monotonic()
            if left <= 0:
                fail("timed out waiting for the server")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                fail("timed out waiting for the server")
            if not data:
                self.eof = True
                if until():
                    return
                fail("the server closed the connection")
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                if self.conn.state_machine.state != h2.connection.ConnectionState.CLOSED:
                    raise
                # A GOAWAY closed the connection for h2, which takes any frame after it
                # (hyper's PING) as an error, losing the GOAWAY's event: the end.
                if self.goaway is None:
                    self.goaway = 0
                    self.log.append((0, "goaway"))
                self.eof = True
                continue
            for event in events:
                self.handle(event)
            self.flush()

    def handle(self, event):
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings = {code: change.new_value for code, change in event.changed_settings.items()}
        elif isinstance(event, h2.events.ResponseReceived):
            self.responses[event.stream_id] = dict(event.headers)
            self.log.append((event.stream_id, "response"))
        elif isinstance(event, h2.events.DataReceived):
            sid = event.stream_id
            if event.flow_controlled_length:
                if sid in self.held:
                    self.unacked[sid] = self.unacked.get(sid, 0) + event.flow_controlled_length
                    # The connection's window is given back: only the stream is stalled.
                    self.conn.increment_flow_control_window(event.flow_controlled_length)
                elif self.auto_ack:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
            buf = self.buffers.get(sid, b"") + event.data
            frames, self.buffers[sid] = parse_frames(buf)
            for fin, rsv1, opcode, payload in frames:
                if rsv1:
                    payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
                self.messages.setdefault(sid, []).append((opcode, payload))
                if opcode == 8:
                    self.log.append((sid, "close"))
        elif isinstance(event, h2.events.StreamEnded):
            self.ended.add(event.stream_id)
            self.log.append((event.stream_id, "end"))
        elif isinstance(event, h2.events.StreamReset):
            self.resets[event.stream_id] = event.error_code
            self.log.append((event.stream_id, f"reset {h2.errors.ErrorCodes(event.error_code).name}"))
        elif isinstance(event, h2.events.PingAckReceived):
            self.pong = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event.error_code
            self.log.append((0, "goaway"))

    def connect(self, path="/", headers=(), protocol="websocket", version="13"):
        """Opens a stream with an extended CONNECT; returns its id (the answer comes later)."""
        sid = self.conn.get_next_available_stream_id()
        request = [(":method", "CONNECT")]
        if protocol is not None:
            request.append((":protocol", protocol))
            request += [(":scheme", self.scheme), (":path", path)]
        # Without :protocol, an ordinary CONNECT (a proxy tunnel): no :scheme, no :path.
        request.append((":authority", self.authority))
        if version is not None:
            request.append(("sec-websocket-version", version))
        request += list(headers)
        self.conn.send_headers(sid, request)
        self.flush()
        return sid

    def open(self, path="/", headers=()):
        """Opens a WebSocket and waits for the answer; returns (stream, status)."""
        sid = self.connect(path, headers)
        self.pump(lambda: sid in self.responses or sid in self.resets)
        if sid in self.resets:
            return sid, f"reset {self.resets[sid]}"
        return sid, self.responses[sid][":status"]

    def send(self, sid, opcode, payload, **kwargs):
        data = frame(opcode, payload, **kwargs)
        while data:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window == 0:
                self.pump(lambda: self.conn.local_flow_control_window(sid) > 0)
                continue
            self.conn.send_data(sid, data[:window])
            data = data[window:]
            self.flush()

    def recv(self, sid, count=1):
        """The stream's next `count` messages."""
        self.pump(lambda: len(self.messages.get(sid, [])) >= count or sid in self.resets or sid in self.ended)
        got = self.messages.get(sid, [])
        if len(got) < count:
            fail(f"stream {sid} ended before {count} messages: {got!r}, reset {self.resets.get(sid)}")
        taken, self.messages[sid] = got[:count], got[count:]
        return taken

    def close(self, sid, code=1000):
        self.send(sid, 8, struct.pack("!H", code))

    def release(self, sid):
        """Reads what a held stream received: its window opens again."""
        self.held.discard(sid)
        if self.unacked.get(sid):
            self.conn.increment_flow_control_window(self.unacked.pop(sid), stream_id=sid)
            self.flush()


def close_code(message):
    opcode, payload = message
    if opcode != 8:
        fail(f"expected a close frame, got opcode {opcode}: {payload[:40]!r}")
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


def scenario_basics(c, path):
    """SETTINGS, an echo, a subprotocol, compression, a static file and a 404, the close."""
    print("enable_connect_protocol:", c.settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL))
    print("max_concurrent_streams:", c.settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS))
    sid, status = c.open(path, [
        ("sec-websocket-protocol", "mqtt, chat"),
        ("sec-websocket-extensions", "permessage-deflate; client_no_context_takeover; server_no_context_takeover"),
    ])
    headers = c.responses[sid]
    print("status:", status, "protocol:", headers.get("sec-websocket-protocol"),
          "deflate:", "permessage-deflate" in headers.get("sec-websocket-extensions", ""))
    c.send(sid, 1, "hello κόσμε".encode())
    print("echo:", c.recv(sid)[0][1].decode())
    # A compressed message (RSV1): the server inflates it; its answer is inflated here.
    compressor = zlib.compressobj(wbits=-15)
    body = compressor.compress(b"z" * 5000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    c.send(sid, 2, body[:-4], rsv1=True)
    echoed = c.recv(sid)[0]
    print("compressed echo:", echoed[0], len(echoed[1]), echoed[1] == b"z" * 5000)
    c.close(sid)
    print("close:", close_code(c.recv(sid)[0]))
    c.pump(lambda: sid in c.ended or sid in c.resets)
    print("ended:", sid in c.ended)
    for target in ("/", "/nope"):
        get = c.conn.get_next_available_stream_id()
        c.conn.send_headers(get, [(":method", "GET"), (":scheme", c.scheme), (":path", target),
                                  (":authority", c.authority)], end_stream=True)
        c.flush()
        c.pump(lambda: get in c.ended)
        print(f"GET {target}:", c.responses[get][":status"])


def scenario_refusals(c, path):
    """Answers the upgrade core gives over HTTP/2, one stream each, on one connection."""
    for name, kwargs in [
        ("refused by on_connection", dict(path=path + "?refuse=1")),
        ("no such path", dict(path="/no-such-endpoint")),
        ("no :protocol", dict(path=path, protocol=None)),
        (":protocol webtransport", dict(path=path, protocol="webtransport")),
        ("no sec-websocket-version", dict(path=path, version=None)),
        ("protocol not a token", dict(path=path, headers=[("sec-websocket-protocol", "a b")])),
    ]:
        sid = c.connect(**kwargs)
        c.pump(lambda: sid in c.responses or sid in c.resets)
        answer = c.responses[sid][":status"] if sid in c.responses else f"reset {c.resets[sid]}"
        print(f"{name}: {answer}")
    sid, status = c.open(path)
    c.send(sid, 1, b"still fine")
    print("after them:", status, c.recv(sid)[0][1].decode())


def scenario_many(c, path):
    """100 WebSockets on one connection; one stops reading past its stream window."""
    streams = [c.open(path)[0] for _ in range(100)]
    stalled = streams[0]
    c.held.add(stalled)
    # 200 KiB towards a stream whose window is 64 KiB: the echo stalls past the window.
    chunk = b"s" * 20000
    for _ in range(10):
        c.send(stalled, 2, chunk)
    c.pump(lambda: c.unacked.get(stalled, 0) >= 60000)
    for sid in streams[1:]:
        c.send(sid, 1, f"ping {sid}".encode())
    ok = sum(1 for sid in streams[1:] if c.recv(sid)[0][1] == f"ping {sid}".encode())
    print("others echoed while one stalls:", ok)
    print("stalled stream got at most its window:", c.unacked.get(stalled, 0) <= 65535)
    c.release(stalled)
    got = 0
    while got < 10:
        c.pump(lambda: len(c.messages.get(stalled, [])) > 0 or stalled in c.held)
        got += len(c.recv(stalled, len(c.messages.get(stalled, [])) or 1))
        c.release(stalled)
    print("stalled stream caught up:", got)
    for sid in streams:
        c.close(sid)
    codes = [close_code(c.recv(sid)[0]) for sid in streams]
    print("closes:", sorted(set(codes)))


def scenario_reset(c, path):
    """RST_STREAM on one WebSocket ends only that one."""
    kept, _ = c.open(path)
    cut, _ = c.open(path)
    c.send(cut, 1, b"before the reset")
    c.recv(cut)
    c.conn.reset_stream(cut, h2.errors.ErrorCodes.CANCEL)
    c.flush()
    c.send(kept, 1, b"after the reset")
    print("kept:", c.recv(kept)[0][1].decode())
    print("READY", flush=True)
    # The server's side is checked by the test (on_terminate 1006 for the cut one).
    c.close(kept)
    print("close:", close_code(c.recv(kept)[0]))


def scenario_abort(c, path):
    """The server drops its WebSockets without closing them: RST_STREAM(CANCEL) each, as a
    TCP reset (RFC 8441 §5); the connection itself stays up."""
    streams = [c.open(path)[0] for _ in range(2)]
    for sid in streams:
        c.send(sid, 1, b"hi")
        c.recv(sid)
    print("READY", flush=True)
    c.pump(lambda: all(sid in c.resets for sid in streams))
    names = sorted({h2.errors.ErrorCodes(c.resets[sid]).name for sid in streams})
    print("resets:", names, "ended first:", any(sid in c.ended for sid in streams))
    get = c.conn.get_next_available_stream_id()
    c.conn.send_headers(get, [(":method", "GET"), (":scheme", c.scheme), (":path", "/"),
                              (":authority", c.authority)], end_stream=True)
    c.flush()
    c.pump(lambda: get in c.ended)
    print("then GET /:", c.responses[get][":status"])


def scenario_idle(c, path):
    """A client that sent its preface and SETTINGS, then nothing: the server says GOAWAY."""
    c.pump(lambda: c.goaway is not None or c.eof)
    print("goaway:", c.goaway is not None)


def scenario_bad_frames(c, path):
    """DATA that is not WebSocket frames fails that stream with 1002; the others go on."""
    kept, _ = c.open(path)
    bad, _ = c.open(path)
    c.send(bad, 1, b"unmasked", mask=False)
    print("bad stream close:", close_code(c.recv(bad)[0]))
    c.pump(lambda: bad in c.ended or bad in c.resets)
    c.send(kept, 1, b"fine")
    print("kept:", c.recv(kept)[0][1].decode())


def scenario_too_many(c, path):
    """Streams beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused; the others go on."""
    limit = c.settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
    print("max_concurrent_streams:", limit)
    open_streams = [c.open(path)[0] for _ in range(limit)]
    # h2 would refuse to open one more: lift its own check to see what the server does.
    c.conn.remote_settings._settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = collections.deque([limit + 10])
    extra = c.connect(path)
    c.pump(lambda: extra in c.resets or extra in c.responses)
    print("one more:", f"reset {h2.errors.ErrorCodes(c.resets[extra]).name}" if extra in c.resets else c.responses[extra][":status"])
    c.send(open_streams[0], 1, b"fine")
    print("first:", c.recv(open_streams[0])[0][1].decode())


def scenario_shutdown(c, path):
    """The server stops: every WebSocket gets its close (1001), then GOAWAY."""
    streams = [c.open(path)[0] for _ in range(20)]
    for sid in streams:
        c.send(sid, 1, b"busy")
    for sid in streams:
        c.recv(sid)
    print("READY", flush=True)
    c.pump(lambda: all(c.messages.get(sid) for sid in streams), timeout=60)
    codes = sorted({close_code(c.recv(sid)[0]) for sid in streams})
    print("closes:", codes)
    # Answer the closes, as a client does, then wait for GOAWAY.
    for sid in streams:
        try:
            c.close(sid, 1001)
        except h2.exceptions.StreamClosedError:
            pass
    c.pump(lambda: c.goaway is not None or c.eof, timeout=60)
    goaway_at = next((i for i, (_, what) in enumerate(c.log) if what == "goaway"), None)
    last_close = max(i for i, (_, what) in enumerate(c.log) if what == "close")
    print("goaway after every close:", goaway_at is not None and goaway_at > last_close)


def scenario_rapid_reset(c, path):
    """Opens WebSockets and resets them in a loop (CVE-2023-44487): first each one after its
    answer, 8 at a time, which every HTTP/2 server accepts; then HEADERS and RST_STREAM back
    to back, without waiting, until the server stops taking them."""
    started = time.monotonic()
    answered = refused = 0
    for _ in range(40):
        batch = [c.connect(path) for _ in range(8)]
        c.pump(lambda: all(sid in c.responses or sid in c.resets for sid in batch))
        for sid in batch:
            status = c.responses.get(sid, {}).get(":status")
            answered += 1
            refused += status == "429"
            if sid not in c.resets and sid not in c.ended:
                c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        c.flush()
    print(f"OPENED {answered} REFUSED {refused} IN {time.monotonic() - started:.3f}", flush=True)
    sent = 0
    try:
        for _ in range(3000):
            sid = c.connect(path)
            c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            sent += 1
            if sent % 50 == 0:
                c.flush()
        c.flush()
        # Whatever the server makes of it, it answers a PING or sends GOAWAY.
        c.conn.ping(b"12345678")
        c.flush()
        c.pump(lambda: c.pong or c.goaway is not None or c.eof)
    except (OSError, h2.exceptions.ProtocolError):
        pass
    print(f"BACK TO BACK {sent}", flush=True)
    print(f"ELAPSED {time.monotonic() - started:.3f}", flush=True)


def alpn_fallback(addr, ca, path):
    """A TLS client offering only http/1.1 gets HTTP/1.1, and its upgrade a 101."""
    host, port = addr.rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["http/1.1"])
    sock = context.wrap_socket(socket.create_connection((host, int(port)), timeout=TIMEOUT),
                               server_hostname="localhost")
    print("alpn:", sock.selected_alpn_protocol())
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            fail("the server closed the connection")
        head += data
    print("answer:", head.split(b"\r\n")[0].decode())


SCENARIOS = {
    "basics": scenario_basics,
    "refusals": scenario_refusals,
    "many": scenario_many,
    "reset": scenario_reset,
    "bad-frames": scenario_bad_frames,
    "abort": scenario_abort,
    "idle": scenario_idle,
    "too-many": scenario_too_many,
    "shutdown": scenario_shutdown,
    "rapid-reset": scenario_rapid_reset,
}


def main():
    args = sys.argv[1:]
    scenario, addr = args[0], args[1]
    tls = args[args.index("--tls") + 1] if "--tls" in args else None
    path = args[args.index("--path") + 1] if "--path" in args else "/"
    if scenario == "alpn-fallback":
        alpn_fallback(addr, tls, path)
        print("DONE", flush=True)
        return
    client = Client(addr, tls_ca=tls)
    SCENARIOS[scenario](client, path)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
