// Personal API tokens from the profile page (issue 15: everything the API offers, from the
// browser): made for one company, shown once, working with curl-style calls for that company
// only, and revoked from the same page.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { setupUi, newPage, signIn, checkA11y } from './kit.mjs';

const ui = setupUi();

async function status(url, token) {
  const res = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
  await res.arrayBuffer();
  return res.status;
}

test('a token made in the profile works for its company only, is shown once, and revoking it ends it', { skip: ui.skip }, async () => {
  const page = await newPage(ui.browser);
  await signIn(page, ui.server.host('acme') + '/profile', 'sam@example.test');
  const screen = page.locator('[data-screen="profile"]');
  await screen.waitFor();
  await screen.getByLabel('Token name').fill('nightly export');
  await screen.getByLabel('Company').selectOption({ label: 'Acme Inc' });
  await screen.getByRole('button', { name: 'Make token' }).click();
  const shown = page.getByTestId('new-token');
  await shown.waitFor();
  const token = (await shown.innerText()).trim();
  assert.match(token, /^[0-9a-f]{64}$/);
  await page.locator('[data-testid="token-row"]', { hasText: 'nightly export' }).waitFor();
  await checkA11y(page, 'profile with a new token');

  assert.equal(await status(`${ui.server.url}/t/acme/api/tenant`, token), 200, 'the token reaches acme');
  assert.equal(await status(`${ui.server.url}/t/globex/api/tenant`, token), 403, 'but not globex, where sam is also a member');

  // Shown once: a reload lists the token, never its secret.
  await page.reload();
  await page.locator('[data-testid="token-row"]', { hasText: 'nightly export' }).waitFor();
  assert.equal(await page.getByTestId('new-token').count(), 0);
  assert.ok(!(await page.content()).includes(token), 'the secret is not on the page after a reload');

  await page.locator('[data-testid="token-row"]', { hasText: 'nightly export' }).getByRole('button', { name: /Revoke/ }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Revoke token' }).click();
  await page.locator('[data-testid="token-row"]', { hasText: 'nightly export' }).waitFor({ state: 'detached' });
  assert.equal(await status(`${ui.server.url}/t/acme/api/tenant`, token), 401, 'a revoked token is refused');
  await page.context().close();
});
