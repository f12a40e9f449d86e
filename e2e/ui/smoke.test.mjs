// Smoke test of the bundled web UI (issue 15, notes in UI.md): each kind of page tenantd serves
// (the portal on the central host, a workspace on a subdomain and under /t/<slug>/, a host that
// names no company) comes with a CSP that allows no inline script, boots the app under that CSP
// without a violation or an uncaught error, and tells the app where it is.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { setupUi, newPage, watchConsole, bootOf } from './kit.mjs';

const ui = setupUi();

/** The CSP's directives: { 'script-src': ["'self'"], ... }. */
function directives(csp) {
  const out = {};
  for (const part of csp.split(';')) {
    const [name, ...values] = part.trim().split(/\s+/);
    if (name) out[name.toLowerCase()] = values;
  }
  return out;
}

const PAGES = [
  { what: 'the portal on the central host', url: () => `${ui.server.url}/`, area: 'portal', tenant: null },
  {
    what: 'a workspace on its subdomain',
    url: () => `${ui.server.host('acme')}/`,
    area: 'workspace',
    tenant: { slug: 'acme', base: '' },
  },
  {
    what: 'a workspace under /t/<slug>/ on the central host',
    url: () => `${ui.server.url}/t/acme/orders`,
    area: 'workspace',
    tenant: { slug: 'acme', base: '/t/acme' },
  },
  {
    what: 'a host that names no company',
    url: () => `${ui.server.host('nobody')}/`,
    area: 'no_tenant',
    tenant: null,
    // The page says there is no such company; whether as a 200 or a 404 is the server's choice.
    status: [200, 404],
  },
];

for (const { what, url, area, tenant, status = [200] } of PAGES) {
  test(`${what}: CSP without inline scripts, the app boots under it`, { skip: ui.skip }, async () => {
    const page = await newPage(ui.browser);
    const log = await watchConsole(page);
    const res = await page.goto(url());
    assert.ok(status.includes(res.status()), `${url()} answers the page: ${res.status()}`);
    assert.match(res.headers()['content-type'] || '', /^text\/html/);

    const csp = res.headers()['content-security-policy'];
    assert.ok(csp, `${url()} has a Content-Security-Policy header`);
    const d = directives(csp);
    const scripts = d['script-src'] || d['default-src'];
    assert.ok(scripts, `the CSP governs scripts: ${csp}`);
    assert.ok(!scripts.includes("'unsafe-inline'"), `script-src allows inline scripts: ${csp}`);
    assert.ok(!scripts.includes("'unsafe-eval'"), `script-src allows eval: ${csp}`);
    assert.deepEqual(d['object-src'], ["'none'"], csp);
    assert.deepEqual(d['frame-ancestors'], ["'none'"], csp);

    const boot = await bootOf(page);
    assert.ok(boot, 'the page carries <meta name="tenantd-boot">');
    assert.equal(boot.area, area);
    assert.deepEqual(boot.tenant, tenant);
    assert.equal(typeof boot.realtime?.key, 'string');

    // The app mounted: it put a screen in place of the boot placeholder.
    await page.locator('[data-screen]').first().waitFor({ timeout: 10_000 });
    assert.deepEqual(await log.cspViolations(), [], 'CSP violations');
    assert.deepEqual(log.pageErrors, [], 'uncaught errors');
    await page.context().close();
  });
}
