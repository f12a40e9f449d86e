// The workspace's chats in a real browser (issue 15): two people in two browser contexts see each
// other's messages, typing, edits and deletes live; the list counts what is unread; a person can
// do it all with the keyboard alone; axe finds nothing serious; and a member of another company
// receives none of it, not even by asking for the channel.
//
// Demo data (src/demo.rs, src/workspace/demo.rs): in acme, "General" holds every member (alice,
// ada, mike, sam, vic) and "Direct" is ada's and alice's; globex has its own "General". Tests
// share one server, so each one writes texts of its own and finds chats by title.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { setupUi, newPage, signIn, checkA11y, screenshot, phoneScreenshot, collectResponses, bootOf } from './kit.mjs';

const ui = setupUi();

let counter = 0;
/** A message text no other test writes. */
const unique = (what) => `${what} ${process.pid}-${Date.now()}-${++counter}`;

async function openWorkspace(email, path = '/chats', { slug = 'acme', ...options } = {}) {
  const page = await newPage(ui.browser, options);
  await signIn(page, ui.server.host(slug) + path, email);
  return page;
}

/** The list row of a chat, by title. */
function row(page, title) {
  return page.locator('[data-testid="chat-row"]').filter({ has: page.locator('.chat-title', { hasText: new RegExp(`^${title}`) }) });
}

/** Opens a chat from the list and waits until its channel is subscribed. */
async function openChat(page, title) {
  await row(page, title).getByRole('link').click();
  await page.locator('[data-screen="chat"][data-live="true"]').getByRole('heading', { name: title, exact: true }).waitFor();
}

function composer(page) {
  return page.locator('[data-screen="chat"]').getByLabel('Message', { exact: true });
}

/** Sends with the composer and resolves once the sender's own page shows the message. */
async function send(page, text) {
  await composer(page).fill(text);
  await composer(page).press('Enter');
  await message(page, text).waitFor({ timeout: 5000 });
}

function message(page, text) {
  return page.locator('[data-testid="message"]').filter({ hasText: text });
}

async function unreadOf(page, title) {
  const badge = row(page, title).locator('[data-testid="unread"]');
  if ((await badge.count()) === 0) return 0;
  return Number((await badge.innerText()).match(/\d+/)[0]);
}

test('screenshots: the chats with a conversation open, on a desktop and on a phone', { skip: ui.skip }, async () => {
  const alice = await openWorkspace('alice@acme.test');
  const ada = await openWorkspace('ada@acme.test');
  try {
    await openChat(alice, 'General');
    await openChat(ada, 'General');
    await send(ada, 'The Liskov order is packed: it goes out with the 3 pm pickup.');
    await message(alice, 'The Liskov order is packed').waitFor({ timeout: 5000 });
    await send(alice, 'Great, thanks Ada! I\'ll let the customer know.');
    await composer(ada).focus();
    await ada.keyboard.type('You');
    await alice.getByTestId('typing').filter({ hasText: 'Ada is typing…' }).waitFor({ timeout: 5000 });
    await alice.locator('main').focus();
    await screenshot(alice, 'chats');
    await phoneScreenshot(alice, 'chats');
  } finally {
    await alice.context().close();
    await ada.context().close();
  }
});

test('a message reaches another participant within a second, and typing shows and goes', { skip: ui.skip }, async () => {
  const alice = await openWorkspace('alice@acme.test');
  const ada = await openWorkspace('ada@acme.test');
  try {
    await openChat(alice, 'General');
    await openChat(ada, 'General');

    const text = unique('Hello Ada');
    await send(alice, text);
    // The send has resolved (alice's page shows her message): ada's must show it within 1 s.
    await message(ada, text).waitFor({ timeout: 1000 });
    assert.match(await message(ada, text).innerText(), /Alice Admin/);

    const typing = alice.getByTestId('typing');
    await composer(ada).focus();
    await ada.keyboard.type('I am typing', { delay: 30 });
    await typing.filter({ hasText: 'Ada is typing…' }).waitFor({ timeout: 5000 });
    await ada.keyboard.press('Enter');
    await message(alice, 'I am typing').last().waitFor({ timeout: 5000 });
    await typing.filter({ hasText: /^$/ }).waitFor({ timeout: 5000 });
    assert.equal(await typing.innerText(), '');
  } finally {
    await alice.context().close();
    await ada.context().close();
  }
});

