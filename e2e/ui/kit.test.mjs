// The harness checked on its own: Chromium reaches the demo server by 127.0.0.1 and by a
// company's subdomain, and each helper both passes and fails where it should, on small pages
// served here under the same CSP as tenantd's pages.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  setupUi, skipUnlessBrowser, newPage, signIn, apiSignIn, checkA11y, screenshot, phoneScreenshot,
  collectResponses, watchConsole, VIEWPORT, PHONE,
} from './kit.mjs';

const ui = setupUi();
const skip = ui.skip;

const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const page = (body, head = '') =>
  `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>kit</title>${head}</head>` +
  `<body><main><h1>Kit</h1>${body}</main></body></html>`;

// A sign-in form as UI.md describes it; its script swaps in another screen on submit.
const SIGNIN = page(
  '<form data-screen="signin"><label for="e">Email</label><input id="e" type="email">' +
  '<label for="p">Password</label><input id="p" type="password">' +
  '<button type="submit">Sign in</button><p role="alert" id="said"></p></form>',
  '<script src="/signin.js" defer></script>',
);
const SIGNIN_JS = `
document.querySelector('form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (document.getElementById('p').value !== 'right') {
    document.getElementById('said').textContent = 'Wrong email or password';
    return;
  }
  const done = document.createElement('section');
  done.dataset.screen = 'chats';
  done.textContent = document.getElementById('e').value;
  document.querySelector('main').replaceChildren(done);
});`;

const ROUTES = {
  '/good': page('<label for="n">Name</label><input id="n"><p>Plain text, readable.</p>'),
  '/bad': page('<input type="text"><img src="data:image/png;base64,iVBORw0KGgo=">'),
  '/inline': page('<p>inline script below</p><script>document.title = "ran"</script>'),
  '/with-data': page('<p id="out"></p>', '<script src="/fetch.js" defer></script>'),
  '/fetch.js': `fetch('/data.json').then((r) => r.json()).then((d) => {
    document.getElementById('out').textContent = 'loaded ' + d.items.length; });`,
  '/data.json': JSON.stringify({ items: [{ amount: 'SECRET-AMOUNT-42' }] }),
  '/signin': SIGNIN,
  '/signin.js': SIGNIN_JS,
};

let fixture;
let fixtureUrl;
let shots;

before(async () => {
  if (skip) return;
  shots = mkdtempSync(join(tmpdir(), 'tenantd-kit-shots-'));
  fixture = createServer((req, res) => {
    const body = ROUTES[req.url];
    if (body === undefined) {
      res.writeHead(404).end();
      return;
    }
    const type = req.url.endsWith('.js') ? 'text/javascript'
      : req.url.endsWith('.json') ? 'application/json' : 'text/html; charset=utf-8';
    res.writeHead(200, { 'Content-Type': type, 'Content-Security-Policy': CSP });
    res.end(body);
  });
  await new Promise((resolve) => fixture.listen(0, '127.0.0.1', resolve));
  fixtureUrl = `http://127.0.0.1:${fixture.address().port}`;
});

after(() => {
  fixture?.close();
  if (shots) rmSync(shots, { recursive: true, force: true });
});

test('Chromium reaches the demo server at 127.0.0.1 and at a company subdomain', { skip }, async () => {
  const p = await newPage(ui.browser);
  for (const origin of [ui.server.url, ui.server.host('acme')]) {
    const res = await p.goto(`${origin}/healthz`);
    assert.equal(res.status(), 200, origin);
    assert.equal(new URL(p.url()).host, new URL(origin).host);
  }
  await p.context().close();
});

test('the server banner gives the first system admin', (t) => {
  // The other way to skip: from inside the test.
  if (!skipUnlessBrowser(t)) return;
  assert.equal(ui.server.admin.email, 'admin@localhost');
  assert.match(ui.server.admin.password, /^\S{12,}$/);
});

