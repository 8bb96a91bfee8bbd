"""A WebSocket server on Python `websockets`, for testing ferrosock's client against a peer
nobody here wrote.

Usage: python_server.py PORT [--tls CERT KEY] [--deflate MODE]   (PORT 0: a free port)
  MODE: off (default), on (websockets' own defaults: windows of 12 bits, memLevel 5),
        server-nct (the server does not take over its context), client-nct (the server asks the
        client not to)
Prints "READY PORT" on stdout once it listens, with the port it listens on. Per message:
  "close:CODE:REASON"   closes the connection with CODE and REASON
  "fragments:N:TEXT"    sends TEXT as one text message in N fragments
  "big:N"               sends a binary message of N bytes (byte i is i % 251)
  "headers"             sends a JSON object of the request's headers (lower-case names;
                        a repeated header as a list)
  "extensions"          sends the Sec-WebSocket-Extensions the server answered ("" if none)
  anything else         is echoed with its frame type
"""

import asyncio
import json
import ssl
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory


def fragments(text, count):
    size = max(1, -(-len(text) // count))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


async def handle(ws):
    try:
        await serve_messages(ws)
    except ConnectionClosed:
        pass  # any close code is a normal end for this test server


async def serve_messages(ws):
    async for message in ws:
        if isinstance(message, str) and message.startswith("close:"):
            _, code, reason = message.split(":", 2)
            await ws.close(int(code), reason)
            return
        if isinstance(message, str) and message.startswith("fragments:"):
            _, count, text = message.split(":", 2)
            await ws.send(fragments(text, int(count)))
        elif isinstance(message, str) and message.startswith("big:"):
            size = int(message[4:])
            pattern = bytes(range(251))
            await ws.send((pattern * (size // 251 + 1))[:size])
        elif message == "extensions":
            await ws.send(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
        elif message == "headers":
            headers = {}
            for name, value in ws.request.headers.raw_items():
                name = name.lower()
                if name in headers:
                    previous = headers[name]
                    headers[name] = (previous if isinstance(previous, list) else [previous]) + [value]
                else:
                    headers[name] = value
            await ws.send(json.dumps(headers))
        else:
            await ws.send(message)


def deflate_options(mode):
    if mode == "off":
        return {"compression": None}
    if mode == "on":
        return {"compression": "deflate"}
    factory = {
        "server-nct": ServerPerMessageDeflateFactory(server_no_context_takeover=True),
        "client-nct": ServerPerMessageDeflateFactory(client_no_context_takeover=True),
    }[mode]
    return {"compression": None, "extensions": [factory]}


async def main():
    args = sys.argv[1:]
    port = int(args.pop(0))
    context, mode = None, "off"
    while args:
        flag = args.pop(0)
        if flag == "--tls":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(args.pop(0), args.pop(0))
        elif flag == "--deflate":
            mode = args.pop(0)
        else:
            sys.exit(f"unknown argument {flag}")
    async with serve(handle, "127.0.0.1", port, ssl=context, max_size=None, **deflate_options(mode)) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"READY {port}", flush=True)
        await asyncio.get_running_loop().create_future()


asyncio.run(main())
