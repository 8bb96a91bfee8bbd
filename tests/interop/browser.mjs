#!/usr/bin/env node
// Interoperability checks of `ferrosock serve` with headless Chromium (through playwright-core).
//
// Usage: node browser.mjs http://127.0.0.1:PORT
// Environment: CHROMIUM (default /usr/bin/chromium), PEERS_DIR (default <repo>/.peers).
//
// Opens the demo chat page in two tabs and checks the chat through the page's own UI, then
// runs `new WebSocket(...)` inside a page against /echo and /uppercase, and checks that such a
// WebSocket negotiates permessage-deflate and echoes 1 MiB of compressible text and of random
// binary. Prints one PASS line per scenario; on the first failure prints what was expected and
// received and exits 1. Every wait is bounded (10 s by default), so a failure never hangs.

import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const peersDir = process.env.PEERS_DIR || path.resolve(here, '../../.peers');
const nodeModules = process.env.NODE_PEERS_MODULES || path.join(peersDir, 'node/node_modules');
const require = createRequire(path.join(nodeModules, 'noop.js'));
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 10_000;
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

class Failure extends Error {}

function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`${what}: timed out after ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** JSON, cut to `limit` characters (a 1 MiB message would drown the report). */
function brief(value, limit = 600) {
  const json = JSON.stringify(value);
  return json === undefined || json.length <= limit ? json : `${json.slice(0, limit)}... (${json.length} characters)`;
}

function check(condition, what, expected, received) {
  if (!condition) throw new Failure(`${what}: expected ${brief(expected)}, received ${brief(received)}`);
}

/** The texts (and classes) of the page's #log entries. */
function logOf(page) {
  return page.$$eval('#log li', (items) => items.map((li) => ({ text: li.textContent, cls: li.className })));
}

/** Waits until the page's #log has an entry with `text` (and class `cls` if given). */
async function waitForLog(page, who, text, cls) {
  try {
    await page.waitForFunction(
      ([t, c]) => [...document.querySelectorAll('#log li')].some((li) => li.textContent === t && (c === undefined || li.className === c)),
      [text, cls],
      { timeout: TIMEOUT },
    );
  } catch (err) {
    const log = await logOf(page).catch(() => '(unreadable)');
    throw new Failure(
      `${who}: expected #log to show ${JSON.stringify(text)}${cls !== undefined ? ` (class "${cls}")` : ''} ` +
        `within ${TIMEOUT / 1000} s; #log is ${JSON.stringify(log)}`,
    );
  }
}

async function openChatPage(context, base, who) {
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.setDefaultNavigationTimeout(TIMEOUT);
  watchPage(page, who);
  const response = await page.goto(`${base}/`, { timeout: TIMEOUT });
  check(response && response.status() === 200, `${who}: HTTP status of the demo page`, 200, response && response.status());
  try {
    await page.waitForSelector('#status[data-state="open"]', { timeout: TIMEOUT });
  } catch {
    const state = await page.$eval('#status', (s) => `${s.dataset.state}: ${s.textContent}`).catch(() => '?');
    throw new Failure(`${who}: expected #status data-state="open" within ${TIMEOUT / 1000} s; it is ${JSON.stringify(state)}`);
  }
  return page;
}

const pageErrors = [];
function watchPage(page, who) {
  page.on('pageerror', (err) => pageErrors.push(`${who}: ${err.message}`));
}

async function sendFromPage(page, text) {
  await page.fill('#message', text);
  await page.click('#send');
  // The page clears the input after sending.
  await page.waitForFunction(() => document.getElementById('message').value === '', null, { timeout: TIMEOUT });
}

// ------------------------------------------------------------------------------- scenarios

