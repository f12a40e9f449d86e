// The company's settings in a real browser: an admin changes the time zone, date format and
// colour on the Company tab; dates are written in that format and zone at once and after a
// reload, the logo shows in the header, the colour becomes the --primary custom property (set through the CSSOM: no CSP
// violation), and a member of another company keeps its own colour.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { setupUi, newPage, signIn, checkA11y, watchConsole } from './kit.mjs';

const ui = setupUi();
const WAIT = { timeout: 10_000 };
/** A 1x1 PNG. */
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==', 'base64');
const ZONE = 'Pacific/Kiritimati'; // UTC+14: its calendar day differs from UTC's for 14 hours a day.

/** "dd/mm/yyyy hh:mm" of an instant in a zone, as the page should write it with en-GB and dmy. */
function dmy(date, timeZone) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-GB', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
      .formatToParts(date)
      .map((p) => [p.type, p.value]),
  );
  return `${parts.day}/${parts.month}/${parts.year} ${parts.hour}:${parts.minute}`;
}

test('an admin sets the time zone, date format and colour; dates and the theme follow', { skip: ui.skip }, async () => {
  const page = await newPage(ui.browser);
  const log = await watchConsole(page);
  await signIn(page, `${ui.server.url}/t/acme/settings/company`, 'alice@acme.test');
  const screen = page.locator('[data-screen="company-settings"]');
  await screen.waitFor(WAIT);
  await checkA11y(page, 'company settings');

  await screen.getByLabel('Language and region').fill('en-GB');
  await screen.getByLabel('Time zone').fill(ZONE);
  await screen.getByLabel('Date format').selectOption('dmy');
  await screen.getByLabel('Colour').fill('#7a2e0e');
  await screen.getByLabel('Logo').setInputFiles({ name: 'logo.png', mimeType: 'image/png', buffer: PNG });
  const before = new Date();
  await screen.getByRole('button', { name: 'Save settings' }).click();
  await page.getByText('Settings saved.').waitFor(WAIT);

  const sample = page.getByTestId('date-sample');
  const shown = async () => (await sample.innerText()).replace(/^Now: /, '');
  const allowed = (from) => [dmy(from, ZONE), dmy(new Date(), ZONE)];
  await page.waitForFunction(() => /\d\d\/\d\d\/\d{4}/.test(document.querySelector('[data-testid="date-sample"]').textContent), null, WAIT);
  assert.ok(allowed(before).includes(await shown()), `${await shown()} in ${ZONE}, day/month/year`);

  const primary = () => page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--primary').trim());
  assert.equal(await primary(), '#7a2e0e');
  const button = () => screen.getByRole('button', { name: 'Save settings' }).evaluate((b) => getComputedStyle(b).backgroundColor);
  assert.equal(await button(), 'rgb(122, 46, 14)');
  // The logo in the header, loaded from the server as an image.
  const logo = page.getByTestId('company-logo');
  await logo.waitFor(WAIT);
  await page.waitForFunction(() => document.querySelector('[data-testid="company-logo"]').complete, null, WAIT);
  assert.equal(await logo.evaluate((img) => img.naturalWidth), 1);

  // Loaded once by the workspace: the same after a reload, on another screen too.
  const reloaded = new Date();
  await page.reload();
  await screen.waitFor(WAIT);
  assert.ok(allowed(reloaded).includes(await shown()), `after a reload: ${await shown()}`);
  assert.equal(await primary(), '#7a2e0e');
  assert.deepEqual(await log.cspViolations(), []);

  // A bad value is named by the API beside its field.
  await screen.getByLabel('Time zone').fill('Mars/Olympus_Mons');
  await screen.getByRole('button', { name: 'Save settings' }).click();
  await screen.getByText('must be an IANA time zone name').waitFor(WAIT);
  await page.context().close();

  // Another company keeps its own colour and the default format.
  const other = await newPage(ui.browser);
  await signIn(other, `${ui.server.url}/t/globex/chats`, 'gina@globex.test');
  await other.locator('[data-screen="chats"]').waitFor(WAIT);
  const theirs = await other.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--primary').trim());
  assert.notEqual(theirs, '#7a2e0e');
  await other.context().close();
});
