#!/usr/bin/env node
// Opens one page in headless Chromium (through playwright-core) and waits for the page's own
// script to finish: it sets document.title to "DONE ..." or "FAIL ...". Prints the title and
// the navigation's protocol (nextHopProtocol: "http/1.1", "h2"), then exits (1 on FAIL or a
// timeout). Used by the Rust tests whose servers serve the page (tests/it/doors.rs, http2.rs).
//
// Usage: node browser_page.mjs URL [--ignore-certificate-errors]
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

const [url, ...flags] = process.argv.slice(2);
const profile = mkdtempSync(path.join(os.tmpdir(), 'ferrosock-chromium-'));
const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', ...flags];
let status = 1;
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args,
    ignoreHTTPSErrors: flags.includes('--ignore-certificate-errors'),
  });
  const page = await context.newPage();
  page.on('console', (message) => console.error(`page: ${message.text()}`));
  await page.goto(url, { timeout: 20_000 });
  await page.waitForFunction(() => /^(DONE|FAIL)/.test(document.title), null, { timeout: 20_000 });
  const title = await page.title();
  const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  console.log(title);
  console.log(`navigation: ${protocol}`);
  status = title.startsWith('DONE') ? 0 : 1;
} catch (err) {
  console.log(`FAIL ${err.message.split('\n')[0]}`);
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(status);