async function chatThroughTheUi(context, base) {
  const a = await openChatPage(context, base, 'page A');
  await waitForLog(a, 'page A', 'Welcome on the chat!', 'system');

  const b = await openChatPage(context, base, 'page B');
  await waitForLog(b, 'page B', 'Welcome on the chat!', 'system');
  await waitForLog(a, 'page A (B joined)', 'New client connected', 'system');

  const fromB = `hello from B ✓ ${Date.now()}`;
  await sendFromPage(b, fromB);
  await waitForLog(a, 'page A (message typed in B)', fromB, '');
  await waitForLog(b, 'page B (its own message, shown locally)', fromB, 'me');

  // Answer from A: once B shows it, any echo of B's own message would already be in B's log
  // (the server sends to B in order).
  const fromA = `reply from A ${Date.now()}`;
  await sendFromPage(a, fromA);
  await waitForLog(b, 'page B (message typed in A)', fromA, '');
  await waitForLog(a, 'page A (its own message, shown locally)', fromA, 'me');
  await b.waitForTimeout(300);

  const logA = await logOf(a);
  const logB = await logOf(b);
  const expectedA = [
    { text: 'Welcome on the chat!', cls: 'system' },
    { text: 'New client connected', cls: 'system' },
    { text: fromB, cls: '' },
    { text: fromA, cls: 'me' },
  ];
  const expectedB = [
    { text: 'Welcome on the chat!', cls: 'system' },
    { text: fromB, cls: 'me' },
    { text: fromA, cls: '' },
  ];
  check(JSON.stringify(logA) === JSON.stringify(expectedA), 'page A #log (no echo of its own message)', expectedA, logA);
  check(JSON.stringify(logB) === JSON.stringify(expectedB), 'page B #log (no echo of its own message)', expectedB, logB);

  await b.close();
  await waitForLog(a, 'page A (B closed its tab)', 'Client disconnected', 'system');
  return a;
}

