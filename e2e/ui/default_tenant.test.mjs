// A single-company install (`serve --default-tenant acme`, issue 18): the central host's own
// address opens acme's workspace, and the admin portal moves to /admin, where its links stay.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { setupUi, newPage, signIn, watchConsole } from './kit.mjs';

const ui = setupUi({ args: ['--default-tenant', 'acme'] });

test('the central address is the default company and the portal lives under /admin', { skip: ui.skip }, async () => {
  const person = await newPage(ui.browser);
  const personLog = await watchConsole(person);
  await signIn(person, ui.server.url + '/', 'alice@acme.test');
  // Acme's workspace, with its data, at the server's own address.
  await person.locator('[data-screen="chats"], [data-screen="orders"]').first().waitFor();
  const tenant = await person.evaluate(async () => (await fetch('/api/tenant')).json());
  assert.equal(tenant.slug, 'acme');
  assert.deepEqual(personLog.pageErrors, []);

  const admin = await newPage(ui.browser);
  const adminLog = await watchConsole(admin);
  await signIn(admin, ui.server.url + '/admin', ui.server.admin.email, ui.server.admin.password);
  await admin.locator('[data-screen="portal-tenants"]').waitFor();
  await admin.getByTestId('tenant-row').filter({ hasText: 'Globex' }).first().getByRole('link', { name: /Globex/ }).first().click();
  await admin.locator('[data-screen="portal-tenant"]').waitFor();
  assert.match(new URL(admin.url()).pathname, /^\/admin\/tenants\/globex$/);
  await admin.getByRole('link', { name: 'Audit log' }).first().click();
  await admin.waitForURL(/\/admin\/audit$/);
  assert.deepEqual(adminLog.pageErrors, []);
  await person.context().close();
  await admin.context().close();
});
