// A WebSocket server on Node `ws`, for testing ferrosock's client against a peer nobody here
// wrote. Same commands as python_server.py.
//
// Usage: node node_server.mjs PORT [--tls CERT KEY] [--deflate MODE]   (NODE_PATH must hold `ws`;
//        PORT 0: a free port)
//   MODE: off (default), on (ws's defaults: threshold 1024, 15-bit windows), server-nct,
//         client-nct (as in python_server.py)
// Prints "READY PORT" on stdout once it listens, with the port it listens on.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { createServer as createHttps } from "node:https";
import { createServer as createHttp } from "node:http";
import path from "node:path";

const require = createRequire(path.join(process.env.NODE_PATH?.split(":")[0] ?? ".", "x.js"));
const { WebSocketServer } = require("ws");

const args = process.argv.slice(2);
const portArg = args.shift();
let tls = null;
let mode = "off";
while (args.length) {
  const flag = args.shift();
  if (flag === "--tls") tls = { cert: readFileSync(args.shift()), key: readFileSync(args.shift()) };
  else if (flag === "--deflate") mode = args.shift();
  else throw new Error(`unknown argument ${flag}`);
}
const perMessageDeflate = {
  off: false,
  on: true,
  "server-nct": { serverNoContextTakeover: true },
  "client-nct": { clientNoContextTakeover: true },
}[mode];
const server = tls ? createHttps(tls) : createHttp();
const wss = new WebSocketServer({ server, maxPayload: 256 * 1024 * 1024, perMessageDeflate });

// What the 101 answered in Sec-WebSocket-Extensions, for the "extensions" command.
wss.on("headers", (headers, request) => {
  const line = headers.find((h) => h.toLowerCase().startsWith("sec-websocket-extensions:"));
  request.answeredExtensions = line ? line.slice(line.indexOf(":") + 1).trim() : "";
});

function headersOf(request) {
  const headers = {};
  const raw = request.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    const value = raw[i + 1];
    if (name in headers) {
      headers[name] = [].concat(headers[name], value);
    } else {
      headers[name] = value;
    }
  }
  return headers;
}

wss.on("connection", (ws, request) => {
  ws.on("message", (data, isBinary) => {
    const text = isBinary ? null : data.toString("utf8");
    if (text?.startsWith("close:")) {
      const [, code, ...reason] = text.split(":");
      ws.close(Number(code), reason.join(":"));
    } else if (text?.startsWith("fragments:")) {
      const [, count, ...rest] = text.split(":");
      const whole = rest.join(":");
      const size = Math.max(1, Math.ceil(whole.length / Number(count)));
      const parts = [];
      for (let i = 0; i < whole.length; i += size) parts.push(whole.slice(i, i + size));
      if (parts.length === 0) parts.push("");
      parts.forEach((part, i) => ws.send(part, { binary: false, fin: i === parts.length - 1 }));
    } else if (text?.startsWith("big:")) {
      const size = Number(text.slice(4));
      const buffer = Buffer.alloc(size);
      for (let i = 0; i < size; i++) buffer[i] = i % 251;
      ws.send(buffer, { binary: true });
    } else if (text === "extensions") {
      ws.send(request.answeredExtensions ?? "");
    } else if (text === "headers") {
      ws.send(JSON.stringify(headersOf(request)));
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
});

server.listen(Number(portArg), "127.0.0.1", () => console.log(`READY ${server.address().port}`));