test('keyboard only: sign in, open a chat and send a message without the mouse', { skip: ui.skip }, async () => {
  const page = await newPage(ui.browser);
  const mike = await openWorkspace('mike@acme.test');
  try {
    await openChat(mike, 'General');
    await page.goto(ui.server.host('acme') + '/chats');
    await page.locator('[data-screen="signin"]').waitFor();
    const focused = () =>
      page.evaluate(() => {
        const el = document.activeElement;
        if (!el) return '';
        const label = el.labels && el.labels[0] ? el.labels[0].textContent : '';
        return `${el.tagName}|${label.trim()}|${(el.textContent || '').trim().slice(0, 40)}`;
      });
    const tabTo = async (wanted, limit = 60) => {
      for (let i = 0; i < limit; i++) {
        if (wanted.test(await focused())) return;
        await page.keyboard.press('Tab');
      }
      throw new Error(`Tab never reached ${wanted}; focus is on ${await focused()}`);
    };
    await tabTo(/^INPUT\|Email\|/);
    await page.keyboard.type('sam@example.test');
    await page.keyboard.press('Tab');
    await page.keyboard.type('demo-password');
    await page.keyboard.press('Enter');
    await page.locator('[data-screen="chats"] [data-testid="chat-row"]').first().waitFor();

    await tabTo(/^A\|\|General/);
    await page.keyboard.press('Enter');
    await page.locator('[data-screen="chat"][data-live="true"]').waitFor();
    await tabTo(/^TEXTAREA\|Message\|/);
    const text = unique('Sent with the keyboard');
    await page.keyboard.type(text);
    await page.keyboard.press('Enter');
    await message(page, text).waitFor({ timeout: 5000 });
    assert.equal(await composer(page).inputValue(), '', 'the composer is empty after sending');
    await message(mike, text).waitFor({ timeout: 5000 });
  } finally {
    await page.context().close();
    await mike.context().close();
  }
});

test('Shift+Enter starts a new line instead of sending', { skip: ui.skip }, async () => {
  const alice = await openWorkspace('alice@acme.test');
  try {
    await openChat(alice, 'General');
    const first = unique('first line');
    await composer(alice).focus();
    await alice.keyboard.type(first);
    await alice.keyboard.press('Shift+Enter');
    await alice.keyboard.type('second line');
    assert.equal(await composer(alice).inputValue(), `${first}\nsecond line`);
    assert.equal(await message(alice, first).count(), 0, 'nothing was sent');
    await alice.keyboard.press('Enter');
    await message(alice, first).waitFor({ timeout: 5000 });
    assert.match(await message(alice, first).locator('.message-body').innerText(), /first line .*\nsecond line/);
  } finally {
    await alice.context().close();
  }
});

test('editing and deleting one\'s own message reach the other participant', { skip: ui.skip }, async () => {
  const alice = await openWorkspace('alice@acme.test');
  const ada = await openWorkspace('ada@acme.test');
  try {
    await openChat(alice, 'General');
    await openChat(ada, 'General');
    const text = unique('Typo hree');
    await send(alice, text);
    await message(ada, text).waitFor({ timeout: 5000 });
    const id = await message(alice, text).getAttribute('data-message-id');
    const onAda = ada.locator(`[data-testid="message"][data-message-id="${id}"]`);
    const onAlice = alice.locator(`[data-testid="message"][data-message-id="${id}"]`);

    // Only one's own messages offer Edit and Delete.
    assert.equal(await onAda.getByRole('button', { name: 'Edit message' }).count(), 0);

    const fixed = text.replace('hree', 'here');
    await onAlice.getByRole('button', { name: 'Edit message' }).click();
    await onAlice.getByLabel('Edit message').fill(fixed);
    await onAlice.getByLabel('Edit message').press('Enter');
    await onAlice.locator('.message-body', { hasText: fixed }).waitFor({ timeout: 5000 });
    await onAda.locator('.message-body', { hasText: fixed }).waitFor({ timeout: 5000 });
    await onAda.locator('.edited').waitFor();

    await onAlice.getByRole('button', { name: 'Delete message' }).click();
    await alice.getByRole('dialog', { name: 'Delete this message?' }).getByRole('button', { name: 'Delete', exact: true }).click();
    await onAlice.getByText('message deleted').waitFor({ timeout: 5000 });
    await onAda.getByText('message deleted').waitFor({ timeout: 5000 });
    assert.ok(!(await ada.locator('[data-screen="chat"]').innerText()).includes(fixed), 'the deleted text is gone');
  } finally {
    await alice.context().close();
    await ada.context().close();
  }
});

