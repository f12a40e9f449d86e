// The browser test harness for the bundled web UI: the demo server, Debian's Chromium driven by
// playwright-core, sign-in through the UI's own form, axe-core, screenshots, and a record of
// every network answer. UI tests (e2e/ui/*.test.mjs) and bench/ui_load.mjs use it.
//
// A test file usually starts with:
//
//   const ui = setupUi();                     // before(): server + browser; after(): both stopped
//   test('…', { skip: ui.skip }, async () => {
//     const page = await newPage(ui.browser);
//     await signIn(page, ui.server.host('acme') + '/chats', 'alice@acme.test');
//     await checkA11y(page, 'chats');
//     await screenshot(page, 'chats');
//   });
//
// Without Chromium the tests are skipped with a message saying how to install it, unless the
// environment variable CI is set: then they fail, so CI never passes by skipping them.

import { before, after } from 'node:test';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';

import { chromium } from 'playwright-core';

import { ROOT, DEMO_PASSWORD, startServer } from '../server.mjs';

export { ROOT, DEMO_PASSWORD, startServer };

/** The viewport of every context and desktop screenshot. */
export const VIEWPORT = Object.freeze({ width: 1280, height: 800 });
/** The phone-sized viewport (`newPage(browser, { phone: true })`, `phoneScreenshot`). */
export const PHONE = Object.freeze({ width: 375, height: 740 });
/** Where `screenshot()` writes by default; the README shows these files. */
export const SCREENSHOTS = join(ROOT, 'docs', 'screenshots');

const DEFAULT_CHROMIUM = '/usr/bin/chromium';
const INSTALL_HINT = 'install it with `apt-get install chromium` or point CHROMIUM_PATH at a Chromium';

// The flags keep a headless Chromium on loopback and quiet: no sandbox (CI containers run as
// root), no GPU, nothing fetched in the background. Chromium resolves *.localhost to loopback
// by itself in most builds; the resolver rule makes sure, so `acme.localhost:PORT` reaches the
// server without touching /etc/hosts. No proxy: every address a test opens is local.
export const CHROMIUM_ARGS = Object.freeze([
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-proxy-server',
  '--host-resolver-rules=MAP *.localhost 127.0.0.1',
]);

/** Is CI set (to anything but empty, 0 or false)? Then a missing browser is a failure. */
export function inCi() {
  const ci = process.env.CI;
  return !!ci && ci !== '0' && ci.toLowerCase() !== 'false';
}

/** The Chromium to drive: CHROMIUM_PATH if set, else /usr/bin/chromium; null if absent. */
export function chromiumPath() {
  const wanted = process.env.CHROMIUM_PATH || DEFAULT_CHROMIUM;
  return existsSync(wanted) ? wanted : null;
}

function missingMessage() {
  const wanted = process.env.CHROMIUM_PATH || DEFAULT_CHROMIUM;
  const ci = inCi() ? ' (CI is set, so browser tests fail rather than skip)' : '';
  return `no Chromium at ${wanted}: ${INSTALL_HINT}${ci}`;
}

/**
 * For `test(name, { skip: browserSkip() }, fn)`: a reason to skip when there is no Chromium,
 * else false. With CI set it is always false, so the test runs and `launchBrowser()` fails.
 */
export function browserSkip() {
  if (chromiumPath() || inCi()) return false;
  return `browser tests skipped: ${missingMessage()}`;
}

/**
 * First line of a browser test: `if (!skipUnlessBrowser(t)) return;`. Without Chromium it marks
 * the test skipped and returns false, or throws when CI is set.
 */
export function skipUnlessBrowser(t) {
  if (chromiumPath()) return true;
  if (inCi()) throw new Error(missingMessage());
  t.skip(`browser tests skipped: ${missingMessage()}`);
  return false;
}

/**
 * Launches headless Chromium with CHROMIUM_ARGS (plus `options.args`; `options.env` replaces
 * the browser's environment). Throws a clear error when it is missing.
 */
