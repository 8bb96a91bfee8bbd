"""A WebSocket server on Python `websockets`, for testing ferrosock's client against a peer
nobody here wrote.

Usage: python_server.py PORT [--tls CERT KEY]
Prints READY on stdout once it listens. Per message:
  "close:CODE:REASON"   closes the connection with CODE and REASON
  "fragments:N:TEXT"    sends TEXT as one text message in N fragments
  "big:N"               sends a binary message of N bytes (byte i is i % 251)
  "headers"             sends a JSON object of the request's headers (lower-case names;
                        a repeated header as a list)
  anything else         is echoed with its frame type
"""

import asyncio
import json
import ssl
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


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


async def main():
    port = int(sys.argv[1])
    context = None
    if len(sys.argv) == 5 and sys.argv[2] == "--tls":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[3], sys.argv[4])
    async with serve(handle, "127.0.0.1", port, ssl=context, max_size=None, compression=None):
        print("READY", flush=True)
        await asyncio.get_running_loop().create_future()


asyncio.run(main())