test('a message in a chat one is not viewing raises its unread count and moves it up', { skip: ui.skip }, async () => {
  const alice = await openWorkspace('alice@acme.test', '/chats');
  const ada = await openWorkspace('ada@acme.test');
  try {
    await openChat(alice, 'General');
    await alice.locator('.chat-list-pane[data-live="true"]').waitFor();
    await openChat(ada, 'Direct');
    const before = await unreadOf(alice, 'Direct');
    const text = unique('Are you there?');
    await send(ada, text);
    await row(alice, 'Direct').locator('.chat-last', { hasText: text }).waitFor({ timeout: 5000 });
    assert.equal(await unreadOf(alice, 'Direct'), before + 1);
    assert.equal(await alice.locator('[data-testid="chat-row"]').first().getAttribute('data-chat-id'),
      await row(alice, 'Direct').getAttribute('data-chat-id'), 'the chat moved to the top');
    // The open chat counts nothing as unread; opening Direct reads it.
    assert.equal(await unreadOf(alice, 'General'), 0);
    await openChat(alice, 'Direct');
    await alice.locator('[data-screen="chat"]').getByText(text).waitFor();
    await openChat(alice, 'General');
    assert.equal(await unreadOf(alice, 'Direct'), 0);
    await alice.reload();
    await row(alice, 'Direct').waitFor();
    await alice.locator('[data-screen="chat"]').waitFor();
    assert.equal(await unreadOf(alice, 'Direct'), 0, 'the read mark was stored');
  } finally {
    await alice.context().close();
    await ada.context().close();
  }
});

test('presence lists who is online, with names for screen readers', { skip: ui.skip }, async () => {
  const alice = await openWorkspace('alice@acme.test');
  const ada = await openWorkspace('ada@acme.test');
  try {
    const online = alice.getByRole('list', { name: 'Online now' });
    await online.getByText('Ada Agent').waitFor({ timeout: 5000 });
    await online.getByText('Alice Admin (you)').waitFor();
    await ada.context().close();
    await online.getByText('Ada Agent').waitFor({ state: 'detached', timeout: 10_000 });
  } finally {
    await alice.context().close();
  }
});

test('axe finds nothing serious on the chats, a conversation and its dialogs', { skip: ui.skip }, async () => {
  const alice = await openWorkspace('alice@acme.test');
  try {
    await alice.locator('[data-screen="chats"] [data-testid="chat-row"]').first().waitFor();
    await checkA11y(alice, 'chats');
    await openChat(alice, 'General');
    await checkA11y(alice, 'chat');
    await alice.getByRole('button', { name: /participants$/ }).click();
    await alice.getByRole('dialog', { name: 'Participants of General' }).locator('.participant-name', { hasText: 'Ada Agent' }).waitFor();
    await checkA11y(alice, 'chat participants');
    await alice.keyboard.press('Escape');
    await alice.getByRole('button', { name: 'New chat' }).click();
    await alice.getByRole('dialog', { name: 'New chat' }).waitFor();
    await checkA11y(alice, 'new chat');
  } finally {
    await alice.context().close();
  }
});