/** Runs `new WebSocket(url)` in the page and does the given exchanges; returns what came back. */
function exchangeInPage(page, url, steps) {
  return within(
    page.evaluate(
      async ([url, steps, timeout]) => {
        const bounded = (p, what) =>
          Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: timed out`)), timeout))]);
        const ws = new WebSocket(url);
        ws.binaryType = 'arraybuffer';
        const inbox = [];
        let wake = null;
        let closeEvent = null;
        ws.onmessage = (e) => {
          inbox.push(e.data);
          if (wake) wake();
        };
        const closed = new Promise((resolve) => {
          ws.onclose = (e) => {
            closeEvent = { code: e.code, reason: e.reason, wasClean: e.wasClean };
            resolve(closeEvent);
            if (wake) wake();
          };
        });
        const opened = await bounded(
          new Promise((resolve) => {
            ws.onopen = () => resolve(true);
            ws.onerror = () => resolve(false);
          }),
          'open',
        );
        if (!opened) {
          const info = await bounded(closed, 'close after a failed open');
          return { opened: false, close: info };
        }
        const next = async (what) => {
          while (!inbox.length) {
            if (closeEvent) throw new Error(`${what}: closed (${closeEvent.code}) instead of a message`);
            await bounded(new Promise((r) => (wake = r)), what);
          }
          return inbox.shift();
        };
        const describe = (d) =>
          typeof d === 'string' ? { type: 'text', value: d } : { type: 'binary', value: Array.from(new Uint8Array(d)) };
        const replies = [];
        try {
          for (const step of steps) {
            if (step.text !== undefined) ws.send(step.text);
            else ws.send(new Uint8Array(step.binary).buffer);
            replies.push(describe(await next(`reply ${replies.length}`)));
          }
        } catch (err) {
          return { opened: true, error: String(err.message), replies };
        }
        ws.close(1000);
        return { opened: true, replies, close: await bounded(closed, 'close handshake') };
      },
      [url, steps, TIMEOUT],
    ),
    TIMEOUT * 3,
    `page.evaluate WebSocket ${url}`,
  );
}

function expectReplies(what, result, expected) {
  check(result.opened, `${what}: WebSocket open in the page`, true, result);
  if (result.error) throw new Failure(`${what}: ${result.error} (replies so far: ${brief(result.replies)})`);
  for (let i = 0; i < expected.length; i++) {
    check(JSON.stringify(result.replies[i]) === JSON.stringify(expected[i]), `${what}: reply ${i}`, expected[i], result.replies[i]);
  }
}

async function echoInPage(page, wsBase) {
  const all = Array.from({ length: 256 }, (_, i) => i);
  const big = 'x'.repeat(1 << 20) + 'é';
  const result = await exchangeInPage(page, `${wsBase}/echo`, [
    { text: 'hello from chromium' },
    { binary: all },
    { text: '' },
    { binary: [] },
    { text: 'héllo wörld ✓ 日本語 🚀' },
    { text: big },
  ]);
  expectReplies('/echo in the browser', result, [
    { type: 'text', value: 'hello from chromium' },
    { type: 'binary', value: all },
    { type: 'text', value: '' },
    { type: 'binary', value: [] },
    { type: 'text', value: 'héllo wörld ✓ 日本語 🚀' },
    { type: 'text', value: big },
  ]);
  check(result.close.code === 1000, '/echo in the browser: close code after ws.close(1000)', 1000, result.close.code);

  return '/echo from page.evaluate: text, binary ArrayBuffer (256 values), empty, unicode, 1 MiB text, close 1000';
}

async function closeCodeInPage(page, wsBase) {
  const result = await within(
    page.evaluate(
      async ([url, timeout]) => {
        const ws = new WebSocket(url);
        const done = new Promise((resolve, reject) => {
          setTimeout(() => reject(new Error('timed out')), timeout);
          ws.onopen = () => ws.close(4000, 'bye from chromium');
          ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
        });
        return done;
      },
      [`${wsBase}/echo`, TIMEOUT],
    ),
    TIMEOUT * 2,
    'close 4000 from the page',
  );
  check(result.code === 4000 && result.wasClean, 'close event in the page after ws.close(4000, reason)', { code: 4000, wasClean: true }, result);
  const notFound = await exchangeInPage(page, `${wsBase}/nope`, []);
  check(!notFound.opened && notFound.close.code === 1006, 'new WebSocket(/nope) in the page fails (404 → close 1006)', { opened: false, code: 1006 }, notFound);
  return 'close 4000 from the page echoed (clean close), WebSocket to /nope fails with 1006';
}

/**
 * permessage-deflate from the browser: Chromium always offers it; the page's WebSocket to /echo
 * must have negotiated it (ws.extensions), and a 1 MiB compressible text and a 1 MiB random
 * binary message must come back identical (compared inside the page).
 */
async function deflateInPage(page, wsBase) {
  const result = await within(
    page.evaluate(
      async ([url, timeout]) => {
        const bounded = (p, what) =>
          Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: timed out`)), timeout))]);
        const ws = new WebSocket(url);
        ws.binaryType = 'arraybuffer';
        const inbox = [];
        let wake = null;
        let closeEvent = null;
        ws.onmessage = (e) => {
          inbox.push(e.data);
          if (wake) wake();
        };
        const closed = new Promise((resolve) => {
          ws.onclose = (e) => {
            closeEvent = { code: e.code, reason: e.reason, wasClean: e.wasClean };
            resolve(closeEvent);
            if (wake) wake();
          };
        });
        const opened = await bounded(
          new Promise((resolve) => {
            ws.onopen = () => resolve(true);
            ws.onerror = () => resolve(false);
          }),
          'open',
        );
        if (!opened) return { opened: false, close: await bounded(closed, 'close after a failed open') };
        const next = async (what) => {
          while (!inbox.length) {
            if (closeEvent) throw new Error(`${what}: closed (${closeEvent.code}) instead of a message`);
            await bounded(new Promise((r) => (wake = r)), what);
          }
          return inbox.shift();
        };

        // 1 MiB of JSON-ish records (ASCII: 1 MiB characters = 1 MiB bytes).
        const records = [];
        let length = 0;
        for (let i = 0; length < 1 << 20; i++) {
          const r = JSON.stringify({ id: i, user: `user-${i % 50}`, status: i % 3 ? 'active' : 'idle', tags: ['alpha', 'beta'].slice(0, (i % 2) + 1), score: (i * 37) % 1000 }) + ',\n';
          records.push(r);
          length += r.length;
        }
        const text = records.join('').slice(0, 1 << 20);
        const random = new Uint8Array(1 << 20);
        for (let i = 0; i < random.length; i += 65536) crypto.getRandomValues(random.subarray(i, i + 65536));

        const results = [];
        try {
          ws.send(text);
          const gotText = await next('1 MiB compressible text reply');
          let i = 0;
          if (typeof gotText === 'string') while (i < text.length && i < gotText.length && text[i] === gotText[i]) i++;
          results.push({
            what: '1 MiB compressible text',
            ok: gotText === text,
            type: typeof gotText === 'string' ? 'text' : 'binary',
            length: typeof gotText === 'string' ? gotText.length : gotText.byteLength,
            firstDifference: i,
          });
          ws.send(random);
          const gotBinary = await next('1 MiB random binary reply');
          const bytes = gotBinary instanceof ArrayBuffer ? new Uint8Array(gotBinary) : null;
          let j = 0;
          if (bytes) while (j < random.length && j < bytes.length && random[j] === bytes[j]) j++;
          results.push({
            what: '1 MiB random binary',
            ok: bytes !== null && bytes.length === random.length && j === random.length,
            type: bytes ? 'binary' : 'text',
            length: bytes ? bytes.length : gotBinary.length,
            firstDifference: j,
          });
        } catch (err) {
          return { opened: true, extensions: ws.extensions, error: String(err.message), results };
        }
        ws.close(1000);
        return { opened: true, extensions: ws.extensions, results, close: await bounded(closed, 'close handshake') };
      },
      [`${wsBase}/echo`, TIMEOUT],
    ),
    TIMEOUT * 4,
    'permessage-deflate in the page',
  );
  check(result.opened, 'deflate in the browser: WebSocket open in the page', true, result);
  check(
    typeof result.extensions === 'string' && /^permessage-deflate(;|$)/.test(result.extensions.trim()),
    'deflate in the browser: ws.extensions (negotiated extension)',
    'permessage-deflate; ...',
    result.extensions,
  );
  if (result.error) throw new Failure(`deflate in the browser: ${result.error} (results so far: ${brief(result.results)})`);
  for (const r of result.results) {
    const expected = { what: r.what, ok: true, type: r.what.includes('text') ? 'text' : 'binary', length: 1 << 20, firstDifference: 1 << 20 };
    check(JSON.stringify(r) === JSON.stringify(expected), `deflate in the browser: echo of the ${r.what} message (compared in the page)`, expected, r);
  }
  check(result.results.length === 2, 'deflate in the browser: replies', 2, result.results.length);
  check(result.close.code === 1000, 'deflate in the browser: close code after ws.close(1000)', 1000, result.close.code);
  return `permessage-deflate from page.evaluate: ws.extensions ${JSON.stringify(result.extensions)}; 1 MiB compressible text and 1 MiB random binary echoed identical`;
}

