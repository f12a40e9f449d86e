#!/usr/bin/env node
// UI first-load benchmark: bytes on the wire and time to the first row for the workspace's chats
// and orders and the portal's tenants, in headless Chromium, median of N loads. See
// bench/README.md (`ui`). Needs `npm ci` in e2e/ (playwright-core comes from there, through the
// e2e harness) and Chromium (/usr/bin/chromium or CHROMIUM_PATH).
//
//   node bench/ui_load.mjs [--bin PATH] [--out FILE] [--loads N]
//
// Progress goes to stderr, the markdown report to stdout (and to --out if given).

import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, release } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';

import { ROOT, startServer, launchBrowser, newPage, signIn, VIEWPORT } from '../e2e/ui/kit.mjs';

const TARGET_BYTES = 250_000; // "under 250 KB compressed for a first load"
const TARGET_MS = 300; // "under 300 ms to the first row"
const ROW_TIMEOUT_MS = 15_000;

const { values: opts } = parseArgs({
  options: {
    bin: { type: 'string' },
    out: { type: 'string' },
    root: { type: 'string' }, // bench/run passes it to every suite; ROOT is known here
    loads: { type: 'string', default: process.env.UI_LOADS || '10' },
  },
});
const LOADS = Number(opts.loads);
if (!Number.isInteger(LOADS) || LOADS < 1) throw new Error(`--loads ${opts.loads}: a whole number, at least 1`);
const BINARY = opts.bin || process.env.TENANTD_BIN || join(ROOT, 'target', 'release', 'tenantd');

const log = (...a) => console.error('ui:', ...a);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/**
 * One cold load of `url` in a fresh context holding `storageState` (signed in, empty cache).
 * Returns { bytes, requests, firstRowMs }: bytes as they came over the wire (compressed bodies
 * plus headers: Chromium's encodedDataLength of every finished request), and the page's
 * performance.now() (milliseconds since navigation start) when `row` first entered the DOM.
 */
async function load(browser, storageState, url, row) {
  const page = await newPage(browser, { storageState });
  const context = page.context();
  try {
    // Noted by the page itself, in the mutation that inserts the row: no polling delay from here.
    await page.addInitScript((selector) => {
      const seen = () => {
        if (window.__firstRowAt === undefined && document.querySelector(selector)) {
          window.__firstRowAt = performance.now();
          observer.disconnect();
        }
      };
      const observer = new MutationObserver(seen);
      observer.observe(document, { childList: true, subtree: true });
    }, row);
    const cdp = await context.newCDPSession(page);
    let bytes = 0;
    let requests = 0;
    cdp.on('Network.loadingFinished', (e) => { bytes += e.encodedDataLength; requests += 1; });
    await cdp.send('Network.enable');

    await page.goto(url, { waitUntil: 'commit' });
    await page.waitForFunction(() => window.__firstRowAt !== undefined, null, { timeout: ROW_TIMEOUT_MS })
      .catch(async (e) => {
        const screen = await page.locator('[data-screen]').first().getAttribute('data-screen').catch(() => null);
        throw new Error(`no ${row} at ${url} within ${ROW_TIMEOUT_MS} ms (screen: ${screen}): ${e.message.split('\n')[0]}`);
      });
    // Whatever the first load still fetches after the first row counts too.
    await page.waitForLoadState('networkidle', { timeout: 10_000 }).catch(() => {});
    const firstRowMs = await page.evaluate(() => window.__firstRowAt);
    return { bytes, requests, firstRowMs };
  } finally {
    await context.close();
  }
}

async function session(browser, url, email, password) {
  const page = await newPage(browser);
  try {
    await signIn(page, url, email, password);
    return await page.context().storageState();
  } finally {
    await page.context().close();
  }
}

function header(browser) {
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    if (execFileSync('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).trim()) {
      commit += ' (with uncommitted changes)';
    }
  } catch { /* not a git checkout */ }
  return [
    '# UI first load',
    '',
    `- date: ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
    `- commit: ${commit}`,
    `- nproc: ${availableParallelism()} (browser and server share them)`,
    `- Chromium ${browser.version()}, kernel ${release()}, viewport ${VIEWPORT.width}x${VIEWPORT.height}`,
    '',
  ];
}

const verdict = (ok) => (ok ? 'ok' : '**FAIL**');
const kb = (b) => (b / 1000).toFixed(1);

let server;
let browser;
async function cleanup() {
  await browser?.close().catch(() => {});
  await server?.stop();
}

async function main() {
  log(`server ${BINARY}`);
  server = await startServer({ binary: BINARY });
  try {
    browser = await launchBrowser();
    const acme = server.host('acme');
    log('signing in as alice@acme.test and as the first system admin');
    const alice = await session(browser, `${acme}/`, 'alice@acme.test');
    const admin = await session(browser, `${server.url}/`, server.admin.email, server.admin.password);
    const pages = [
      { name: 'workspace: chats', url: `${acme}/chats`, row: '[data-testid="chat-row"]', state: alice },
      { name: 'workspace: orders', url: `${acme}/orders`, row: '[data-testid="order-row"]', state: alice },
      { name: 'portal: tenants', url: `${server.url}/`, row: '[data-testid="tenant-row"]', state: admin },
    ];
    const rows = [];
    for (const p of pages) {
      log(`${p.name}: 1 warm-up load, then ${LOADS}`);
      await load(browser, p.state, p.url, p.row);
      const runs = [];
      for (let i = 0; i < LOADS; i += 1) runs.push(await load(browser, p.state, p.url, p.row));
      const bytes = runs.map((r) => r.bytes);
      const ms = runs.map((r) => r.firstRowMs);
      const mb = median(bytes);
      const mm = median(ms);
      rows.push([
        p.name,
        `\`${new URL(p.url).pathname}\``,
        `${kb(mb)} (${kb(Math.min(...bytes))}–${kb(Math.max(...bytes))})`,
        String(median(runs.map((r) => r.requests))),
        verdict(mb < TARGET_BYTES),
        `${mm.toFixed(0)} (${Math.min(...ms).toFixed(0)}–${Math.max(...ms).toFixed(0)})`,
        verdict(mm < TARGET_MS),
      ]);
    }
    const lines = [
      ...header(browser),
      `Median of ${LOADS} cold loads each (fresh context: signed in, empty cache), after one warm-up.`,
      '',
      '| page | path | kB on the wire, median (min–max) | requests | < 250 kB | ms to first row, median (min–max) | < 300 ms |',
      '|---|---|---|---|---|---|---|',
      ...rows.map((r) => `| ${r.join(' | ')} |`),
      '',
      'kB = 1000 bytes, compressed bodies plus headers as received (Chromium\'s encodedDataLength of',
      'every request the load made until the network was idle; WebSocket frames not included).',
      'ms = the page\'s performance.now() when the first row entered the DOM (0 = navigation start).',
      '',
    ];
    const report = lines.join('\n');
    process.stdout.write(report);
    if (opts.out) {
      mkdirSync(dirname(opts.out), { recursive: true });
      writeFileSync(opts.out, report);
    }
  } finally {
    await cleanup();
  }
}

// Stopped from outside (bench/run passes on its TERM): the server and its data go too.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => cleanup().finally(() => process.exit(130)));
}

main().catch((e) => {
  log(e.stack || String(e));
  process.exitCode = 1;
});
