// What a person sees when something around the page goes wrong, and that the page recovers by
// itself (issue 15): the real-time connection is lost and comes back (with what was missed while
// it was away), the session ends under an open page, the company is suspended and activated again.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { setupUi, newPage, signIn, checkA11y } from './kit.mjs';

const ui = setupUi();

/** A JSON call from the test itself (not the page): `token` is a bearer token. */
async function call(method, url, token, body) {
  const res = await fetch(url, {
    method,
    headers: {
      'Content-Type': 'application/json',
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${url}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function login(email, password = 'demo-password') {
  return (await call('POST', `${ui.server.url}/api/auth/login`, null, { email, password })).token;
}

async function adminToken() {
  const { email, password } = ui.server.admin;
  return (await call('POST', `${ui.server.url}/api/admin/auth/login`, null, { email, password })).token;
}

/** The chat titled `title` in acme, as `token` sees it. */
async function chatId(token, title) {
  const { chats } = await call('GET', `${ui.server.url}/t/acme/api/chats`, token);
  const chat = chats.find((c) => c.title === title);
  assert.ok(chat, `no chat titled ${title}`);
  return chat.id;
}

const BANNER = /Live updates are interrupted/;

test('a lost real-time connection is said, and when it is back the page shows what it missed', { skip: ui.skip }, async () => {
  const page = await newPage(ui.browser);
  // The page's WebSocket goes through the test, which can cut it and refuse new ones for a
  // while: what a network drop does. Both ends are the real page and the real server.
  let down = false;
  const open = [];
  await page.routeWebSocket(/\/app\//, (ws) => {
    if (down) {
      ws.close({ code: 4200, reason: 'network down' });
      return;
    }
    open.push({ ws, server: ws.connectToServer() });
  });
  await signIn(page, ui.server.host('acme') + '/chats', 'alice@acme.test');
  const ada = await login('ada@acme.test');
  const general = await chatId(ada, 'General');
  await page.goto(`${ui.server.host('acme')}/chats/${general}`);
  await page.locator('[data-screen="chat"][data-live="true"]').waitFor();
  assert.equal(await page.getByText(BANNER).count(), 0, 'no banner while connected');

  down = true;
  for (const { ws, server } of open.splice(0)) {
    await server.close().catch(() => {});
    await ws.close({ code: 4200, reason: 'network down' }).catch(() => {});
  }
  await page.getByText(BANNER).waitFor({ timeout: 15_000 });
  await checkA11y(page, 'chat with the connection lost');

  const missed = `sent while you were away ${process.pid}-${Date.now()}`;
  await call('POST', `${ui.server.url}/t/acme/api/chats/${general}/messages`, ada, { body: missed });
  assert.equal(await page.locator('[data-testid="message"]', { hasText: missed }).count(), 0);
  down = false;
  await page.getByText(BANNER).waitFor({ state: 'detached', timeout: 30_000 });
  await page.locator('[data-testid="message"]', { hasText: missed }).waitFor({ timeout: 10_000 });
  await page.context().close();
});

test('a session that ends under an open page asks to sign in again, then goes on where it was', { skip: ui.skip }, async () => {
  const page = await newPage(ui.browser);
  await signIn(page, ui.server.host('acme') + '/orders', 'mike@acme.test');
  await page.locator('[data-screen="orders"]').waitFor();
  // Changing the password from elsewhere ends every other session, this page's among them.
  const mike = await login('mike@acme.test');
  await call('POST', `${ui.server.url}/api/me/password`, mike, {
    current_password: 'demo-password',
    new_password: 'demo-password-2',
  });
  try {
    await page.getByRole('link', { name: 'Chats' }).click();
    await page.getByText('Your session has ended').waitFor({ timeout: 10_000 });
    await checkA11y(page, 'session ended');
    await signIn(page, null, 'mike@acme.test', 'demo-password-2');
    await page.locator('[data-screen="chats"]').waitFor();
    assert.match(new URL(page.url()).pathname, /^\/chats/);
  } finally {
    const again = await login('mike@acme.test', 'demo-password-2');
    await call('POST', `${ui.server.url}/api/me/password`, again, {
      current_password: 'demo-password-2',
      new_password: 'demo-password',
    });
    await page.context().close();
  }
});

test('a company suspended under an open page says so, and opens again by itself once activated', { skip: ui.skip }, async () => {
  const page = await newPage(ui.browser);
  await signIn(page, ui.server.host('globex') + '/chats', 'gina@globex.test');
  await page.locator('[data-screen="chats"]').waitFor();
  const admin = await adminToken();
  await call('POST', `${ui.server.url}/api/admin/tenants/globex/suspend`, admin);
  try {
    // The page asks when the tab gets the focus again (and every few seconds).
    await page.evaluate(() => dispatchEvent(new Event('focus')));
    await page.locator('[data-screen="suspended"]').waitFor({ timeout: 15_000 });
    await checkA11y(page, 'suspended company');
  } finally {
    await call('POST', `${ui.server.url}/api/admin/tenants/globex/activate`, admin);
  }
  await page.evaluate(() => dispatchEvent(new Event('focus')));
  await page.locator('[data-screen="chats"]').waitFor({ timeout: 15_000 });
  assert.equal(await page.locator('[data-screen="suspended"]').count(), 0);
  await page.context().close();
});
