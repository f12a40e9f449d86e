// The workspace's orders in a real browser (issue 15): an order made in one member's create form
// appears live in another's list, and a status change shows live on the first member's open
// order and in its history; a simple-view member (the demo's viewer) never receives or shows an
// amount or a customer contact, live updates included; filter, search, sort and paging act on
// the rows and live in the URL; the create form shows its field errors (its own and the API's);
// axe on each screen; screenshots; and one person in two companies sees each company's own
// orders.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  setupUi, newPage, signIn, checkA11y, screenshot, phoneScreenshot, collectResponses, DEMO_PASSWORD,
} from './kit.mjs';

const ui = setupUi();
const WAIT = { timeout: 10_000 };

/** An API client with a bearer token (no cookie, no CSRF), for reading what the UI must match. */
async function apiAs(email, slug = 'acme') {
  const login = await fetch(`${ui.server.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email, password: DEMO_PASSWORD }),
  });
  assert.equal(login.status, 200, `login ${email}`);
  const { token } = await login.json();
  const call = async (method, path, body) => {
    const res = await fetch(`${ui.server.url}/t/${slug}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const json = await res.json();
    if (!res.ok) throw new Error(`${method} ${path} as ${email}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  /** Every order this member sees, in the list's default order, following `next`. */
  call.allOrders = async (query = '') => {
    const out = [];
    let cursor = '';
    do {
      const page = await call('GET', `/api/orders?limit=100${query}${cursor ? `&cursor=${cursor}` : ''}`);
      out.push(...page.orders);
      cursor = page.next;
    } while (cursor);
    return out;
  };
  return call;
}

/** The rows of the orders list as {number, title, status} (status as shown). */
function rows(page) {
  // A row caught between two renders may lack a cell: it reads as empty, and the callers
  // that wait look again rather than fail.
  return page.locator('[data-testid="order-row"]').evaluateAll((trs) => trs.map((tr) => ({
    number: tr.querySelector('.order-number')?.textContent.trim() ?? '',
    title: tr.querySelector('.order-title')?.textContent.trim() ?? '',
    status: tr.querySelector('.status')?.textContent.trim() ?? '',
  })));
}

/** Waits until the list's rows satisfy `check(rows)`; fails with the rows it last saw. */
async function waitForRows(page, check, what) {
  let last = [];
  const deadline = Date.now() + WAIT.timeout;
  for (;;) {
    // Only a settled list counts: not while a newer page is being read.
    const busy = await page.locator('.orders-table[aria-busy="true"], [data-screen="orders"] .loading').count();
    last = busy ? last : await rows(page);
    if (!busy && check(last)) return last;
    if (Date.now() > deadline) throw new Error(`${what}; rows: ${JSON.stringify(last.slice(0, 30))}`);
    await page.waitForTimeout(50);
  }
}

/** Opens a person's orders list at `origin` (signing in through the form) and waits until it is live. */
async function openOrders(email, { origin = ui.server.host('acme'), phone = false, before } = {}) {
  const page = await newPage(ui.browser, { phone });
  const seen = before ? before(page) : null;
  await signIn(page, `${origin}/orders`, email);
  await page.locator('[data-screen="orders"][data-live="live"]').waitFor(WAIT);
  await page.locator('[data-testid="order-row"]').first().waitFor(WAIT);
  await page.locator('.orders-table[aria-busy="false"]').waitFor(WAIT);
  return { page, seen };
}

/** A mark in the page's window: still there later means the page was not reloaded. */
async function markPage(page) {
  await page.evaluate(() => { window.__notReloaded = true; });
}
async function assertNotReloaded(page) {
  assert.equal(await page.evaluate(() => window.__notReloaded === true), true, 'the page was not reloaded');
}

test('axe finds nothing serious on the list, an order and the create form; screenshots (first, of the demo as seeded)', { skip: ui.skip }, async () => {
  const { page } = await openOrders('alice@acme.test');
  await checkA11y(page, 'orders');
  await screenshot(page, 'orders');
  await phoneScreenshot(page, 'orders');

  await page.getByRole('button', { name: 'New order' }).click();
  await page.getByRole('dialog', { name: 'New order' }).waitFor(WAIT);
  await checkA11y(page, 'new order');
  await page.getByRole('button', { name: 'Cancel', exact: true }).click();

  // An order with a history of several steps, assigned and with a phone.
  const api = await apiAs('alice@acme.test');
  const shown = (await api.allOrders('&status=shipped')).find((o) => o.customer_phone && o.assigned_to) ||
    (await api.allOrders('&status=shipped'))[0];
  await page.locator('[data-testid="order-row"]').first().waitFor(WAIT);
  await page.goto(`${ui.server.host('acme')}/orders/${shown.id}`);
  await page.locator('[data-screen="order"] .history li').first().waitFor(WAIT);
  await checkA11y(page, 'order');
  await screenshot(page, 'order');
  await phoneScreenshot(page, 'order');
  await page.context().close();

  // The viewer's pages too: fewer fields, same rules.
  const { page: vic } = await openOrders('vic@acme.test');
  await checkA11y(vic, 'orders (simple view)');
  await vic.context().close();
});

test('an order created in one member\'s form appears live in another\'s list; a status change shows live on the open order and its history', { skip: ui.skip }, async () => {
  const { page: mike } = await openOrders('mike@acme.test');
  const { page: alice } = await openOrders('alice@acme.test');
  await markPage(mike);
  const title = `Walnut desk ${Date.now()}`;

  await alice.getByRole('button', { name: 'New order' }).click();
  const form = alice.getByRole('dialog', { name: 'New order' });
  await form.getByLabel('Title').fill(title);
  await form.getByLabel('Customer name').fill('Grace Hopper');
  await form.getByLabel('Customer email').fill('grace@example.com');
  await form.getByLabel('Amount').fill('1234.05');
  await form.getByLabel('Currency').selectOption('EUR');
  await form.getByRole('button', { name: 'Create order' }).click();
  // Alice lands on the new order, its amount converted exactly (123405 minor units).
  await alice.locator('[data-screen="order"][data-live="live"]').waitFor(WAIT);
  const number = (await alice.locator('.order-num').textContent()).trim();
  assert.match(number, /^ORD-\d{6}$/);
  assert.equal((await alice.locator('dd.amount').textContent()).trim(), '€1,234.05');
  const admin = await apiAs('alice@acme.test');
  const stored = (await admin.allOrders(`&q=${encodeURIComponent(number)}`)).find((o) => o.number === number);
  assert.equal(stored.amount_minor, 123405, 'the decimal amount is sent as exact minor units');
  await markPage(alice);

  // Mike's list shows it without a reload.
  await waitForRows(mike, (r) => r.some((row) => row.title === title && row.number === number), `${number} appears in mike's list`);
  await assertNotReloaded(mike);

  // Mike opens it and confirms it; Alice's open page and its history follow.
  await mike.locator('[data-testid="order-row"]', { hasText: title }).getByRole('link').click();
  await mike.locator('[data-screen="order"]').waitFor(WAIT);
  await mike.getByRole('button', { name: 'Confirm', exact: true }).click();
  await mike.locator('.order-heading .status', { hasText: 'Confirmed' }).waitFor(WAIT);
  // The workflow offers only the next step now.
  await mike.getByRole('button', { name: 'Start', exact: true }).waitFor(WAIT);
  assert.equal(await mike.getByRole('button', { name: 'Confirm', exact: true }).count(), 0);

  await alice.locator('.order-heading .status', { hasText: 'Confirmed' }).waitFor(WAIT);
  const change = alice.locator('.history li[data-field="status"]').first();
  await change.waitFor(WAIT);
  assert.match(await change.textContent(), /Mike Manager changed the status from New to Confirmed/);
  await assertNotReloaded(alice);
  await alice.context().close();
  await mike.context().close();
});

const SECRET_KEYS = ['amount', 'amount_minor', 'customer_email', 'customer_phone'];

/** Keys of a JSON value, nested ones included; a string holding JSON (Pusher's `data`) is read too. */
function keysOf(value, out = new Set()) {
  if (typeof value === 'string') {
    const t = value.trim();
    if (t.startsWith('{') || t.startsWith('[')) {
      try {
        keysOf(JSON.parse(t), out);
      } catch {
        // Not JSON after all.
      }
    }
  } else if (Array.isArray(value)) {
    value.forEach((v) => keysOf(v, out));
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      out.add(k);
      keysOf(v, out);
    }
  }
  return out;
}

