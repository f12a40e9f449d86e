// Data portability from the browser: a company admin downloads the company's archive (at once,
// and prepared in the background), a viewer cannot; a person downloads their own data and
// deletes their account, after which what they wrote shows as "Deleted user".

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

import { setupUi, newPage, signIn, apiSignIn, checkA11y, DEMO_PASSWORD } from './kit.mjs';

const ui = setupUi();

async function downloaded(page, click) {
  const [download] = await Promise.all([page.waitForEvent('download'), click()]);
  const path = await download.path();
  return { name: download.suggestedFilename(), bytes: await readFile(path) };
}

test('an admin exports the company at once and in the background; a viewer cannot', { skip: ui.skip }, async () => {
  const page = await newPage(ui.browser, { acceptDownloads: true });
  await signIn(page, ui.server.host('acme') + '/settings/export', 'alice@acme.test');
  const screen = page.locator('[data-screen="export"]');
  await screen.waitFor();
  await checkA11y(page, 'export screen');

  const now = await downloaded(page, () => screen.getByRole('link', { name: 'Export company data' }).click());
  assert.match(now.name, /^acme-\d{8}\.zip$/);
  assert.equal(now.bytes.subarray(0, 2).toString(), 'PK', 'a zip');
  assert.ok(now.bytes.includes(Buffer.from('tables/messages.jsonl')), 'with the messages table');

  await screen.getByRole('button', { name: 'Prepare an export' }).click();
  const row = page.locator('[data-testid="export-row"]', { hasText: 'Ready' });
  await row.waitFor({ timeout: 20_000 });
  const later = await downloaded(page, () => row.getByRole('link', { name: 'Download' }).click());
  assert.match(later.name, /^acme-\d{8}\.zip$/);
  assert.equal(later.bytes.subarray(0, 2).toString(), 'PK');
  await page.context().close();

  const viewer = await newPage(ui.browser);
  await signIn(viewer, ui.server.host('acme') + '/settings/export', 'vic@acme.test');
  await viewer.locator('[data-screen="no-access"][data-for="export"]').waitFor();
  assert.equal(await viewer.getByRole('link', { name: 'Export company data' }).count(), 0);
  await viewer.context().close();
});

test('a person downloads their data, then deletes their account; their message stays as "Deleted user"', { skip: ui.skip }, async () => {
  const acme = ui.server.host('acme');
  const page = await newPage(ui.browser, { acceptDownloads: true });
  const login = await apiSignIn(page, acme, 'ada@acme.test');
  const note = 'Ada leaves this note behind';
  const posted = await page.evaluate(async ({ csrf, note }) => {
    const chats = await (await fetch('/api/chats', { credentials: 'same-origin' })).json();
    const general = chats.chats.find((c) => c.title === 'General');
    const res = await fetch(`/api/chats/${general.id}/messages`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
      credentials: 'same-origin',
      body: JSON.stringify({ body: note }),
    });
    return { status: res.status, chat: general.id };
  }, { csrf: login.csrf_token, note });
  assert.equal(posted.status, 201);

  await page.goto(acme + '/profile');
  const profile = page.locator('[data-screen="profile"]');
  await profile.waitFor();
  const mine = await downloaded(page, () => profile.getByRole('link', { name: 'Download my data' }).click());
  const data = JSON.parse(mine.bytes.toString());
  assert.equal(data.account.email, 'ada@acme.test');
  assert.ok(JSON.stringify(data.companies).includes(note), 'my message is in my data');

  await profile.getByLabel('Your password').fill('not the password');
  await profile.getByRole('button', { name: 'Delete my account' }).click();
  await profile.getByText('The password is wrong.').waitFor();
  await checkA11y(page, 'profile with a refused deletion');

  await profile.getByLabel('Your password').fill(DEMO_PASSWORD);
  await profile.getByRole('button', { name: 'Delete my account' }).click();
  await page.locator('[data-screen="signin"]').waitFor();
  await page.context().close();

  const again = await newPage(ui.browser);
  await again.goto(acme + '/');
  const form = again.locator('[data-screen="signin"]');
  await form.getByLabel('Email', { exact: true }).fill('ada@acme.test');
  await form.getByLabel('Password', { exact: true }).fill(DEMO_PASSWORD);
  await form.getByRole('button', { name: 'Sign in', exact: true }).click();
  await form.locator('[role="alert"]').waitFor();
  await again.context().close();

  const admin = await newPage(ui.browser);
  await signIn(admin, `${acme}/chats/${posted.chat}`, 'alice@acme.test');
  const message = admin.locator('.message', { hasText: note });
  await message.waitFor();
  assert.match(await message.innerText(), /Deleted user/);
  await admin.context().close();
});