export async function launchBrowser(options = {}) {
  const executablePath = chromiumPath();
  if (!executablePath) throw new Error(missingMessage());
  return chromium.launch({
    executablePath,
    headless: true,
    args: [...CHROMIUM_ARGS, ...(options.args || [])],
    ...(options.env ? { env: options.env } : {}),
  });
}

/**
 * Registers before()/after() hooks for a test file: one demo server (`startServer(serverOptions)`)
 * and one browser for all its tests. Returns `{ skip, server, browser }`; `server` and `browser`
 * are filled in by before(). Pass `ui.skip` as the tests' `skip` option. Nothing is started
 * when the tests are skipped.
 */
export function setupUi(serverOptions = {}) {
  const ui = { skip: browserSkip(), server: null, browser: null };
  before(async () => {
    if (ui.skip) return;
    ui.server = await startServer(serverOptions);
    ui.browser = await launchBrowser();
  });
  after(async () => {
    await ui.browser?.close();
    await ui.server?.stop();
  });
  return ui;
}

/**
 * A page in a fresh context (its own cookies and cache: one context per person). Options:
 * `phone: true` for a 375x740 touch screen; anything else goes to browser.newContext().
 * Contexts keep the pages' CSP: never pass bypassCSP, since a test must see what a person's
 * browser would refuse.
 */
export async function newPage(browser, { phone = false, ...contextOptions } = {}) {
  const context = await browser.newContext({
    viewport: phone ? { ...PHONE } : { ...VIEWPORT },
    ...(phone ? { isMobile: true, hasTouch: true } : {}),
    locale: 'en-GB',
    timezoneId: 'UTC',
    ...contextOptions,
  });
  return context.newPage();
}

/**
 * Signs in through the UI: opens `url` (skipped when url is null: the page already shows the
 * form), fills the fields labelled "Email" and "Password" of `[data-screen=signin]`, presses
 * the "Sign in" button and waits until another `[data-screen]` replaces the sign-in screen.
 * The same form serves people (workspace) and system admins (portal).
 */
export async function signIn(page, url, email, password = DEMO_PASSWORD, { timeout = 10_000 } = {}) {
  if (url) await page.goto(url);
  const form = page.locator('[data-screen="signin"]');
  await form.waitFor({ timeout }).catch(async (e) => {
    const screens = await page.locator('[data-screen]').evaluateAll((els) => els.map((el) => el.dataset.screen));
    throw new Error(`no sign-in screen at ${page.url()} (screens: ${screens.join(', ') || 'none'}): ` +
      e.message.split('\n')[0]);
  });
  await form.getByLabel('Email', { exact: true }).fill(email);
  await form.getByLabel('Password', { exact: true }).fill(password);
  await form.getByRole('button', { name: 'Sign in', exact: true }).click();
  try {
    await page.waitForFunction(
      () => !document.querySelector('[data-screen="signin"]') && !!document.querySelector('[data-screen]'),
      null,
      { timeout },
    );
  } catch (e) {
    const said = await page.locator('[data-screen="signin"] [role="alert"]').allInnerTexts().catch(() => []);
    throw new Error(`signing in as ${email} did not leave the sign-in screen` +
      (said.length ? `; it says: ${said.join(' / ')}` : '') + ` (${e.message.split('\n')[0]})`);
  }
}

/**
 * Signs in without the form, for tests whose subject is elsewhere: POSTs the login from inside
 * the page on `origin` (so the browser stores the HttpOnly cookie for that host), as a person,
 * or as a system admin with `{ admin: true }`. Returns the login answer's JSON.
 */