/** An amount as the UI would show it (en-GB, the test browser's locale): "€1,107.87". */
function money(order) {
  return new Intl.NumberFormat('en-GB', { style: 'currency', currency: order.currency }).format(order.amount_minor / 100);
}

/** An amount as a JSON number on the wire (ids, the only other numbers, stay far below 1000). */
function amountOnWire(order) {
  return new RegExp(`[:,\\[]\\s*${order.amount_minor}(?![0-9.])`);
}

test('a simple-view member never receives or shows an amount or customer contact, live updates included', { skip: ui.skip }, async () => {
  const { page: vic, seen } = await openOrders('vic@acme.test', { before: collectResponses });
  const alice = await apiAs('alice@acme.test');

  // Vic opens an order that has a customer email and phone, and watches it.
  const all = await alice.allOrders();
  const target = all.find((o) => o.customer_email && o.customer_phone && !['delivered', 'cancelled'].includes(o.status));
  await vic.goto(`${ui.server.host('acme')}/orders/${target.id}`);
  await vic.locator('[data-screen="order"][data-live="live"]').waitFor(WAIT);
  await vic.locator('.history li').first().waitFor(WAIT);
  // Nothing to act with: the viewer may not edit or delete.
  assert.equal(await vic.locator('.order-actions button').count(), 0);

  // Alice changes it while vic watches: its amount, contact and status.
  const next = { new: 'confirmed', confirmed: 'in_progress', in_progress: 'shipped', shipped: 'delivered' }[target.status];
  const changed = await alice('PATCH', `/api/orders/${target.id}`, {
    status: next,
    amount_minor: 987654,
    customer_email: 'changed.live@example.com',
    customer_phone: '+1 555 0199',
  });
  const label = { confirmed: 'Confirmed', in_progress: 'In progress', shipped: 'Shipped', delivered: 'Delivered' }[next];
  await vic.locator('.order-heading .status', { hasText: label }).waitFor(WAIT);
  await vic.locator('.history li[data-field="status"]').first().waitFor(WAIT);

  // Back to the list, where an order alice creates arrives live.
  await vic.getByRole('link', { name: '← All orders' }).click();
  await vic.locator('[data-screen="orders"][data-live="live"]').waitFor(WAIT);
  const created = await alice('POST', '/api/orders', {
    title: `Secret-free lamp ${Date.now()}`,
    customer_name: 'Barbara Liskov',
    customer_email: 'barbara.live@example.com',
    customer_phone: '+44 20 7946 0011',
    amount_minor: 4321987,
    currency: 'GBP',
  });
  await waitForRows(vic, (r) => r.some((row) => row.number === created.number), `${created.number} appears in vic's list`);

  // Every answer and every frame vic received: none of the hidden keys.
  const responses = await seen.responses();
  assert.ok(responses.some((r) => /\/api\/orders\?/.test(r.url)), 'the list was read');
  assert.ok(seen.frames.some((f) => f.payload.includes('order.updated')), 'the live update reached vic');
  assert.ok(seen.frames.some((f) => f.payload.includes('order.created')), 'the live creation reached vic');
  for (const r of responses) {
    if (!/json/.test(r.headers['content-type'] || '') || !r.body) continue;
    const keys = keysOf(JSON.parse(r.body));
    for (const key of SECRET_KEYS) assert.ok(!keys.has(key), `${r.url} answers "${key}" to a simple view`);
  }
  for (const f of seen.frames) {
    const keys = keysOf(f.payload);
    for (const key of SECRET_KEYS) assert.ok(!keys.has(key), `a websocket frame carries "${key}": ${f.payload}`);
  }

  // Nor any of the actual values, in the DOM or on the wire.
  const orders = [...(await alice.allOrders()), changed, created];
  const dom = await vic.content();
  const wire = await seen.text();
  const contacts = orders.flatMap((o) => [o.customer_email, o.customer_phone]).filter(Boolean);
  for (const secret of [...contacts, ...orders.map(money)]) {
    assert.ok(!dom.includes(secret), `vic's page holds ${secret}`);
    assert.ok(!wire.includes(secret), `vic received ${secret}`);
  }
  for (const o of orders) assert.doesNotMatch(wire, amountOnWire(o), `vic received the amount of ${o.number}`);

  // The same search finds them where they are: in an admin's page of that order.
  const admin = await newPage(ui.browser);
  await signIn(admin, `${ui.server.host('acme')}/orders/${target.id}`, 'alice@acme.test');
  await admin.locator('[data-screen="order"] dd.amount').waitFor(WAIT);
  const adminDom = await admin.content();
  for (const shown of [money(changed), changed.customer_email, changed.customer_phone]) {
    assert.ok(adminDom.includes(shown), `an admin's page shows ${shown}`);
  }
  await admin.context().close();
  await vic.context().close();
});

