#!/usr/bin/env node
// Interoperability checks of `ferrosock serve` with the Node `ws` client (ws@8).
//
// Usage: node node_client.mjs ws://127.0.0.1:PORT [ws://127.0.0.1:PORT2]
// `ws` is loaded from $PEERS_DIR/node/node_modules (default: <repo>/.peers/node/node_modules).
// The optional second URL is a `ferrosock serve --no-deflate` server: the "deflate" group checks
// that it declines compression (that scenario is skipped, with a SKIP line, without that URL).
//
// Runs the scenarios in order, prints one PASS line per scenario and exits 1 with a message
// (what was expected, what was received) on the first failure. Every wait is bounded by a
// timeout, so a misbehaving server makes the script fail, never hang.

import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const peersDir = process.env.PEERS_DIR || path.resolve(here, '../../.peers');
const nodeModules = process.env.NODE_PEERS_MODULES || path.join(peersDir, 'node/node_modules');
const require = createRequire(path.join(nodeModules, 'noop.js'));
const WebSocket = require('ws');

const TIMEOUT = 10_000; // ms, for one ordinary network step
const BIG_TIMEOUT = 120_000; // ms, for one 16 MiB round trip on a slow machine
const MIB = 1 << 20;

class Failure extends Error {}

function short(value, limit = 32) {
  if (Buffer.isBuffer(value)) {
    const head = value.subarray(0, limit).toString('hex').replace(/(..)(?!$)/g, '$1 ');
    return `<binary ${value.length} bytes: ${head}${value.length > limit ? '...' : ''}>`;
  }
  if (typeof value === 'string') {
    return value.length > limit
      ? `<text ${value.length} chars: ${JSON.stringify(value.slice(0, limit))}...>`
      : JSON.stringify(value);
  }
  return String(value);
}

function check(condition, what, expected, received) {
  if (!condition) throw new Failure(`${what}: expected ${short(expected)}, received ${short(received)}`);
}

/** A received message: {text: string} or {binary: Buffer}. Compares type and content. */
function checkSame(what, expected, received) {
  const expectedBinary = Buffer.isBuffer(expected);
  if (expectedBinary !== received.isBinary) {
    throw new Failure(
      `${what}: expected a ${expectedBinary ? 'binary' : 'text'} message, received a ` +
        `${received.isBinary ? 'binary' : 'text'} one: ${short(received.data)}`,
    );
  }
  const same = expectedBinary ? expected.equals(received.data) : expected === received.data;
  if (!same) {
    const a = expected;
    const b = received.data;
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    throw new Failure(
      `${what}: content differs (expected length ${a.length}, received length ${b.length}, ` +
        `first difference at index ${i}: expected ${short(a.slice(i, i + 16))}, ` +
        `received ${short(b.slice(i, i + 16))})`,
    );
  }
}

