// End-to-end: inbound webhooks signed with the official `standardwebhooks` package from npm,
// against the real binary (`serve --demo`): the message reaches the chat, through the API and
// live on the chat's channel (pusher-js through Laravel Echo, subscribed as a participant); a
// replay is processed once; a wrong or another company's secret is refused. The `billing` source,
// signed with the server's secret a system admin made, sets a company's plan and status.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Pusher from 'pusher-js';
import Echo from 'laravel-echo';
import { Webhook } from 'standardwebhooks';

import { startServer, waitFor, DEMO_PASSWORD } from './server.mjs';

let server;
let alice;
let tenants = {};
let secret;
let chat;
let client;

async function api(method, path, token, body, headers = {}) {
  const res = await fetch(server.url + path, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}


/** Posts a delivery as a sender using the npm package would: signed body, three headers. */
function deliver(signingSecret, id, payload, source = 'messages') {
  const body = JSON.stringify(payload);
  const now = new Date();
  const signature = new Webhook(signingSecret).sign(id, now, body);
  return api('POST', `/api/webhooks/${source}`, null, body, {
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
    'webhook-signature': signature,
  });
}

before(async () => {
  server = await startServer();
  const login = await api('POST', '/api/auth/login', null, { email: 'alice@acme.test', password: DEMO_PASSWORD });
  assert.equal(login.status, 200);
  alice = login.json.token;
  // Sam works at both companies: his memberships give globex's id too.
  const sam = await api('POST', '/api/auth/login', null, { email: 'sam@example.test', password: DEMO_PASSWORD });
  for (const who of [alice, sam.json.token]) {
    const me = await api('GET', '/api/me', who);
    for (const m of me.json.memberships) tenants[m.slug] = m.tenant_id;
  }
  assert.ok(tenants.acme && tenants.globex);
  const made = await api('POST', '/t/acme/api/webhook-sources/messages/secret', alice);
  assert.ok([200, 201].includes(made.status), JSON.stringify(made.json));
  secret = made.json.secret;
  const chats = await api('GET', '/t/acme/api/chats', alice);
  chat = chats.json.chats.find((c) => c.participant && !c.archived_at);
  assert.ok(chat, 'alice takes part in a chat');
});

after(async () => {
  client?.disconnect();
  await server?.stop();
});

test('a signed message appears live on the chat channel and in the chat, once', async () => {
  const { key } = server.credentials();
  client = new Echo({
    broadcaster: 'pusher',
    Pusher,
    key,
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    authEndpoint: `${server.url}/broadcasting/auth`,
    auth: { headers: { Authorization: `Bearer ${alice}` } },
  });
  const received = [];
  let subscribed = false;
  client
    .private(`company.${tenants.acme}.chat.${chat.id}`)
    .subscribed(() => { subscribed = true; })
    .listen('.message.created', (e) => received.push(e.message));
  await waitFor(() => subscribed, 'the subscription');

  const payload = {
    tenantId: tenants.acme,
    chatId: chat.id,
    body: 'hello from the bridge',
    author: { name: 'Eve Bridge', externalId: 'tg:42' },
  };
  const first = await deliver(secret, 'msg_e2e_1', payload);
  assert.equal(first.status, 202, JSON.stringify(first.json));
  assert.equal(typeof first.json.job, 'number');

  const live = await waitFor(() => received.find((m) => m.body === 'hello from the bridge'), 'message.created', 10000);
  assert.equal(live.user_id, 0);
  assert.deepEqual(live.external_author, { name: 'Eve Bridge', external_id: 'tg:42' });

  // The sender retries the same webhook-id: the same job, nothing more in the chat.
  const again = await deliver(secret, 'msg_e2e_1', payload);
  assert.equal(again.status, 202);
  assert.deepEqual(again.json, { job: first.json.job, duplicate: true });

  const listed = await api('GET', `/t/acme/api/chats/${chat.id}/messages?limit=100`, alice);
  assert.equal(listed.status, 200);
  const ours = listed.json.messages.filter((m) => m.body === 'hello from the bridge');
  assert.equal(ours.length, 1);
  assert.equal(ours[0].id, live.id);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(received.filter((m) => m.body === 'hello from the bridge').length, 1);
});

test('a wrong secret, or acme\'s secret naming globex, is refused', async () => {
  const wrong = await deliver('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_e2e_2', {
    tenantId: tenants.acme, chatId: chat.id, body: 'x', author: { name: 'Mallory' },
  });
  assert.equal(wrong.status, 401);
  assert.equal(wrong.json.error.code, 'invalid_signature');
  const crossed = await deliver(secret, 'msg_e2e_3', {
    tenantId: tenants.globex, chatId: 1, body: 'x', author: { name: 'Mallory' },
  });
  assert.equal(crossed.status, 401);
  assert.equal(crossed.json.error.code, 'invalid_signature');
});

test('billing: the server\'s secret sets a plan and status; a company\'s secret cannot', async () => {
  const login = await api('POST', '/api/admin/auth/login', null, server.admin);
  assert.equal(login.status, 200, JSON.stringify(login.json));
  const admin = login.json.token;
  const made = await api('POST', '/api/admin/billing/secret', admin);
  assert.ok([200, 201].includes(made.status), JSON.stringify(made.json));
  const change = { tenantId: tenants.globex, plan: 'team', status: 'past_due', externalRef: 'sub_e2e' };

  const theirs = await deliver(secret, 'evt_e2e_1', change, 'billing');
  assert.equal(theirs.status, 401);
  assert.equal(theirs.json.error.code, 'invalid_signature');

  const first = await deliver(made.json.secret, 'evt_e2e_1', change, 'billing');
  assert.equal(first.status, 202, JSON.stringify(first.json));
  const again = await deliver(made.json.secret, 'evt_e2e_1', change, 'billing');
  assert.deepEqual(again.json, { job: first.json.job, duplicate: true });
  const subscription = async (slug) =>
    (await api('GET', `/api/admin/tenants/${slug}/subscription`, admin)).json;
  let globex = await subscription('globex');
  for (const started = Date.now(); globex.subscription.status !== 'past_due'; globex = await subscription('globex')) {
    assert.ok(Date.now() - started < 10000, 'the job changed the subscription');
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(globex.plan.slug, 'team');
  assert.equal(globex.subscription.external_ref, 'sub_e2e');
  assert.notEqual((await subscription('acme')).subscription.external_ref, 'sub_e2e');
});