test('the list filters by status, searches, sorts and pages, all kept in the URL', { skip: ui.skip }, async () => {
  const { page } = await openOrders('mike@acme.test');
  const api = await apiAs('mike@acme.test');

  // Status.
  const shipped = await api.allOrders('&status=shipped');
  await page.getByLabel('Status').selectOption('shipped');
  let r = await waitForRows(page, (rs) => rs.length > 0 && rs.every((x) => x.status === 'Shipped'), 'only shipped orders');
  assert.deepEqual(r.map((x) => x.number), shipped.slice(0, 25).map((o) => o.number));
  assert.match(page.url(), /[?&]status=shipped/);

  // Reload keeps it; Back undoes it.
  await page.reload();
  await page.locator('[data-testid="order-row"]').first().waitFor(WAIT);
  assert.equal(await page.getByLabel('Status').inputValue(), 'shipped');
  await waitForRows(page, (rs) => rs.length > 0 && rs.every((x) => x.status === 'Shipped'), 'still shipped after reload');
  await page.goBack();
  await waitForRows(page, (rs) => rs.some((x) => x.status !== 'Shipped'), 'every status again after Back');
  assert.equal(await page.getByLabel('Status').inputValue(), '');

  // Search: by number, and by customer name.
  await page.getByLabel('Search').fill('ORD-000042');
  r = await waitForRows(page, (rs) => rs.length === 1, 'one order for its number');
  assert.equal(r[0].number, 'ORD-000042');
  assert.match(page.url(), /[?&]q=ORD-000042/);
  await page.getByLabel('Search').fill('Knuth');
  const knuth = await api.allOrders('&q=Knuth');
  assert.ok(knuth.length > 0 && knuth.every((o) => o.customer_name.includes('Knuth')));
  r = await waitForRows(page, (rs) => rs.length === Math.min(25, knuth.length) && rs[0].number === knuth[0].number, 'Knuth\'s orders');
  assert.deepEqual(r.map((x) => x.number), knuth.slice(0, 25).map((o) => o.number));
  await page.getByLabel('Search').fill('no order is called this');
  await page.getByText('No orders match these filters.').waitFor(WAIT);
  await page.getByRole('button', { name: 'Clear the filters' }).click();
  await waitForRows(page, (rs) => rs.length === 25, 'a full page without filters');
  assert.equal(await page.getByLabel('Search').inputValue(), '');

  // Sort: the select, then the column header.
  await page.getByLabel('Sort by').selectOption('number');
  r = await waitForRows(page, (rs) => rs[0]?.number === 'ORD-000001', 'lowest number first');
  assert.deepEqual(r.map((x) => x.number), [...r.map((x) => x.number)].sort());
  assert.match(page.url(), /[?&]sort=number/);
  await page.getByRole('button', { name: /^Number/ }).click();
  const newest = await api.allOrders('&sort=-number');
  r = await waitForRows(page, (rs) => rs[0]?.number === newest[0].number, 'highest number first after the header click');
  assert.equal(await page.locator('th[aria-sort="descending"]').textContent().then((t) => t.trim().startsWith('Number')), true);

  // Paging, in that sort.
  const page1 = r.map((x) => x.number);
  assert.deepEqual(page1, newest.slice(0, 25).map((o) => o.number));
  await page.getByRole('button', { name: 'Next page' }).click();
  r = await waitForRows(page, (rs) => rs[0]?.number === newest[25].number, 'the second page');
  assert.deepEqual(r.map((x) => x.number), newest.slice(25, 50).map((o) => o.number));
  assert.match(page.url(), /[?&]cursor=/);
  await page.getByRole('button', { name: 'Previous page' }).click();
  r = await waitForRows(page, (rs) => rs[0]?.number === newest[0].number, 'back on the first page');
  assert.deepEqual(r.map((x) => x.number), page1);
  await page.context().close();
});