export async function apiSignIn(page, origin, email, password = DEMO_PASSWORD, { admin = false } = {}) {
  await page.goto(`${origin}/healthz`);
  const path = admin ? '/api/admin/auth/login' : '/api/auth/login';
  const answer = await page.evaluate(async ({ path, email, password }) => {
    const res = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      credentials: 'same-origin',
      body: JSON.stringify({ email, password }),
    });
    return { status: res.status, body: await res.text() };
  }, { path, email, password });
  if (answer.status !== 200) throw new Error(`login ${email} at ${origin}: ${answer.status} ${answer.body}`);
  return JSON.parse(answer.body);
}

/** The boot JSON of the page (`<meta name=tenantd-boot>`), or null if it has none. */
export function bootOf(page) {
  return page.evaluate(() => {
    const meta = document.querySelector('meta[name="tenantd-boot"]');
    return meta ? JSON.parse(meta.content) : null;
  });
}

let axeSource = null;
function axe() {
  if (axeSource === null) {
    const require = createRequire(import.meta.url);
    axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
  }
  return axeSource;
}

/** Impacts that fail checkA11y. */
export const A11Y_FAILING = Object.freeze(['serious', 'critical']);

/**
 * Runs axe-core on the page as it is now and throws, listing each one readably, if it finds a
 * violation of serious or critical impact. Returns axe's result (minor and moderate included).
 * `options.exclude`: selectors axe should leave out; `options.rules`: axe rule settings.
 *
 * How axe gets in: the pages' CSP (`script-src 'self'`) refuses page.addScriptTag(), which
 * inserts an inline <script> (Chromium logs a CSP violation and the tag does not run). The
 * source is evaluated through the DevTools protocol instead (page.evaluate), which CSP does not
 * govern, so the page keeps its real CSP and no violation is logged.
 */
export async function checkA11y(page, name, options = {}) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(axe());
  const result = await page.evaluate(
    ({ exclude, rules }) => window.axe.run(
      exclude.length ? { include: [document], exclude: exclude.map((s) => [s]) } : document,
      { resultTypes: ['violations'], ...(rules ? { rules } : {}) },
    ),
    { exclude: options.exclude || [], rules: options.rules || null },
  );
  const failing = result.violations.filter((v) => A11Y_FAILING.includes(v.impact));
  if (failing.length) {
    const lines = [`axe-core: ${failing.length} serious or critical violation(s) on "${name}" (${page.url()}):`];
    for (const v of failing) {
      lines.push(`  [${v.impact}] ${v.id}: ${v.help} (${v.helpUrl})`);
      for (const node of v.nodes.slice(0, 5)) {
        lines.push(`      at ${node.target.join(' ')}: ${node.html.slice(0, 160)}`);
        if (node.failureSummary) lines.push(`         ${node.failureSummary.replace(/\n\s*/g, ' ')}`);
      }
      if (v.nodes.length > 5) lines.push(`      … and ${v.nodes.length - 5} more`);
    }
    throw new Error(lines.join('\n'));
  }
  return result;
}

function pngPath(name, dir) {
  // Names become file names in docs/: keep them plain.
  if (!/^[a-z0-9][a-z0-9-]*$/.test(name)) throw new Error(`screenshot name ${JSON.stringify(name)}: use a-z, 0-9 and -`);
  mkdirSync(dir, { recursive: true });
  return join(dir, `${name}.png`);
}

async function settle(page) {
  const textWidth = await page.evaluate(async () => {
    await document.fonts.ready;
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    const canvas = document.createElement('canvas').getContext('2d');
    canvas.font = '16px sans-serif';
    return canvas.measureText('Readable').width;
  });
  // Without any font installed Chromium draws no text at all, and the screenshot is blank
  // boxes; Debian's chromium package pulls in no font.
  if (!(textWidth > 0)) {
    throw new Error('Chromium has no font to draw text with: install fonts-dejavu-core (.ci/run does)');
  }
}

/**
 * Writes `<dir>/<name>.png` (default docs/screenshots/) of the page at 1280x800 (the viewport
 * is set to that first), animations stopped and the caret hidden. Returns the file's path.
 */
