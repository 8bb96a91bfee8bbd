#!/usr/bin/env node
// Opens the live status page (web/status.html, served at /status on the metrics listener of
// `ferrosock serve --metrics`) in headless Chromium (through playwright-core) and checks that
// it works on its own: every request it makes goes to the page's own host:port (no CDN), no
// page error and no console error, and within 30 s it is live and shows traffic for one
// endpoint (the caller drives echo traffic meanwhile): the endpoint's section, a messages
// chart of at least 2 samples, connections > 0 and messages received > 0. Prints
//   PASS connections=<n> messages_received=<rate> points=<n> samples=<n>
// and exits 0, or prints FAIL <reason> and exits 1.
//
// With --hold SECONDS (soak, scripts/soak-status): once live, keeps the page open that long and
// every 10 s prints `heap <elapsed_s> <usedJSHeapSize bytes> <DOM nodes> <samples>`, after a
// forced garbage collection (Chromium runs with --enable-precise-memory-info and
// --js-flags=--expose-gc), then checks the page again and prints the PASS line.
//
// Usage: node status_page.mjs URL ENDPOINT_PATH [--screenshot FILE] [--hold SECONDS]
// Environment: CHROMIUM (default /usr/bin/chromium), PEERS_DIR (default <repo>/.peers).

import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const peersDir = process.env.PEERS_DIR || path.resolve(here, '../../.peers');
const require = createRequire(path.join(peersDir, 'node/node_modules', 'noop.js'));
const { chromium } = require('playwright-core');

const TIMEOUT = 30_000;
const HEAP_EVERY = 10_000;

const usage = 'usage: node status_page.mjs URL ENDPOINT_PATH [--screenshot FILE] [--hold SECONDS]';
const positional = [];
let screenshot = null;
let hold = null;
for (let argv = process.argv.slice(2); argv.length;) {
  const arg = argv.shift();
  if (arg === '--screenshot' && argv.length) screenshot = argv.shift();
  else if (arg === '--hold' && argv.length) hold = Number(argv.shift());
  else positional.push(arg);
}
if (positional.length !== 2 || (hold !== null && !(hold >= 0))) {
  console.log(`FAIL ${usage}`);
  process.exit(1);
}
const [url, endpoint] = positional;
const origin = new URL(url).host;

class Failure extends Error {}

// Everything that goes wrong in the page while we wait; the first one fails the run.
const problems = [];
let noticeProblem = () => {};
function problem(text) {
  problems.push(text);
  noticeProblem();
}
const problemRaised = new Promise((resolve) => { noticeProblem = resolve; });

function checkHost(what, requested) {
  const target = new URL(requested);
  if (target.protocol === 'data:' || target.protocol === 'about:') return;
  if (target.host !== origin) problem(`${what} to another host: ${requested}`);
}

// Figures of the endpoint's section, read in the page.
function snapshot(page) {
  return page.evaluate((endpoint) => {
    const section = [...document.querySelectorAll('section[data-endpoint]')]
      .find((s) => s.getAttribute('data-endpoint') === endpoint);
    const figure = (name) => Number(section?.querySelector(`[data-figure="${name}"]`)?.getAttribute('data-value'));
    return {
      state: document.body.dataset.state,
      samples: Number(document.body.dataset.samples),
      endpoints: [...document.querySelectorAll('section[data-endpoint]')].map((s) => s.getAttribute('data-endpoint')),
      section: Boolean(section),
      points: Number(section?.querySelector('svg[data-chart="messages"]')?.getAttribute('data-points')),
      connections: figure('connections'),
      messagesReceived: figure('messages_received'),
    };
  }, endpoint);
}

function ready(s) {
  return s.state === 'live' && s.section && s.points >= 2 && s.connections > 0 && s.messagesReceived > 0;
}

function passLine(s) {
  return `PASS connections=${s.connections} messages_received=${s.messagesReceived} points=${s.points} samples=${s.samples}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const profile = mkdtempSync(path.join(os.tmpdir(), 'ferrosock-chromium-'));
const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
if (hold !== null) args.push('--enable-precise-memory-info', '--js-flags=--expose-gc');
let status = 1;
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args,
    viewport: { width: 1100, height: 800 },
  });
  const page = await context.newPage();
  page.on('request', (request) => checkHost('request', request.url()));
  page.on('websocket', (socket) => checkHost('WebSocket', socket.url()));
  page.on('pageerror', (error) => problem(`page error: ${error.message.split('\n')[0]}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problem(`console error: ${message.text()}`);
  });
  const failed = problemRaised.then(() => { throw new Failure(problems[0]); });
  failed.catch(() => {});   // raced below; a problem outside a race is checked at the end

  await Promise.race([page.goto(url, { timeout: TIMEOUT }), failed]);
  // Poll rather than waitForFunction, so that the failure says what was missing.
  let last = await snapshot(page);
  const deadline = Date.now() + TIMEOUT;
  while (!ready(last)) {
    if (problems.length) throw new Failure(problems[0]);
    if (Date.now() > deadline) {
      throw new Failure(`not ready within ${TIMEOUT / 1000} s: state=${last.state} endpoints=${JSON.stringify(last.endpoints)} `
        + `points=${last.points} connections=${last.connections} messages_received=${last.messagesReceived}`);
    }
    await Promise.race([sleep(250), failed]);
    last = await snapshot(page);
  }

  if (hold !== null) {
    const start = Date.now();
    const until = (ms) => Promise.race([sleep(Math.max(0, start + ms - Date.now())), failed]);
    for (let next = 0; next <= hold * 1000; next += HEAP_EVERY) {
      await until(next);
      const heap = await page.evaluate(() => {
        window.gc();
        return {
          used: performance.memory.usedJSHeapSize,
          nodes: document.getElementsByTagName('*').length,
          samples: Number(document.body.dataset.samples),
        };
      });
      console.log(`heap ${Math.round((Date.now() - start) / 1000)} ${heap.used} ${heap.nodes} ${heap.samples}`);
    }
    await until(hold * 1000);
    last = await snapshot(page);
    if (last.state !== 'live') throw new Failure(`state ${last.state} at the end of the hold`);
  }
  if (problems.length) throw new Failure(problems[0]);

  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  console.log(passLine(last));
  status = 0;
} catch (err) {
  console.log(`FAIL ${err.message.split('\n')[0]}`);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(status);