test('the create form shows its field errors, its own and the API\'s, and creates nothing then', { skip: ui.skip }, async () => {
  const { page } = await openOrders('alice@acme.test');
  const api = await apiAs('alice@acme.test');
  const before = (await api.allOrders()).length;

  await page.getByRole('button', { name: 'New order' }).click();
  const form = page.getByRole('dialog', { name: 'New order' });
  await expectFocus(page, 'Title');
  await form.getByRole('button', { name: 'Create order' }).click();
  for (const [label, said] of [['Title', 'Enter a title.'], ['Customer name', 'Enter the customer’s name.'], ['Amount', 'Enter an amount.']]) {
    await expectFieldError(form, label, said);
  }
  assert.equal(await form.getByLabel('Customer email').getAttribute('aria-invalid'), null);

  // A value only the API can judge: its message is shown at its field.
  await form.getByLabel('Title').fill('Desk lamp');
  await form.getByLabel('Customer name').fill('Ada Lovelace');
  await form.getByLabel('Customer email').fill('ada-at-example');
  await form.getByLabel('Customer phone').fill('call me');
  await form.getByLabel('Amount').fill('12.345');
  await form.getByRole('button', { name: 'Create order' }).click();
  await expectFieldError(form, 'Amount', 'EUR has 2 decimal places at most.');
  await form.getByLabel('Amount').fill('12.34');
  await form.getByRole('button', { name: 'Create order' }).click();
  await expectFieldError(form, 'Customer email', 'Not an email address.');
  await expectFieldError(form, 'Customer phone', /^4 to 20 digits/);
  assert.equal(await form.getByLabel('Title').getAttribute('aria-invalid'), null, 'a good field is not marked');
  assert.equal((await api.allOrders()).length, before, 'nothing was created');
  await page.context().close();
});

