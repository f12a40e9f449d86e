// End-to-end: tenantd's real-time channels with the real clients from npm — pusher-js, Laravel
// Echo, and the official `pusher` Node SDK — against the real binary on a free port, with the demo
// companies (acme, globex) and their people.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Pusher from 'pusher-js';
import Echo from 'laravel-echo';
import PusherServer from 'pusher';

import { startServer, waitFor, DEMO_PASSWORD as PASSWORD } from './server.mjs';

let server;
let base;
let port;
let credentials;
const tenants = {};
const clients = [];

async function api(method, path, token, body, headers = {}) {
  const res = await fetch(base + path, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body ? { 'Content-Type': 'application/json' } : {}),
      ...headers,
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

async function login(email) {
  const res = await api('POST', '/api/auth/login', null, { email, password: PASSWORD });
  assert.equal(res.status, 200, `login ${email}: ${JSON.stringify(res.json)}`);
  return { token: res.json.token, user: res.json.user };
}

/** An Echo client signed in as `token`, speaking to the local server. */
function echo(token) {
  const client = new Echo({
    broadcaster: 'pusher',
    Pusher,
    key: credentials.key,
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    authEndpoint: `${base}/broadcasting/auth`,
    auth: { headers: { Authorization: `Bearer ${token}` } },
  });
  clients.push(client);
  return client;
}

function connected(client) {
  return waitFor(() => client.socketId(), 'the socket id');
}

before(async () => {
  server = await startServer();
  base = server.url;
  port = server.port;
  credentials = server.credentials();
  const alice = await login('alice@acme.test');
  const me = await api('GET', '/api/me', alice.token);
  for (const m of me.json.memberships) tenants[m.slug] = m.tenant_id;
  assert.ok(tenants.acme, 'alice belongs to acme');
});

after(async () => {
  for (const c of clients) c.disconnect();
  await server?.stop();
});

test('Echo connects and private() receives a message posted through the API', async () => {
  const alice = await login('alice@acme.test');
  const chats = await api('GET', '/t/acme/api/chats', alice.token);
  const chat = chats.json.chats.find((c) => c.participant);
  assert.ok(chat, 'alice takes part in a chat');

  const client = echo(alice.token);
  await connected(client);
  const received = [];
  let subscribed = false;
  client
    .private(`company.${tenants.acme}.chat.${chat.id}`)
    .subscribed(() => { subscribed = true; })
    .listen('.message.created', (e) => received.push(e));
  await waitFor(() => subscribed, 'the subscription');

  const posted = await api('POST', `/t/acme/api/chats/${chat.id}/messages`, alice.token, {
    body: 'hello from the API',
  });
  assert.equal(posted.status, 201);
  await waitFor(() => received.length > 0, 'message.created');
  assert.equal(received[0].message.body, 'hello from the API');
});

test('X-Socket-ID keeps an event from the socket that caused it', async () => {
  const alice = await login('alice@acme.test');
  const chats = await api('GET', '/t/acme/api/chats', alice.token);
  const chat = chats.json.chats.find((c) => c.participant);
  const mine = echo(alice.token);
  const other = echo(alice.token);
  await connected(mine);
  await connected(other);
  const seenByMine = [];
  const seenByOther = [];
  let ready = 0;
  for (const [client, seen] of [[mine, seenByMine], [other, seenByOther]]) {
    client
      .private(`company.${tenants.acme}.chat.${chat.id}`)
      .subscribed(() => { ready += 1; })
      .listen('.message.created', (e) => seen.push(e));
  }
  await waitFor(() => ready === 2, 'both subscriptions');
  await api('POST', `/t/acme/api/chats/${chat.id}/messages`, alice.token, { body: 'to others' }, {
    'X-Socket-ID': mine.socketId(),
  });
  await waitFor(() => seenByOther.length > 0, 'the other socket to see it');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(seenByMine.length, 0);
});

test('join() reports here, joining and leaving', async () => {
  const alice = await login('alice@acme.test');
  const mike = await login('mike@acme.test');
  const a = echo(alice.token);
  await connected(a);
  let here = null;
  const joined = [];
  const left = [];
  a.join(`company.${tenants.acme}.presence`)
    .here((members) => { here = members; })
    .joining((m) => joined.push(m))
    .leaving((m) => left.push(m));
  await waitFor(() => here, 'here()');
  assert.ok(here.some((m) => m.email === 'alice@acme.test'), JSON.stringify(here));

  const b = echo(mike.token);
  await connected(b);
  b.join(`company.${tenants.acme}.presence`);
  await waitFor(() => joined.length > 0, 'joining()');
  assert.equal(joined[0].email, 'mike@acme.test');
  b.leave(`company.${tenants.acme}.presence`);
  await waitFor(() => left.length > 0, 'leaving()');
  assert.equal(left[0].email, 'mike@acme.test');
});

test('error() fires on a channel the user may not join', async () => {
  // Vic is a viewer at acme: no chat permission, and globex is not his company at all.
  const vic = await login('vic@acme.test');
  const client = echo(vic.token);
  await connected(client);
  let failure = null;
  client.private(`company.${tenants.globex}.orders`).error((e) => { failure = e; });
  await waitFor(() => failure, 'error()');
  assert.equal(failure.status, 403);
});

test('whisper reaches the other participant, not the sender', async () => {
  const alice = await login('alice@acme.test');
  const sam = await login('sam@example.test');
  const chats = await api('GET', '/t/acme/api/chats', alice.token);
  // A chat both take part in: alice adds sam if needed.
  const chat = chats.json.chats.find((c) => c.participant);
  await api('POST', `/t/acme/api/chats/${chat.id}/participants`, alice.token, { user_id: sam.user.id });
  const a = echo(alice.token);
  const s = echo(sam.token);
  await connected(a);
  await connected(s);
  let ready = 0;
  const heardByAlice = [];
  const heardBySam = [];
  const name = `company.${tenants.acme}.chat.${chat.id}`;
  const ca = a.private(name).subscribed(() => { ready += 1; }).listenForWhisper('typing', (e) => heardByAlice.push(e));
  s.private(name).subscribed(() => { ready += 1; }).listenForWhisper('typing', (e) => heardBySam.push(e));
  await waitFor(() => ready === 2, 'both subscriptions');
  ca.whisper('typing', { name: 'Alice' });
  await waitFor(() => heardBySam.length > 0, 'the whisper');
  assert.deepEqual(heardBySam[0], { name: 'Alice' });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(heardByAlice.length, 0);
});

test('the official pusher SDK triggers an event through the HTTP API', async () => {
  const listener = new Pusher(credentials.key, {
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
  });
  clients.push({ disconnect: () => listener.disconnect() });
  const got = [];
  let subscribed = false;
  const channel = listener.subscribe('announcements');
  channel.bind('pusher:subscription_succeeded', () => { subscribed = true; });
  channel.bind('release', (data) => got.push(data));
  await waitFor(() => subscribed, 'the public subscription');

  const sdk = new PusherServer({
    appId: credentials.app_id,
    key: credentials.key,
    secret: credentials.secret,
    host: '127.0.0.1',
    port: String(port),
    useTLS: false,
  });
  const res = await sdk.trigger('announcements', 'release', { version: '1.0' });
  assert.equal(res.status, 200);
  await waitFor(() => got.length > 0, 'the triggered event');
  assert.deepEqual(got[0], { version: '1.0' });

  const forged = new PusherServer({
    appId: credentials.app_id,
    key: credentials.key,
    secret: 'not-the-secret',
    host: '127.0.0.1',
    port: String(port),
    useTLS: false,
  });
  await assert.rejects(forged.trigger('announcements', 'release', {}), (e) => e.status === 401);
});
