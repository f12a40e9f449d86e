// Attachments in a real browser: a file attached to an order through its file input is listed,
// downloads byte for byte and can be deleted, and a member who may not edit orders sees it
// without the controls; a file posted in a chat, with the composer's text as its caption,
// reaches another participant live and stays after a reload; and on a plan that allows files of
// 1 MiB a larger one is refused with the plan's limit in words, as is one past its storage. axe on the order's files and a
// screenshot of them (docs/screenshots/order-files.png).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';

import { setupUi, newPage, signIn, checkA11y, screenshot, DEMO_PASSWORD } from './kit.mjs';

const ui = setupUi();
const WAIT = { timeout: 10_000 };

let counter = 0;
/** A text no other test writes. */
const unique = (what) => `${what} ${process.pid}-${Date.now()}-${++counter}`;

/** A JSON call with a bearer token; throws on an answer that is not 2xx. */
async function call(method, url, token, body) {
  const res = await fetch(url, {
    method,
    headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function login(email) {
  return (await call('POST', `${ui.server.url}/api/auth/login`, null, { email, password: DEMO_PASSWORD })).token;
}

async function adminToken() {
  const { email, password } = ui.server.admin;
  return (await call('POST', `${ui.server.url}/api/admin/auth/login`, null, { email, password })).token;
}

/** A new order in `slug`, made through the API; its id. */
async function newOrder(token, slug, title) {
  const made = await call('POST', `${ui.server.url}/t/${slug}/api/orders`, token, {
    title, customer_name: 'Grace Hopper', amount_minor: 125_000, currency: 'EUR',
  });
  return made.id;
}

/** Bytes that are not text: every byte value, in an order of their own. */
function content(size, seed) {
  const out = Buffer.alloc(size);
  let x = Math.imul(seed, 2654435761) >>> 0;
  for (let i = 0; i < size; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** Opens an order's page as `email` and waits until its files are read. */
async function openOrder(email, slug, id) {
  const page = await newPage(ui.browser);
  await signIn(page, `${ui.server.host(slug)}/orders/${id}`, email);
  await page.locator(`[data-screen="order"][data-order-id="${id}"]`).waitFor(WAIT);
  const files = page.getByTestId('order-files');
  await files.waitFor(WAIT);
  await files.locator('.loading').waitFor({ state: 'detached', ...WAIT });
  return { page, files };
}

function fileItem(files, name) {
  return files.getByTestId('order-file').filter({ has: files.page().getByRole('link', { name, exact: true }) });
}

/** Clicks a download link and resolves to the download's name and bytes. */
async function download(page, link) {
  const [dl] = await Promise.all([page.waitForEvent('download', WAIT), link.click()]);
  const path = await dl.path();
  assert.ok(path, `the download of ${dl.suggestedFilename()} failed: ${await dl.failure()}`);
  return { name: dl.suggestedFilename(), bytes: await readFile(path) };
}

test('an order\'s file: attached through the file input, listed, downloaded byte for byte, deleted; a viewer sees it without the controls', { skip: ui.skip }, async () => {
  const alice = await login('alice@acme.test');
  const id = await newOrder(alice, 'acme', 'Oak shelves for the reading room');
  const { page, files } = await openOrder('alice@acme.test', 'acme', id);
  try {
    await files.getByText('No files yet').waitFor(WAIT);

    const name = 'Quote Ü 2026.pdf';
    const bytes = content(76_800, 1);
    await page.getByLabel('Attach file').setInputFiles({ name, mimeType: 'application/pdf', buffer: bytes });
    const item = fileItem(files, name);
    await item.waitFor(WAIT);
    const meta = await item.locator('.file-meta').innerText();
    assert.match(meta, /75\.0 KB/, meta);
    assert.match(meta, /You/, meta);

    // The API holds what the page sent.
    const listed = (await call('GET', `${ui.server.url}/t/acme/api/orders/${id}/files`, alice)).files;
    assert.deepEqual(listed.map((f) => [f.name, f.content_type, f.size, f.sha256]), [[name, 'application/pdf', bytes.length, sha256(bytes)]]);

    // A second file, for the screenshot: a drawing with no type the browser knows.
    await page.getByLabel('Attach file').setInputFiles({ name: 'shelf-drawing.dwg', mimeType: '', buffer: content(2_400_000, 2) });
    await fileItem(files, 'shelf-drawing.dwg').waitFor(WAIT);
    await page.waitForFunction(() => !document.querySelector('.toast'), null, WAIT);
    await checkA11y(page, 'order files');
    await files.scrollIntoViewIfNeeded();
    await screenshot(page, 'order-files');

    const got = await download(page, item.getByRole('link', { name, exact: true }));
    assert.equal(got.name, name);
    assert.ok(got.bytes.equals(bytes), `the download is the file (${got.bytes.length} bytes of ${bytes.length})`);

    // The viewer (simple view, no orders_edit) sees the files, with neither attach nor delete.
    const { page: vic, files: vicFiles } = await openOrder('vic@acme.test', 'acme', id);
    try {
      await fileItem(vicFiles, name).waitFor(WAIT);
      assert.equal(await vic.getByLabel('Attach file').count(), 0, 'no Attach file for a viewer');
      assert.equal(await vicFiles.getByRole('button', { name: /Delete/ }).count(), 0, 'no Delete for a viewer');
    } finally {
      await vic.context().close();
    }

    await item.getByRole('button', { name: `Delete ${name}` }).click();
    const dialog = page.getByRole('dialog', { name: `Delete “${name}”?` });
    await dialog.getByRole('button', { name: 'Delete file' }).click();
    await item.waitFor({ state: 'detached', ...WAIT });
    const left = (await call('GET', `${ui.server.url}/t/acme/api/orders/${id}/files`, alice)).files;
    assert.deepEqual(left.map((f) => f.name), ['shelf-drawing.dwg']);
    const gone = await page.evaluate((url) => fetch(url).then((r) => r.status), `/api/files/${listed[0].id}/download`);
    assert.equal(gone, 404);
  } finally {
    await page.context().close();
  }
});

/** The list row of a chat, by title. */
function row(page, title) {
  return page.locator('[data-testid="chat-row"]').filter({ has: page.locator('.chat-title', { hasText: new RegExp(`^${title}`) }) });
}

async function openChat(email, title) {
  const page = await newPage(ui.browser);
  await signIn(page, `${ui.server.host('acme')}/chats`, email);
  await row(page, title).getByRole('link').click();
  await page.locator('[data-screen="chat"][data-live="true"]').getByRole('heading', { name: title, exact: true }).waitFor(WAIT);
  return page;
}

function message(page, text) {
  return page.locator('[data-testid="message"]').filter({ hasText: text });
}

test('a file posted in a chat with the composer\'s text as its caption reaches another participant live, and downloads there', { skip: ui.skip }, async () => {
  const alice = await openChat('alice@acme.test', 'General');
  const ada = await openChat('ada@acme.test', 'General');
  try {
    const caption = unique('The floor plan');
    const name = `plan-${counter}.png`;
    const bytes = content(5_000, 3);
    const composer = alice.locator('[data-screen="chat"]').getByLabel('Message', { exact: true });
    await composer.fill(caption);
    await alice.getByLabel('Attach a file').setInputFiles({ name, mimeType: 'image/png', buffer: bytes });

    const mine = message(alice, caption);
    await mine.getByRole('link', { name, exact: true }).waitFor(WAIT);
    assert.equal(await composer.inputValue(), '', 'the caption went with the file');

    // Ada's page has it through the chat's channel, without a reload.
    await ada.evaluate(() => { window.__notReloaded = true; });
    const hers = message(ada, caption);
    await hers.getByRole('link', { name, exact: true }).waitFor(WAIT);
    assert.match(await hers.getByTestId('message-file').innerText(), /4\.9 KB/);
    assert.equal(await ada.evaluate(() => window.__notReloaded === true), true, 'ada\'s page was not reloaded');
    const got = await download(ada, hers.getByRole('link', { name, exact: true }));
    assert.equal(got.name, name);
    assert.ok(got.bytes.equals(bytes), 'ada downloads the file alice sent');

    // Without a caption the message is the file alone; both stay after a reload.
    const bare = `notes-${counter}.txt`;
    await alice.getByLabel('Attach a file').setInputFiles({ name: bare, mimeType: 'text/plain', buffer: Buffer.from('Measure twice.\n') });
    await alice.getByRole('link', { name: bare, exact: true }).waitFor(WAIT);
    await ada.getByRole('link', { name: bare, exact: true }).waitFor(WAIT);
    await ada.reload();
    await ada.locator('[data-screen="chat"][data-live="true"]').waitFor(WAIT);
    await message(ada, caption).getByRole('link', { name, exact: true }).waitFor(WAIT);
    const bareMessage = ada.locator('[data-testid="message"]').filter({ has: ada.getByRole('link', { name: bare, exact: true }) });
    assert.equal(await bareMessage.locator('.message-body').count(), 0, 'no text beside a file sent without a caption');
    await checkA11y(ada, 'chat with files');
  } finally {
    await alice.context().close();
    await ada.context().close();
  }
});

test('on a plan that allows files of 1 MiB, a larger one is refused in words naming the limit, and so is one past the storage', { skip: ui.skip }, async () => {
  // globex alone goes on the limited plan: the other tests' acme is left as it was. The order
  // comes first: the demo's globex has more orders than the free plan allows.
  const gina = await login('gina@globex.test');
  const id = await newOrder(gina, 'globex', unique('Steel brackets'));
  const admin = await adminToken();
  await call('PATCH', `${ui.server.url}/api/admin/plans/free`, admin, { limits: { file_size_mb: 1 } });
  await call('PUT', `${ui.server.url}/api/admin/tenants/globex/subscription`, admin, { plan: 'free', status: 'active' });
  const { page, files } = await openOrder('gina@globex.test', 'globex', id);
  try {
    const big = content((1 << 20) + 300_000, 4);
    await page.getByLabel('Attach file').setInputFiles({ name: 'scan.tiff', mimeType: 'image/tiff', buffer: big });
    const alert = files.getByRole('alert');
    await alert.waitFor(WAIT);
    const said = await alert.innerText();
    assert.match(said, /“scan\.tiff” \(1\.3 MB\) is too large: the plan allows files of at most 1 MiB\./, said);
    assert.equal(await files.getByTestId('order-file').count(), 0);
    await files.getByText('No files yet').waitFor(WAIT);

    // A file within the limit still goes, and the error is gone.
    await page.getByLabel('Attach file').setInputFiles({ name: 'small.txt', mimeType: 'text/plain', buffer: Buffer.from('fits') });
    await fileItem(files, 'small.txt').waitFor(WAIT);
    assert.equal(await alert.count(), 0);

    // A file within the size but past the plan's storage (the database counts too) is refused
    // in words as well.
    await call('PATCH', `${ui.server.url}/api/admin/plans/free`, admin, { limits: { file_size_mb: 1, storage_mb: 1 } });
    await page.getByLabel('Attach file').setInputFiles({ name: 'photo.jpg', mimeType: 'image/jpeg', buffer: content(1 << 20, 5) });
    await alert.waitFor(WAIT);
    assert.match(await alert.innerText(), /There is no room left for “photo\.jpg” \(1\.0 MB\): the plan allows 1 MiB of storage in all\./);
    assert.deepEqual(await files.getByTestId('order-file').locator('.file-name').allInnerTexts(), ['small.txt']);

    // The chat's composer says the same.
    await page.goto(`${ui.server.host('globex')}/chats`);
    await row(page, 'General').getByRole('link').click();
    await page.locator('[data-screen="chat"][data-live="true"]').waitFor(WAIT);
    await page.getByLabel('Attach a file').setInputFiles({ name: 'scan.tiff', mimeType: 'image/tiff', buffer: big });
    const composerError = page.locator('#composer-err');
    await composerError.waitFor(WAIT);
    assert.match(await composerError.innerText(), /is too large: the plan allows files of at most 1 MiB/);
  } finally {
    await page.context().close();
  }
});
