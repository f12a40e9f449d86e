// A company made read-only by its subscription (issue 18), in a real browser: a write refused
// with 403 subscription_inactive says so in words and brings up the read-only banner without a
// reload; a page opened while read-only shows the banner at once, saying why and since when, its
// "New chat" button disabled; once the subscription is active again the banner goes.
//
// The subscription is changed through the admin API, as an operator (or the billing webhook)
// would: past due, its period ended longer ago than the default grace of a week.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { setupUi, newPage, signIn, checkA11y } from './kit.mjs';

const ui = setupUi();
const DAY = 86400;

async function admin(method, path, body) {
  if (!admin.token) {
    const login = await fetch(ui.server.url + '/api/admin/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(ui.server.admin),
    });
    assert.equal(login.status, 200);
    admin.token = (await login.json()).token;
  }
  const res = await fetch(ui.server.url + path, {
    method,
    headers: { Authorization: `Bearer ${admin.token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  assert.equal(res.status, 200, `${method} ${path}: ${await res.clone().text()}`);
  return res.json();
}

const subscribe = (body) => admin('PUT', '/api/admin/tenants/acme/subscription', body);

test('a read-only company shows why in a banner, and a refused write says so in words', { skip: ui.skip }, async () => {
  const page = await newPage(ui.browser);
  try {
    await signIn(page, ui.server.host('acme') + '/chats', 'alice@acme.test');
    const chats = page.locator('[data-screen="chats"]');
    await chats.waitFor();
    const row = page.locator('[data-testid="chat-row"]').filter({ has: page.locator('.chat-title', { hasText: /^General/ }) });
    await row.getByRole('link').click();
    const chat = page.locator('[data-screen="chat"][data-live="true"]');
    await chat.waitFor();
    const banner = page.locator('[data-read-only]');
    assert.equal(await banner.count(), 0, 'no banner while the subscription is active');

    // The subscription lapses while the page is open: past due, its period ended 8 days ago.
    const periodEnd = Math.floor(Date.now() / 1000) - 8 * DAY;
    const put = await subscribe({ status: 'past_due', current_period_end: periodEnd });
    assert.equal(put.writable, false);

    const composer = chat.getByLabel('Message', { exact: true });
    await composer.fill('Can I still write?');
    await composer.press('Enter');
    const error = chat.locator('#composer-err');
    await error.waitFor({ timeout: 5000 });
    assert.match(await error.innerText(), /read-only because its subscription is not active/);
    await banner.waitFor({ timeout: 5000 });
    assert.equal(await banner.getAttribute('data-read-only'), 'past_due');
    assert.match(await banner.innerText(), /This company is read-only:.*payment is overdue.*grace period ended/s);

    // Opened afresh: the banner at once, the write controls that open forms disabled.
    await page.reload();
    await banner.waitFor({ timeout: 5000 });
    const since = new Date((periodEnd + 7 * DAY) * 1000).toISOString().slice(0, 10);
    assert.ok((await banner.innerText()).includes(since), `the date it began (${since}), in the company's format`);
    assert.equal(await page.getByRole('button', { name: 'New chat' }).isDisabled(), true);
    await checkA11y(page, 'read-only banner');

    // Paid: the banner goes once the page looks again (it asks when the tab gets the focus).
    await subscribe({ status: 'active' });
    await page.evaluate(() => dispatchEvent(new Event('focus')));
    await banner.waitFor({ state: 'detached', timeout: 5000 });
    assert.equal(await page.getByRole('button', { name: 'New chat' }).isDisabled(), false);
  } finally {
    await page.context().close();
  }
});