async function expectFocus(page, label) {
  await page.waitForFunction((l) => document.activeElement?.labels?.[0]?.textContent === l, label, WAIT);
}

/** The field labelled `label` is marked invalid and its error (linked by aria-describedby) says `said`. */
async function expectFieldError(scope, label, said) {
  const input = scope.getByLabel(label, { exact: true });
  await input.and(scope.locator('[aria-invalid="true"]')).waitFor(WAIT);
  const ids = (await input.getAttribute('aria-describedby')).split(' ');
  const texts = await Promise.all(ids.map((id) => scope.locator(`[id="${id}"]`).textContent()));
  const error = texts.find((t) => (said instanceof RegExp ? said.test(t) : t === said));
  assert.ok(error, `${label} says ${said}; it says ${JSON.stringify(texts)}`);
}

test('a person in two companies sees each company\'s own orders under /t/<slug>/orders', { skip: ui.skip }, async () => {
  const page = await newPage(ui.browser);
  await signIn(page, `${ui.server.url}/t/acme/orders`, 'sam@example.test');
  await page.locator('[data-screen="orders"][data-live="live"]').waitFor(WAIT);
  const acmeRows = await waitForRows(page, (rs) => rs.length > 0, 'acme\'s orders');
  const acme = await apiAs('alice@acme.test', 'acme');
  const acmeAll = await acme.allOrders();
  assert.deepEqual(acmeRows.map((x) => x.number), acmeAll.slice(0, 25).map((o) => o.number));

  // The same session, the other company: its own list, none of acme's.
  await page.goto(`${ui.server.url}/t/globex/orders`);
  await page.locator('[data-screen="orders"][data-live="live"]').waitFor(WAIT);
  const asSam = await apiAs('sam@example.test', 'globex');
  const globexSam = await asSam.allOrders();
  assert.ok(globexSam.length > 0, 'sam has orders of his own in globex');
  const globexRows = await waitForRows(page, (rs) => rs.length === Math.min(25, globexSam.length), 'globex\'s orders');
  assert.deepEqual(globexRows.map((x) => `${x.number} ${x.title}`), globexSam.slice(0, 25).map((o) => `${o.number} ${o.title}`));
  const gina = await apiAs('gina@globex.test', 'globex');
  const globexAll = new Set((await gina.allOrders()).map((o) => `${o.number} ${o.title}`));
  const acmeKeys = new Set(acmeAll.map((o) => `${o.number} ${o.created_at}`));
  for (const o of globexSam) {
    assert.ok(globexAll.has(`${o.number} ${o.title}`), `${o.number} is globex's`);
    assert.ok(!acmeKeys.has(`${o.number} ${o.created_at}`), `${o.number} is not acme's`);
  }
  // And the links stay in globex.
  const link = await page.locator('[data-testid="order-row"] a').first().getAttribute('href');
  assert.match(link, /^\/t\/globex\/orders\/\d+$/);
  await page.context().close();
});