function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`${what}: timed out after ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A client with a queue of received messages, so that tests read them in order:
 * `await c.next(what)` resolves with {data, isBinary} or fails on close/timeout.
 */
class Client {
  static open(url, options = {}, what = `connect ${url}`) {
    const c = new Client(url, options);
    return within(c.opened, TIMEOUT + 1000, what).then(() => c);
  }

  constructor(url, options) {
    this.ws = new WebSocket(url, { handshakeTimeout: TIMEOUT, ...options });
    this.queue = [];
    this.waiters = [];
    this.closeInfo = null;
    // The server's Sec-WebSocket-Extensions (undefined if absent), and the socket, whose
    // bytesRead tells how many bytes each message took on the wire.
    this.ws.once('upgrade', (res) => {
      this.extensionsHeader = res.headers['sec-websocket-extensions'];
      this.socket = res.socket;
    });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
      this.ws.once('unexpected-response', (req, res) => {
        reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode }));
        res.resume();
        req.destroy();
      });
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        for (const w of this.waiters.splice(0)) w.reject(new Failure(`connection closed (${code} ${reason})${this.errorText()}`));
      });
    });
    this.ws.on('error', (err) => (this.error = this.error || err)); // reported through 'close' or the checks
    this.ws.on('message', (data, isBinary) => {
      const wireEnd = (this.socket || this.ws._socket || {}).bytesRead;
      const message = { data: isBinary ? data : data.toString('utf8'), isBinary, wireEnd };
      const w = this.waiters.shift();
      if (w) w.resolve(message);
      else this.queue.push(message);
    });
  }

  /** The first error `ws` reported (a decompression failure, say), for failure messages. */
  errorText() {
    return this.error ? `, after the ws error "${this.error.message}"` : '';
  }

  next(what, ms = TIMEOUT) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.closeInfo) {
      return Promise.reject(
        new Failure(`${what}: connection closed (${this.closeInfo.code} ${this.closeInfo.reason})${this.errorText()} instead of a message`),
      );
    }
    let waiter;
    const p = new Promise((resolve, reject) => {
      waiter = { resolve, reject };
      this.waiters.push(waiter);
    });
    return within(p, ms, what).catch((err) => {
      this.waiters = this.waiters.filter((w) => w !== waiter); // a later message must not be lost
      throw err.message.startsWith(what) ? err : new Failure(`${what}: ${err.message}`);
    });
  }

  send(data, options = {}) {
    return within(
      new Promise((resolve, reject) => this.ws.send(data, options, (err) => (err ? reject(err) : resolve()))),
      BIG_TIMEOUT,
      'send',
    );
  }

  async roundtrip(message, what, ms = TIMEOUT) {
    await this.send(message);
    checkSame(what, message, await this.next(`${what} (reply)`, ms));
  }

  /** No message may arrive within `ms`. */
  async silence(ms, what) {
    await new Promise((r) => setTimeout(r, ms));
    if (this.queue.length) throw new Failure(`${what}: expected no message, received ${short(this.queue[0].data)}`);
  }

  async close(code = 1000, reason = '', what = 'close') {
    this.ws.close(code, reason);
    return within(this.closed, TIMEOUT + 2000, `${what} (close handshake)`);
  }
}

// ------------------------------------------------------------------------------- scenarios

const UNICODE_TEXT = 'héllo wörld — ✓ 日本語 Ελληνικά русский 🚀🦀 \u0000 tab\tnewline\n end \u{10FFFF}';

async function echoBasics(base, perMessageDeflate) {
  const label = `perMessageDeflate=${perMessageDeflate}`;
  const c = await Client.open(`${base}/echo`, { perMessageDeflate });
  const ext = c.ws.extensions || '(none)';
  await c.roundtrip('hello, ferrosock', `[${label}] text echo`);
  await c.roundtrip(Buffer.from([...Array(256).keys()]), `[${label}] binary echo of all 256 byte values`);
  await c.roundtrip('', `[${label}] empty text echo`);
  await c.roundtrip(Buffer.alloc(0), `[${label}] empty binary echo`);
  await c.roundtrip(UNICODE_TEXT, `[${label}] unicode text echo`);
  await c.roundtrip(Buffer.alloc(65535, 0xcd), `[${label}] binary of 65535 bytes`);
  await c.roundtrip(Buffer.alloc(65536, 0xef), `[${label}] binary of 65536 bytes`);

  // Fragmented messages: ws.send(part, {fin: false}) ... {fin: true}. The server must echo one
  // whole message; the marker after it proves no per-fragment echo followed.
  async function fragmented(parts, binary, what) {
    for (let i = 0; i < parts.length; i++) {
      await c.send(parts[i], { binary, fin: i === parts.length - 1 });
    }
    const whole = binary ? Buffer.concat(parts) : parts.join('');
    checkSame(what, whole, await c.next(`${what} (reply)`));
    await c.roundtrip('marker', `${what}: next message after the reassembled echo`);
  }
  await fragmented(['frag-1 ', 'frag-2 ', 'frag-3'], false, `[${label}] fragmented text (3 frames)`);
  await fragmented(['', 'ü', '', '日本', '🚀', ''], false, `[${label}] fragmented unicode text with empty frames`);
  // A UTF-8 character split across two fragments ("é" = c3 a9) is valid once reassembled.
  await fragmented(
    [Buffer.from([0x61, 0xc3]), Buffer.from([0xa9, 0x62])],
    true,
    `[${label}] fragmented binary with a split byte sequence`,
  );
  {
    const what = `[${label}] fragmented text with "é" split across frames`;
    await c.send(Buffer.from([0x61, 0xc3]), { binary: false, fin: false });
    await c.send(Buffer.from([0xa9, 0x62]), { binary: false, fin: true });
    checkSame(what, 'aéb', await c.next(`${what} (reply)`));
  }
  await fragmented(
    Array.from({ length: 256 }, (_, i) => Buffer.alloc(1000, i)),
    true,
    `[${label}] fragmented binary (256 frames)`,
  );

  // Pipelined messages keep their order.
  const sent = Array.from({ length: 100 }, (_, i) => (i % 2 ? `pipelined ${i}` : Buffer.from(`pipelined ${i}`)));
  await Promise.all(sent.map((m) => c.send(m)));
  for (let i = 0; i < sent.length; i++) {
    checkSame(`[${label}] pipelined message ${i} (order kept)`, sent[i], await c.next(`pipelined reply ${i}`));
  }
  const { code } = await c.close(1000, '', label);
  check(code === 1000, `[${label}] close code after a normal close`, 1000, code);
  return `/echo text, binary (256 values), empty, unicode, fragments (incl. split UTF-8), order [${label}, negotiated extension: ${ext}]`;
}

function bigText(size) {
  // Exactly `size` bytes of UTF-8 mixing random ASCII and multi-byte characters.
  const parts = [];
  let total = 0;
  for (;;) {
    const chunk = randomBytes(3000).toString('base64') + 'é✓🚀日';
    const n = Buffer.byteLength(chunk);
    if (total + n > size) break;
    parts.push(chunk);
    total += n;
  }
  parts.push('z'.repeat(size - total));
  return parts.join('');
}

async function echoBig(base, size = 16 * MIB) {
  const c = await Client.open(`${base}/echo`, { maxPayload: 64 * MIB });
  const text = bigText(size);
  check(Buffer.byteLength(text) === size, 'big text size', size, Buffer.byteLength(text));
  let t = Date.now();
  await c.roundtrip(text, `${size / MIB} MiB text echo`, BIG_TIMEOUT);
  const tText = (Date.now() - t) / 1000;
  const data = randomBytes(size);
  t = Date.now();
  await c.roundtrip(data, `${size / MIB} MiB binary echo`, BIG_TIMEOUT);
  const tBin = (Date.now() - t) / 1000;
  // 12 MiB sent as 1 MiB fragments: under serve's 16 MiB message limit.
  const parts = Array.from({ length: 12 }, () => randomBytes(MIB));
  for (let i = 0; i < parts.length; i++) await c.send(parts[i], { binary: true, fin: i === parts.length - 1 });
  checkSame('12 MiB binary in 1 MiB fragments', Buffer.concat(parts), await c.next('12 MiB fragmented reply', BIG_TIMEOUT));
  await c.close(1000, '', 'big echo');
  return `/echo ${size / MIB} MiB text (${tText.toFixed(1)} s) and binary (${tBin.toFixed(1)} s), 12 MiB fragmented: content identical`;
}

async function uppercase(base) {
  const c = await Client.open(`${base}/uppercase`);
  const cases = [
    ['hello', 'HELLO'],
    ['Hello, ferrosock! äöü ß ÿ', 'HELLO, FERROSOCK! ÄÖÜ SS Ÿ'],
    ['', ''],
    ['日本語 🚀 ελληνικά', '日本語 🚀 ΕΛΛΗΝΙΚΆ'],
  ];
  for (const [input, expected] of cases) {
    await c.send(input);
    checkSame(`/uppercase of ${JSON.stringify(input)}`, expected, await c.next(`/uppercase reply to ${JSON.stringify(input)}`));
  }
  await c.send(Buffer.from('abc\xffdef', 'latin1'));
  checkSame('/uppercase of binary abc<ff>def (lossy UTF-8, text reply)', 'ABC\uFFFDDEF', await c.next('/uppercase binary reply'));
  await c.close(1000, '', 'uppercase');
  return '/uppercase text, unicode, empty, binary (lossy)';
}

async function chat(base) {
  const url = `${base}/chat`;
  const WELCOME = 'Welcome on the chat!';
  const JOINED = 'New client connected';
  const LEFT = 'Client disconnected';
  const expect = async (c, who, expected) => {
    const got = await c.next(`/chat ${who} waiting for ${short(expected)}`);
    if (got.data !== expected && c.lastSent === got.data) {
      throw new Failure(
        `/chat ${who}: expected ${short(expected)}, received its own message ${short(got.data)} back ` +
          '(the server must not send a message to its sender)',
      );
    }
    checkSame(`/chat message received by ${who}`, expected, got);
  };

  const clients = {};
  try {
    clients.c1 = await Client.open(url, {}, '/chat connect client 1');
    await expect(clients.c1, 'c1', WELCOME);
    clients.c2 = await Client.open(url, {}, '/chat connect client 2');
    await expect(clients.c2, 'c2', WELCOME);
    await expect(clients.c1, 'c1 (c2 joined)', JOINED);
    clients.c3 = await Client.open(url, {}, '/chat connect client 3');
    await expect(clients.c3, 'c3', WELCOME);
    await expect(clients.c1, 'c1 (c3 joined)', JOINED);
    await expect(clients.c2, 'c2 (c3 joined)', JOINED);

    // Each message reaches the two others and never comes back to its sender: the next
    // sender's message would arrive after such a copy, so `expect` would catch it.
    for (const sender of Object.keys(clients)) {
      const text = `hello from ${sender} ✓`;
      await clients[sender].send(text);
      clients[sender].lastSent = text;
      for (const [name, c] of Object.entries(clients)) {
        if (name !== sender) await expect(c, `${name} (message of ${sender})`, text);
      }
    }
    for (const [name, c] of Object.entries(clients)) await c.silence(0, `/chat ${name} after the fan-out`);
    await new Promise((r) => setTimeout(r, 500));
    for (const [name, c] of Object.entries(clients)) await c.silence(0, `/chat ${name} 0.5 s after the fan-out (no echo to the sender)`);

    await clients.c3.close(1000, '', '/chat c3');
    delete clients.c3;
    await expect(clients.c1, 'c1 (c3 left)', LEFT);
    await expect(clients.c2, 'c2 (c3 left)', LEFT);
    await clients.c2.close(1000, '', '/chat c2');
    delete clients.c2;
    await expect(clients.c1, 'c1 (c2 left)', LEFT);
    await clients.c1.silence(300, '/chat c1 alone');
  } finally {
    await Promise.all(Object.values(clients).map((c) => c.close().catch(() => {})));
  }
  return '/chat with 3 clients: welcome, join notices to others, fan-out without echo, disconnect notices';
}

async function closeCodes(base) {
  const seen = [];
  for (const [code, reason] of [[1000, ''], [1000, 'normal bye'], [3000, 'app code'], [4000, 'bye from node'], [4999, 'x'.repeat(100)]]) {
    const c = await Client.open(`${base}/echo`);
    await c.roundtrip('before close', `close ${code}: echo before closing`);
    const info = await c.close(code, reason, `close ${code}`);
    check(info.code === code, `server close code after the client closed with ${code} ${JSON.stringify(reason)}`, code, info.code);
    seen.push(`${code}->${info.code}`);
  }
  return `close codes echoed: ${seen.join(', ')}`;
}

async function notFound(base) {
  for (const p of ['/nope', '/', '/echo/extra']) {
    let status;
    try {
      const c = await Client.open(`${base}${p}`);
      await c.close();
      status = 101;
    } catch (err) {
      if (err.statusCode === undefined) throw new Failure(`upgrade to ${p}: expected HTTP 404, got ${err}`);
      status = err.statusCode;
    }
    check(status === 404, `HTTP status of an upgrade to ${p}`, 404, status);
  }
  return 'upgrades to /nope, /, /echo/extra rejected with HTTP 404';
}

/** Concurrent client i's round trip r: small text and binary messages. */
async function smallExchange(c, i, r) {
  const m = r % 2 ? Buffer.from(`client ${i} round ${r}`.repeat(50)) : `client ${i} round ${r}`;
  await c.roundtrip(m, `concurrent client ${i} round ${r}`, 30_000);
}

/** `n` clients (with the `ws` options `options`) open at once, then each does `rounds` round
 * trips `exchange(client, i, r)`. */
async function concurrent(base, n = 200, rounds = 5, options = {}, exchange = smallExchange, what = '/echo clients') {
  const start = Date.now();
  const opened = await Promise.allSettled(
    Array.from({ length: n }, (_, i) => Client.open(`${base}/echo`, options, `concurrent client ${i} connect`)),
  );
  const clients = opened.filter((r) => r.status === 'fulfilled').map((r) => r.value);
  try {
    const failedOpen = opened.findIndex((r) => r.status === 'rejected');
    if (failedOpen >= 0) {
      throw new Failure(`${n - clients.length} of ${n} concurrent clients failed to connect; client ${failedOpen}: ${opened[failedOpen].reason}`);
    }
    // All open at once; now every client does its round trips concurrently.
    const results = await within(
      Promise.allSettled(
        clients.map(async (c, i) => {
          for (let r = 0; r < rounds; r++) await exchange(c, i, r);
          const { code } = await c.close(1000, '', `concurrent client ${i}`);
          check(code === 1000, `concurrent client ${i} close code`, 1000, code);
        }),
      ),
      120_000,
      `${n} concurrent clients`,
    );
    const failed = results.map((r, i) => [r, i]).filter(([r]) => r.status === 'rejected');
    if (failed.length) {
      throw new Failure(`${failed.length} of ${n} concurrent clients failed; client ${failed[0][1]}: ${failed[0][0].reason.message}`);
    }
  } finally {
    for (const c of clients) if (!c.closeInfo) c.ws.terminate();
  }
  return `${n} concurrent ${what} x ${rounds} round trips, all open at once (${((Date.now() - start) / 1000).toFixed(1)} s)`;
}

// ------------------------------------------------------------------------------- permessage-deflate

const KIB = 1 << 10;
const THRESHOLD = 1024; // the server sends messages shorter than this uncompressed (RSV1=0)
const DEFLATE_SIZES = [0, 1, 100, 1023, 1024, 1025, 64 * KIB, MIB, 16 * MIB];
// What the server answers to an offer with client_max_window_bits and no other parameter.
// ferrosock's defaults: no context takeover either way, 12-bit windows.
const NO_TAKEOVER = { server_no_context_takeover: null, client_no_context_takeover: null };
const DEFAULT_ANSWER = { ...NO_TAKEOVER, server_max_window_bits: '12', client_max_window_bits: '12' };

/** The parameters of a single permessage-deflate answer, sorted ([name, value|null] pairs), or null. */
function answerParams(header) {
  if (header === undefined) return null;
  const elements = header.split(',').filter((e) => e.trim());
  if (elements.length !== 1) return null;
  const [name, ...params] = elements[0].split(';').map((p) => p.trim());
  if (name.toLowerCase() !== 'permessage-deflate') return null;
  return params
    .map((p) => {
      const eq = p.indexOf('=');
      return eq < 0 ? [p.toLowerCase(), null] : [p.slice(0, eq).trim().toLowerCase(), p.slice(eq + 1).trim().replace(/^"|"$/g, '')];
    })
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

function answerText(expected) {
  return ['permessage-deflate', ...Object.entries(expected).map(([k, v]) => (v === null ? k : `${k}=${v}`))].join('; ');
}

/** The server accepted permessage-deflate with exactly the `expected` parameters. */
function checkAnswer(c, what, expected) {
  const want = JSON.stringify(Object.entries(expected).sort((a, b) => (a[0] < b[0] ? -1 : 1)));
  if (JSON.stringify(answerParams(c.extensionsHeader)) !== want) {
    throw new Failure(
      `${what}: expected the answer Sec-WebSocket-Extensions: ${answerText(expected)} (parameters in any order), ` +
        `received ${JSON.stringify(c.extensionsHeader)}`,
    );
  }
  check(c.ws.extensions === 'permessage-deflate', `${what}: ws.extensions`, 'permessage-deflate', c.ws.extensions);
  return c.extensionsHeader;
}

/** `size` bytes of UTF-8 text from `buf` (longer than `size`): a character cut at the end is
 * replaced by spaces. */
function exactText(buf, size) {
  let end = size;
  while (end > 0 && (buf[end] & 0xc0) === 0x80) end--; // buf[end] continues a character
  return buf.subarray(0, end).toString('utf8') + ' '.repeat(size - end);
}

const repeatTo = (block, size) => Buffer.concat(Array(Math.floor(size / block.length) + 1).fill(block)).subarray(0, size);

const JSON_BLOCK = Buffer.from(
  Array.from(
    { length: 600 },
    (_, i) =>
      JSON.stringify({
        id: i,
        user: `user-${String(i % 50).padStart(2, '0')}`,
        city: ['Zürich', 'Genève', 'Besançon', 'Köln'][i % 4],
        status: i % 3 ? 'active' : 'idle',
        tags: ['alpha', 'beta', 'gamma'].slice(0, (i % 3) + 1),
        score: (i * 37) % 1000,
      }) + ',\n',
  ).join(''),
);
const RECORD_BLOCK = Buffer.concat(
  Array.from({ length: 4000 }, (_, i) => {
    const b = Buffer.alloc(16);
    b.writeUInt32LE(i, 0);
    b.writeUInt16LE(i % 7, 4);
    b.writeUInt16LE(0xbeef, 6);
    b.writeDoubleLE(i * 0.5, 8);
    return Buffer.concat([b, Buffer.from(`\0\0\0\0sensor-${String(i % 10).padStart(2, '0')}`)]);
  }),
);
const samples = new Map();

/** A message of exactly `size` bytes: 'text' (string) or 'binary' (Buffer), 'compressible'
 * (repetitive JSON-ish records) or 'random' (crypto.randomBytes; for text, base64 of random bytes
 * with a few multi-byte characters). Cached: the same arguments give the same message. */
function sample(kind, content, size) {
  const key = `${kind}/${content}/${size}`;
  if (!samples.has(key)) {
    let message;
    if (content === 'compressible') {
      message = kind === 'text' ? exactText(repeatTo(JSON_BLOCK, size + 4), size) : repeatTo(RECORD_BLOCK, size);
    } else if (kind === 'text') {
      const chunks = Array.from({ length: Math.floor(size / 4012) + 1 }, () =>
        Buffer.concat([Buffer.from(randomBytes(3000).toString('base64')), Buffer.from('é✓🚀日')]),
      );
      message = exactText(Buffer.concat(chunks), size);
    } else {
      message = randomBytes(size);
    }
    check(sizeOf(message) === size, `sample ${key}: size`, size, sizeOf(message));
    samples.set(key, message);
  }
  return samples.get(key);
}

const sizeOf = (m) => (Buffer.isBuffer(m) ? m.length : Buffer.byteLength(m));
// The header of an unmasked server frame with a payload of n bytes.
const headerSize = (n) => (n < 126 ? 2 : n < 65536 ? 4 : 10);

/**
 * A round trip on a compressed connection, with a check of what the echo took on the wire
 * (socket.bytesRead): a message under THRESHOLD bytes must come back uncompressed (exactly its
 * size plus a frame header); a longer one compressed (under half its size) if it is
 * `compressible`, and never larger than the uncompressed frame if it is random (the server
 * sends incompressible data as it is). `uncompressed`: every echo must be uncompressed.
 */
async function deflateRoundtrip(c, message, what, ms, { compressible = false, uncompressed = false } = {}) {
  const size = sizeOf(message);
  const before = c.socket.bytesRead;
  await c.send(message);
  const reply = await c.next(`${what} (reply)`, ms || (size >= MIB ? BIG_TIMEOUT : TIMEOUT));
  checkSame(what, message, reply);
  const wire = reply.wireEnd - before;
  const plain = size + headerSize(size);
  if (uncompressed || size < THRESHOLD) {
    if (wire !== plain) {
      throw new Failure(
        `${what}: the echo took ${wire} bytes on the wire, expected ${plain} (an uncompressed frame: ` +
          `${uncompressed ? 'no compression was negotiated' : `messages under ${THRESHOLD} bytes are sent uncompressed`})`,
      );
    }
  } else if (compressible ? wire > size / 2 : wire > plain) {
    throw new Failure(
      `${what}: the echo took ${wire} bytes on the wire for ${size} bytes of ${compressible ? 'compressible' : 'random'} ` +
        `data, expected ${compressible ? `a compressed frame under ${size / 2} bytes` : `at most ${plain} bytes (incompressible data goes as it is)`}`,
    );
  }
  return wire;
}

async function deflateNegotiation(base) {
  const cases = [
    ['default offer (perMessageDeflate: true)', true, DEFAULT_ANSWER],
    ['serverNoContextTakeover', { serverNoContextTakeover: true }, { ...DEFAULT_ANSWER, server_no_context_takeover: null }],
    ['clientNoContextTakeover', { clientNoContextTakeover: true }, { ...DEFAULT_ANSWER, client_no_context_takeover: null }],
    [
      'both no context takeover',
      { serverNoContextTakeover: true, clientNoContextTakeover: true },
      { ...DEFAULT_ANSWER, server_no_context_takeover: null, client_no_context_takeover: null },
    ],
    ['clientMaxWindowBits: false (not offered)', { clientMaxWindowBits: false }, { ...NO_TAKEOVER, server_max_window_bits: '12' }],
    ['15-bit windows asked', { serverMaxWindowBits: 15, clientMaxWindowBits: 15 }, DEFAULT_ANSWER],
    ['smaller windows asked', { serverMaxWindowBits: 11, clientMaxWindowBits: 9 }, { ...NO_TAKEOVER, server_max_window_bits: '11', client_max_window_bits: '9' }],
  ];
  const seen = [];
  for (const [label, perMessageDeflate, expected] of cases) {
    let c;
    try {
      c = await Client.open(`${base}/echo`, { perMessageDeflate }, `[${label}] connect`);
    } catch (err) {
      throw new Failure(`[${label}] perMessageDeflate ${JSON.stringify(perMessageDeflate)}: the handshake failed: ${err.message}`);
    }
    try {
      seen.push(`${label} -> ${checkAnswer(c, `[${label}] perMessageDeflate ${JSON.stringify(perMessageDeflate)}`, expected)}`);
      await c.roundtrip(sample('text', 'compressible', 4 * KIB), `[${label}] 4 KiB compressible text echo`);
    } finally {
      await c.close(1000, '', label);
    }
  }
  return `deflate negotiation on /echo: ${seen.join(' | ')}`;
}

/**
 * Echo round trips of all sizes, text and binary, compressible and random, on one compressed
 * connection (the client compresses every message: threshold 0); then messages that depend on
 * context takeover, a compressed fragmented message, and pipelined messages.
 */
async function deflateRoundtrips(base, label, options, answer, sizes = DEFLATE_SIZES) {
  const start = Date.now();
  let count = 0;
  const c = await Client.open(`${base}/echo`, { perMessageDeflate: { threshold: 0, ...options }, maxPayload: 64 * MIB }, `[${label}] connect`);
  try {
    const raw = checkAnswer(c, `[${label}] perMessageDeflate ${JSON.stringify(options)}`, answer);
    const one = async (message, what, compressible) => {
      await deflateRoundtrip(c, message, `[${label}] ${what}`, undefined, { compressible });
      count++;
    };
    for (const size of sizes) {
      for (const kind of ['text', 'binary']) {
        for (const content of ['compressible', 'random']) {
          await one(sample(kind, content, size), `${content} ${kind} of ${size} bytes`, content === 'compressible');
        }
      }
    }
    // Context takeover across messages: the same message several times in a row, and a random
    // message larger than the window twice (see python_client.py).
    for (const size of [100, 1024, 3000, 64 * KIB]) {
      for (const kind of ['text', 'binary']) {
        for (let n = 1; n <= 3; n++) await one(sample(kind, 'compressible', size), `compressible ${kind} of ${size} bytes, repeat ${n}`, true);
      }
    }
    const probe = randomBytes(6000);
    for (let n = 1; n <= 2; n++) await one(probe, `the same random 6000 bytes, time ${n}`, false);
    for (let n = 1; n <= 2; n++) await one(Buffer.concat([probe.subarray(0, 3000), probe.subarray(0, 3000)]), `3000 random bytes twice in one message, time ${n}`, false);

    // A compressed fragmented message: 16 fragments of 4 KiB.
    {
      const whole = sample('binary', 'compressible', 64 * KIB);
      const parts = Array.from({ length: 16 }, (_, i) => whole.subarray(i * 4096, (i + 1) * 4096));
      for (let i = 0; i < parts.length; i++) await c.send(parts[i], { binary: true, fin: i === parts.length - 1 });
      checkSame(`[${label}] 16 compressed fragments echoed as one message`, whole, await c.next(`[${label}] fragmented reply`));
      count++;
    }
    // Pipelined: 60 messages of 10 B to 3 KiB sent before any reply is read.
    const sent = Array.from({ length: 60 }, (_, i) =>
      i % 2 ? sample('text', 'compressible', 3000).slice(0, 50 * i + 10) : sample('binary', 'random', 50 * i + 10),
    );
    await Promise.all(sent.map((m) => c.send(m)));
    for (let i = 0; i < sent.length; i++) {
      checkSame(`[${label}] pipelined message ${i} (${sizeOf(sent[i])} bytes, order kept)`, sent[i], await c.next(`[${label}] pipelined reply ${i}`));
    }
    count += sent.length;
    const { code } = await c.close(1000, '', label);
    check(code === 1000, `[${label}] close code after a normal close`, 1000, code);
    const largest = Math.max(...sizes);
    return (
      `deflate [${label}] answer ${JSON.stringify(raw)}: ${count} /echo round trips (0 B to ${largest >= MIB ? `${largest / MIB} MiB` : `${largest} B`}, ` +
      `text/binary, compressible/random, repeats, fragmented, pipelined) identical; echoes < ${THRESHOLD} B uncompressed, ` +
      `others compressed (${((Date.now() - start) / 1000).toFixed(1)} s)`
    );
  } finally {
    if (!c.closeInfo) c.ws.terminate();
  }
}

/** Concurrent client i's round trip r on a compressed connection (ws' default threshold, 1024). */
async function deflateExchange(c, i, r) {
  if (r === 0) checkAnswer(c, `concurrent client ${i}`, DEFAULT_ANSWER);
  const prefix = `client ${i} round ${r} `;
  const [message, compressible] = [
    () => [prefix + sample('text', 'compressible', 4 * KIB), true],
    () => [Buffer.concat([Buffer.from(prefix), sample('binary', 'random', 2 * KIB)]), false],
    () => [Buffer.concat([Buffer.from(prefix), sample('binary', 'compressible', 20 * KIB)]), true],
    () => [`${prefix}small`, false],
    () => [prefix + sample('text', 'compressible', 4 * KIB), true],
  ][r % 5]();
  await deflateRoundtrip(c, message, `concurrent client ${i} round ${r}`, 30_000, { compressible });
}

/** A `ferrosock serve --no-deflate` declines every offer; the echo still works, uncompressed. */
async function deflateDeclined(noDeflateBase) {
  let count = 0;
  for (const [label, perMessageDeflate] of [
    ['default offer', true],
    ['offer with every parameter', { serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 10, clientMaxWindowBits: 10, threshold: 0 }],
  ]) {
    const c = await Client.open(`${noDeflateBase}/echo`, { perMessageDeflate, maxPayload: 64 * MIB }, `[--no-deflate, ${label}] connect`);
    try {
      check(c.extensionsHeader === undefined, `[--no-deflate, ${label}] Sec-WebSocket-Extensions in the answer`, '(none)', c.extensionsHeader);
      check(c.ws.extensions === '', `[--no-deflate, ${label}] ws.extensions`, '', c.ws.extensions);
      for (const size of [0, 100, 1024, 64 * KIB, MIB]) {
        for (const kind of ['text', 'binary']) {
          for (const content of ['compressible', 'random']) {
            await deflateRoundtrip(c, sample(kind, content, size), `[--no-deflate, ${label}] ${content} ${kind} of ${size} bytes`, undefined, { uncompressed: true });
            count++;
          }
        }
      }
      await c.close(1000, '', `--no-deflate ${label}`);
    } finally {
      if (!c.closeInfo) c.ws.terminate();
    }
  }
  return `--no-deflate server: both offers declined (no Sec-WebSocket-Extensions), ${count} uncompressed /echo round trips identical`;
}

async function main() {
  const [arg, noDeflateArg, ...rest] = process.argv.slice(2);
  if (!arg || !/^wss?:\/\//.test(arg) || (noDeflateArg !== undefined && !/^wss?:\/\//.test(noDeflateArg)) || rest.length) {
    console.error('usage: node node_client.mjs ws://HOST:PORT [ws://HOST:PORT2 (a --no-deflate server)]');
    return 2;
  }
  const base = arg.replace(/\/+$/, '');
  const scenarios = [
    ['echo (perMessageDeflate offered)', () => echoBasics(base, true)],
    ['echo (perMessageDeflate off)', () => echoBasics(base, false)],
    ['echo 16 MiB', () => echoBig(base)],
    ['uppercase', () => uppercase(base)],
    ['chat', () => chat(base)],
    ['close codes', () => closeCodes(base)],
    ['404', () => notFound(base)],
    ['200 concurrent clients', () => concurrent(base)],
    // permessage-deflate
    ['deflate: negotiation', () => deflateNegotiation(base)],
  ];
  for (const [label, options, extra] of [
    ['context takeover both ways', {}, {}],
    ['serverNoContextTakeover', { serverNoContextTakeover: true }, { server_no_context_takeover: null }],
    ['clientNoContextTakeover', { clientNoContextTakeover: true }, { client_no_context_takeover: null }],
    [
      'serverNoContextTakeover and clientNoContextTakeover',
      { serverNoContextTakeover: true, clientNoContextTakeover: true },
      { server_no_context_takeover: null, client_no_context_takeover: null },
    ],
  ]) {
    scenarios.push([`deflate: round trips, ${label}`, () => deflateRoundtrips(base, label, options, { ...DEFAULT_ANSWER, ...extra })]);
  }
  scenarios.push(
    [
      'deflate: window bits 9 and 10',
      () =>
        deflateRoundtrips(
          base,
          'serverMaxWindowBits 9, clientMaxWindowBits 10',
          { serverMaxWindowBits: 9, clientMaxWindowBits: 10 },
          { ...NO_TAKEOVER, server_max_window_bits: '9', client_max_window_bits: '10' },
          [0, 1, 100, 1023, 1024, 1025, 64 * KIB, MIB],
        ),
    ],
    [
      'deflate: 200 concurrent clients',
      () =>
        concurrent(base, 200, 5, { perMessageDeflate: true }, deflateExchange, 'compressed /echo clients (4 KiB text, 2 KiB random, 20 KiB binary, small text, 4 KiB text)'),
    ],
  );
  if (noDeflateArg) {
    scenarios.push(['deflate: --no-deflate server', () => deflateDeclined(noDeflateArg.replace(/\/+$/, ''))]);
  } else {
    console.log('SKIP  deflate: --no-deflate server (no second URL given)');
  }
  const start = Date.now();
  for (const [name, run] of scenarios) {
    try {
      const detail = await within(run(), 300_000, name);
      console.log(`PASS  ${detail}`);
    } catch (err) {
      const text = err instanceof Failure ? err.message : `unexpected ${err && err.stack ? err.stack : err}`;
      console.error(`FAIL  node/${name}: ${text}`);
      return 1;
    }
  }
  console.log(`node: all ${scenarios.length} scenarios passed in ${((Date.now() - start) / 1000).toFixed(1)} s`);
  return 0;
}

process.exitCode = await main();
// Do not wait for stray sockets or timers: the result is known.
setTimeout(() => process.exit(process.exitCode), 100).unref();