export async function screenshot(page, name, { dir = SCREENSHOTS } = {}) {
  const path = pngPath(name, dir);
  const size = page.viewportSize();
  if (!size || size.width !== VIEWPORT.width || size.height !== VIEWPORT.height) {
    await page.setViewportSize({ ...VIEWPORT });
  }
  await settle(page);
  await page.screenshot({ path, animations: 'disabled', caret: 'hide' });
  return path;
}

/**
 * Writes `<dir>/<name>-phone.png` of the page at 375x740, then gives the page its viewport
 * back. Returns the file's path.
 */
export async function phoneScreenshot(page, name, { dir = SCREENSHOTS } = {}) {
  const path = pngPath(`${name}-phone`, dir);
  const size = page.viewportSize();
  await page.setViewportSize({ ...PHONE });
  try {
    await settle(page);
    await page.screenshot({ path, animations: 'disabled', caret: 'hide' });
  } finally {
    if (size) await page.setViewportSize(size);
  }
  return path;
}

/**
 * Records every answer the page receives from now on: HTTP responses with their bodies, and
 * WebSocket frames received. Start it before page.goto(). Returns:
 *   responses(): Promise<[{url, status, headers, body}]>, every body read (text; '' when the
 *                answer has none, e.g. a redirect)
 *   frames:      [{url, payload}] received on WebSockets (payload as text)
 *   text():      Promise<string>, every body and frame joined, to search for what must not be
 *                there
 *   find(needle): Promise<[{url, where}]>, where each body or frame containing `needle`
 *                (a string or RegExp) came from
 */
export function collectResponses(page) {
  const pending = [];
  const frames = [];
  page.on('response', (response) => {
    // Read at once: Chromium drops a body from its cache soon after the page is done with it.
    pending.push((async () => {
      let body = '';
      try {
        body = (await response.body()).toString('utf8');
      } catch {
        // Redirects and answers to aborted requests have no body.
      }
      return { url: response.url(), status: response.status(), headers: await response.allHeaders(), body };
    })());
  });
  page.on('websocket', (ws) => {
    ws.on('framereceived', ({ payload }) => {
      frames.push({ url: ws.url(), payload: typeof payload === 'string' ? payload : payload.toString('utf8') });
    });
  });
  const responses = async () => {
    // Answers can arrive while earlier bodies are read: wait until no new one came.
    let seen;
    do {
      seen = pending.length;
      await Promise.all(pending);
    } while (seen !== pending.length);
    return Promise.all(pending);
  };
  return {
    frames,
    responses,
    async text() {
      return [...(await responses()).map((r) => r.body), ...frames.map((f) => f.payload)].join('\n');
    },
    async find(needle) {
      const has = (s) => (needle instanceof RegExp ? needle.test(s) : s.includes(needle));
      return [
        ...(await responses()).filter((r) => has(r.body)).map((r) => ({ url: r.url, where: 'response' })),
        ...frames.filter((f) => has(f.payload)).map((f) => ({ url: f.url, where: 'websocket frame' })),
      ];
    },
  };
}

/**
 * Records what the page logs as errors, from now on: `errors` (console errors), `pageErrors`
 * (uncaught exceptions) and `csp` (Content-Security-Policy violations, from the console and from
 * `securitypolicyviolation` events, which an init script records in the page). Call it before
 * page.goto(). `cspViolations()` gathers both sources.
 */
export async function watchConsole(page) {
  const log = { errors: [], pageErrors: [], csp: [] };
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    log.errors.push(m.text());
    if (/Content Security Policy/i.test(m.text())) log.csp.push(m.text());
  });
  page.on('pageerror', (e) => log.pageErrors.push(e.message));
  // Init scripts come in through the DevTools protocol: the page's CSP does not block them.
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} (${e.sourceFile}:${e.lineNumber})`);
    });
  });
  log.cspViolations = async () => [...log.csp, ...(await page.evaluate(() => window.__cspViolations || []))];
  return log;
}