async function uppercaseInPage(page, wsBase) {
  const result = await exchangeInPage(page, `${wsBase}/uppercase`, [
    { text: 'hello from chromium' },
    { text: 'äöü ß' },
    { binary: [0x61, 0x62, 0xff] },
  ]);
  expectReplies('/uppercase in the browser', result, [
    { type: 'text', value: 'HELLO FROM CHROMIUM' },
    { type: 'text', value: 'ÄÖÜ SS' },
    { type: 'text', value: 'AB\uFFFD' },
  ]);
  return '/uppercase from page.evaluate: text, unicode, binary (lossy, text reply)';
}

async function main() {
  const arg = process.argv[2];
  if (!arg || !/^https?:\/\//.test(arg)) {
    console.error('usage: node browser.mjs http://HOST:PORT');
    return 2;
  }
  const base = arg.replace(/\/+$/, '');
  const wsBase = base.replace(/^http/, 'ws');
  const userDataDir = mkdtempSync(path.join(os.tmpdir(), 'ferrosock-chromium-'));
  const start = Date.now();
  let context;
  try {
    context = await within(
      chromium.launchPersistentContext(userDataDir, {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_ARGS,
        timeout: 30_000,
      }),
      35_000,
      `launching ${CHROMIUM}`,
    );
    // The persistent context opens with one blank tab; it is not needed.
    for (const p of context.pages()) await p.close();

    const scenarios = [
      ['chat through the demo page', async () => {
        const page = await chatThroughTheUi(context, base);
        scenarios.page = page;
        return 'demo page: two tabs connected; welcome, join notice, B→A message without echo to B, A→B, disconnect notice';
      }],
      ['echo in the page', () => echoInPage(scenarios.page, wsBase)],
      ['close codes in the page', () => closeCodeInPage(scenarios.page, wsBase)],
      ['uppercase in the page', () => uppercaseInPage(scenarios.page, wsBase)],
      ['permessage-deflate in the page', () => deflateInPage(scenarios.page, wsBase)],
    ];
    for (const [name, run] of scenarios) {
      try {
        const detail = await within(run(), 60_000, name);
        if (pageErrors.length) throw new Failure(`JavaScript errors in the page: ${pageErrors.join('; ')}`);
        console.log(`PASS  ${detail}`);
      } catch (err) {
        const text = err instanceof Failure ? err.message : `unexpected ${err && err.stack ? err.stack : err}`;
        console.error(`FAIL  browser/${name}: ${text}`);
        return 1;
      }
    }
    console.log(`browser: all ${scenarios.length} scenarios passed in ${((Date.now() - start) / 1000).toFixed(1)} s`);
    return 0;
  } catch (err) {
    console.error(`FAIL  browser: ${err instanceof Failure ? err.message : err && err.stack ? err.stack : err}`);
    return 1;
  } finally {
    if (context) await within(context.close(), 15_000, 'closing the browser').catch((err) => console.error(`browser: ${err.message}`));
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
setTimeout(() => process.exit(process.exitCode), 100).unref();
