"""An ASGI WebSocket echo app, served by Hypercorn for the HTTP/2 tests (tests/net_peers.rs).

Run: python -m hypercorn --bind 127.0.0.1:0 --workers 0 tests/interop/hypercorn_echo.py:app
(add --certfile/--keyfile for TLS: HTTP/2 by ALPN `h2`; without TLS, HTTP/2 by prior
knowledge, h2c). Hypercorn answers RFC 8441 extended CONNECT itself; this app only sees the
WebSocket.

Every WebSocket is accepted, with the first subprotocol the client offers, if any. Each
message is sent back as it came (text as text, bytes as bytes), except the text "request":
its answer is the HTTP version the ASGI scope reports (`scope["http_version"]`: "2" over
HTTP/2, "1.1" over HTTP/1.1), so a test can tell how its WebSocket got here. Any HTTP
request gets 200 "hypercorn echo".
"""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        body = b"hypercorn echo\n"
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await websocket(scope, receive, send)


async def websocket(scope, receive, send):
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    offered = scope.get("subprotocols") or []
    accept = {"type": "websocket.accept"}
    if offered:
        accept["subprotocol"] = offered[0]
    await send(accept)
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text, data = message.get("text"), message.get("bytes")
        if text == "request":
            await send({"type": "websocket.send", "text": scope["http_version"]})
        elif text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": data or b""})