test('a new group chat with chosen members appears live for them', { skip: ui.skip }, async () => {
  const alice = await openWorkspace('alice@acme.test');
  const ada = await openWorkspace('ada@acme.test');
  try {
    await ada.locator('[data-screen="chats"] [data-testid="chat-row"]').first().waitFor();
    const title = unique('Launch plan');
    await alice.getByRole('button', { name: 'New chat' }).click();
    const dialog = alice.getByRole('dialog', { name: 'New chat' });
    await dialog.getByLabel('Title').fill(title);
    await dialog.getByRole('checkbox', { name: 'Ada Agent' }).check();
    await dialog.getByRole('button', { name: 'Start chat' }).click();
    await alice.locator('[data-screen="chat"]').getByRole('heading', { name: title }).waitFor();
    await alice.locator('[data-screen="chat"]').getByRole('button', { name: '2 participants' }).waitFor();
    await row(ada, title).waitFor({ timeout: 5000 });

    // Archiving makes it read-only until unarchived.
    await alice.getByRole('button', { name: 'Archive', exact: true }).click();
    await alice.getByText('This chat is archived.').waitFor();
    assert.equal(await composer(alice).count(), 0);
    await alice.getByRole('button', { name: 'Unarchive' }).click();
    await composer(alice).waitFor();
  } finally {
    await alice.context().close();
    await ada.context().close();
  }
});

test('another company\'s member receives none of acme\'s messages and cannot subscribe to its channels', { skip: ui.skip }, async () => {
  const alice = await openWorkspace('alice@acme.test');
  const ada = await openWorkspace('ada@acme.test');
  const gina = await openWorkspace('gina@globex.test', '/chats', { slug: 'globex' });
  const seen = collectResponses(gina);
  const gus = await openWorkspace('gus@globex.test', '/chats', { slug: 'globex' });
  try {
    await openChat(alice, 'General');
    await openChat(ada, 'General');
    await openChat(gina, 'General');
    await openChat(gus, 'General');
    // The same chat id in both companies' files: nothing may cross over because of it.
    const acmeChat = await alice.locator('[data-testid="chat-row"][data-chat-id]').filter({ hasText: 'General' }).getAttribute('data-chat-id');
    const globexChat = await gina.locator('[data-testid="chat-row"]').filter({ hasText: 'General' }).getAttribute('data-chat-id');
    assert.equal(acmeChat, globexChat, 'demo data: both Generals have the same id');

    const secret = unique('acme only');
    await send(alice, secret);
    await message(ada, secret).waitFor({ timeout: 5000 });
    // gina's page is live: a globex message reaches it, and after that still no acme one.
    const own = unique('globex news');
    await send(gus, own);
    await message(gina, own).waitFor({ timeout: 5000 });
    assert.equal(await message(gina, secret).count(), 0);
    assert.ok(!(await gina.content()).includes(secret), 'the acme message is nowhere in gina\'s DOM');
    assert.deepEqual(await seen.find(secret), [], 'no answer or frame gina received holds it');

    // Asking for acme's channels from gina's page, with the real pusher-js client, is refused.
    const acme = await alice.evaluate(() => fetch('/api/tenant').then((r) => r.json()));
    const { realtime } = await bootOf(gina);
    for (const channel of [`private-company.${acme.id}.chat.${acmeChat}`, `presence-company.${acme.id}.presence`]) {
      const outcome = await gina.evaluate(async ({ key, channel }) => {
        const me = await fetch('/api/me').then((r) => r.json());
        return new Promise((resolve) => {
          const pusher = new window.Pusher(key, {
            cluster: 'mt1',
            wsHost: location.hostname,
            wsPort: Number(location.port),
            forceTLS: false,
            enabledTransports: ['ws'],
            disableStats: true,
            authEndpoint: '/broadcasting/auth',
            auth: { headers: { 'X-CSRF-Token': me.csrf_token } },
          });
          const done = (result) => {
            pusher.disconnect();
            resolve(result);
          };
          const sub = pusher.subscribe(channel);
          sub.bind('pusher:subscription_error', (e) => done({ refused: e.status }));
          sub.bind('pusher:subscription_succeeded', () => done({ subscribed: true }));
          // Neither event would be a failure too, not a hung test.
          setTimeout(() => done({ unanswered: true }), 10_000);
        });
      }, { key: realtime.key, channel });
      assert.deepEqual(outcome, { refused: 403 }, channel);
    }
  } finally {
    for (const page of [alice, ada, gina, gus]) await page.context().close();
  }
});