test('apiSignIn leaves the session cookie in the browser for that host only', { skip }, async () => {
  const p = await newPage(ui.browser);
  await apiSignIn(p, ui.server.host('acme'), 'alice@acme.test');
  const me = await p.evaluate(async () => (await fetch('/api/me')).status);
  assert.equal(me, 200);
  await p.goto(`${ui.server.host('globex')}/healthz`);
  const elsewhere = await p.evaluate(async () => (await fetch('/api/me')).status);
  assert.equal(elsewhere, 401);
  await p.context().close();
});

test('signIn fills the labelled form and waits for the next screen, or says why not', { skip }, async () => {
  const p = await newPage(ui.browser);
  await signIn(p, `${fixtureUrl}/signin`, 'alice@acme.test', 'right');
  assert.equal(await p.locator('[data-screen="chats"]').textContent(), 'alice@acme.test');
  await assert.rejects(
    signIn(p, `${fixtureUrl}/signin`, 'alice@acme.test', 'wrong', { timeout: 1000 }),
    /did not leave the sign-in screen; it says: Wrong email or password/,
  );
  await p.context().close();
});

test('checkA11y runs axe under the page CSP and fails on serious or critical findings', { skip }, async () => {
  const p = await newPage(ui.browser);
  const log = await watchConsole(p);
  await p.goto(`${fixtureUrl}/good`);
  const result = await checkA11y(p, 'good');
  assert.deepEqual(result.violations.map((v) => v.id), []);
  await p.goto(`${fixtureUrl}/bad`);
  await assert.rejects(checkA11y(p, 'bad'), (e) => {
    assert.match(e.message, /on "bad"/);
    assert.match(e.message, /\[critical\] label:/);
    assert.match(e.message, /\[critical\] image-alt:/);
    return true;
  });
  assert.deepEqual(await log.cspViolations(), [], 'injecting axe must not trip the CSP');
  await p.context().close();
});

test('watchConsole reports an inline script the CSP refused', { skip }, async () => {
  const p = await newPage(ui.browser);
  const log = await watchConsole(p);
  await p.goto(`${fixtureUrl}/inline`);
  assert.notEqual(await p.title(), 'ran');
  const violations = await log.cspViolations();
  assert.ok(violations.some((v) => /script-src/.test(v)), violations.join('\n'));
  await p.context().close();
});

function pngSize(path) {
  const png = readFileSync(path);
  assert.equal(png.toString('latin1', 1, 4), 'PNG', path);
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

test('screenshot and phoneScreenshot write PNGs at the fixed sizes', { skip }, async () => {
  const p = await newPage(ui.browser);
  await p.goto(`${fixtureUrl}/good`);
  const desktop = await screenshot(p, 'kit-good', { dir: shots });
  assert.equal(desktop, join(shots, 'kit-good.png'));
  assert.deepEqual(pngSize(desktop), VIEWPORT);
  const phone = await phoneScreenshot(p, 'kit-good', { dir: shots });
  assert.equal(phone, join(shots, 'kit-good-phone.png'));
  assert.deepEqual(pngSize(phone), PHONE);
  assert.deepEqual(p.viewportSize(), VIEWPORT, 'the page gets its viewport back');
  await assert.rejects(screenshot(p, '../escape', { dir: shots }), /use a-z, 0-9 and -/);
  await p.context().close();
});

test('collectResponses holds every answer body, the fetched ones too', { skip }, async () => {
  const p = await newPage(ui.browser);
  const seen = collectResponses(p);
  await p.goto(`${fixtureUrl}/with-data`);
  await p.getByText('loaded 1').waitFor();
  const urls = (await seen.responses()).map((r) => new URL(r.url).pathname);
  assert.deepEqual(urls.sort(), ['/data.json', '/fetch.js', '/with-data']);
  assert.deepEqual(await seen.find('SECRET-AMOUNT-42'), [{ url: `${fixtureUrl}/data.json`, where: 'response' }]);
  assert.deepEqual(await seen.find(/nowhere-to-be-found/), []);
  assert.match(await seen.text(), /SECRET-AMOUNT-42/);
  await p.context().close();
});
