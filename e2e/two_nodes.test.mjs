// End-to-end: two tenantd nodes on one libSQL server (sqld) and one Redis, as the README's "Past
// one machine" runs them: a pusher-js client connected to node B hears a chat message posted
// through node A. sqld is the binary SQLD_BIN names, redis-server Debian's, each started here on
// free ports. Without either the test is skipped with a note, except under CI=true, where it
// fails (.ci/run provides both).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Pusher from 'pusher-js';

import { startServer, waitFor, DEMO_PASSWORD as PASSWORD } from './server.mjs';

const STARTUP_MS = 30_000;

const missing = [];
if (!process.env.SQLD_BIN || !existsSync(process.env.SQLD_BIN)) {
  missing.push(`sqld (SQLD_BIN is ${process.env.SQLD_BIN ? `${process.env.SQLD_BIN}, not a file` : 'not set'})`);
}
try {
  execFileSync('redis-server', ['--version'], { stdio: 'ignore' });
} catch {
  missing.push('redis-server (not on PATH)');
}
const underCi = process.env.CI === 'true';
const skip = missing.length && !underCi ? `note: no ${missing.join(' and no ')}: skipped` : false;

const processes = [];
const dirs = [];
const clients = [];
let a;
let b;

/** A loopback port nobody listened on a moment ago. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts `command`, remembered for `after` to kill; its output kept for a failure message. */
function run(command, args, cwd) {
  const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = [];
  child.stdout.on('data', (d) => out.push(d));
  child.stderr.on('data', (d) => out.push(d));
  child.exited = new Promise((resolve) => child.on('exit', resolve));
  child.output = () => Buffer.concat(out).toString();
  processes.push(child);
  return child;
}

/** Polls the async `check` every 50 ms until it holds; false if `child` exits or time runs out. */
async function until(child, check) {
  const deadline = Date.now() + STARTUP_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    if (await check().catch(() => false)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

function answers(url) {
  return fetch(url).then(() => true);
}

function pong(port) {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.setTimeout(1000, () => { socket.destroy(); resolve(false); });
    socket.on('error', () => resolve(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => { socket.destroy(); resolve(d.toString().startsWith('+PONG')); });
  });
}

/** sqld with namespaces on, on free ports; another pair is tried if one was taken meanwhile. */
async function startSqld() {
  const dir = mkdtempSync(join(tmpdir(), 'tenantd-e2e-sqld-'));
  dirs.push(dir);
  let log = '';
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const [http, admin] = [await freePort(), await freePort()];
    const child = run(process.env.SQLD_BIN, [
      '--enable-namespaces', '--disable-default-namespace',
      '--db-path', join(dir, 'data'),
      '--http-listen-addr', `127.0.0.1:${http}`,
      '--admin-listen-addr', `127.0.0.1:${admin}`,
      '--no-welcome',
    ], dir);
    const url = `http://127.0.0.1:${http}`;
    const adminUrl = `http://127.0.0.1:${admin}`;
    // Both listeners: /health on the Hrana one, any answer on the admin one.
    if (await until(child, async () => (await fetch(`${url}/health`)).ok && answers(`${adminUrl}/health`))) {
      return { url, adminUrl };
    }
    log = child.output();
    child.kill('SIGKILL');
  }
  throw new Error(`sqld did not start:\n${log}`);
}

async function startRedis() {
  const dir = mkdtempSync(join(tmpdir(), 'tenantd-e2e-redis-'));
  dirs.push(dir);
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const port = await freePort();
    const child = run('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
    ], dir);
    if (await until(child, () => pong(port))) return `redis://127.0.0.1:${port}/`;
    child.kill('SIGKILL');
  }
  throw new Error('redis-server did not start');
}

/** The Pusher key a node's own page gives the browser (its boot data). */
async function pageKey(node) {
  const html = await (await fetch(`${node.url}/`, { headers: { Accept: 'text/html' } })).text();
  const content = html.match(/<meta name="tenantd-boot" content="([^"]*)">/)?.[1];
  assert.ok(content, `no boot data in ${node.url}/: ${html.slice(0, 600)}`);
  const boot = JSON.parse(content.replace(/&(quot|#39|lt|gt|amp);/g, (_, e) => (
    { quot: '"', '#39': "'", lt: '<', gt: '>', amp: '&' }[e])));
  return boot.realtime.key;
}

async function api(node, method, path, token, body) {
  const res = await fetch(node.url + path, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body ? { 'Content-Type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

before(async () => {
  if (skip) return;
  if (missing.length) throw new Error(`CI=true: no ${missing.join(' and no ')} (.ci/run provides them)`);
  const sqld = await startSqld();
  const redis = await startRedis();
  const args = [
    '--store', 'sqld', '--sqld-url', sqld.url, '--sqld-admin-url', sqld.adminUrl, '--redis-url', redis,
  ];
  // A makes the shared catalog and the demo's companies and people; B finds them there.
  a = await startServer({ args });
  b = await startServer({ args, firstAdmin: false });
});

after(async () => {
  for (const c of clients) c.disconnect();
  await Promise.all([a?.stop(), b?.stop()]);
  for (const child of processes) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await child.exited;
  }
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

test('a pusher-js client on node B hears a message posted through node A', { skip }, async () => {
  const key = await pageKey(b);
  assert.equal(await pageKey(a), key, 'both nodes speak for the one Pusher app of the catalog');

  // Alice signs in through A; her session is in the shared catalog, so B takes it too.
  const login = await api(a, 'POST', '/api/auth/login', null, { email: 'alice@acme.test', password: PASSWORD });
  assert.equal(login.status, 200, JSON.stringify(login.json));
  const { token } = login.json;
  const me = await api(b, 'GET', '/api/me', token);
  assert.equal(me.status, 200, JSON.stringify(me.json));
  const acme = me.json.memberships.find((m) => m.slug === 'acme');
  assert.ok(acme, 'alice belongs to acme');
  const chats = await api(b, 'GET', '/t/acme/api/chats', token);
  const chat = chats.json.chats.find((c) => c.participant);
  assert.ok(chat, 'alice takes part in a chat');

  const client = new Pusher(key, {
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: b.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization: {
      endpoint: `${b.url}/broadcasting/auth`,
      transport: 'ajax',
      headers: { Authorization: `Bearer ${token}` },
    },
  });
  clients.push(client);
  const received = [];
  let subscribed = false;
  let failed = null;
  const channel = client.subscribe(`private-company.${acme.tenant_id}.chat.${chat.id}`);
  channel.bind('pusher:subscription_succeeded', () => { subscribed = true; });
  channel.bind('pusher:subscription_error', (e) => { failed = e; });
  channel.bind('message.created', (e) => received.push(e));
  await waitFor(() => subscribed || failed, 'the subscription on B', 10_000);
  assert.equal(failed, null, `subscription refused: ${JSON.stringify(failed)}`);

  const posted = await api(a, 'POST', `/t/acme/api/chats/${chat.id}/messages`, token, {
    body: 'posted through A',
  });
  assert.equal(posted.status, 201, JSON.stringify(posted.json));
  await waitFor(() => received.length > 0, 'message.created on B (through Redis)', 10_000);
  assert.equal(received[0].message.body, 'posted through A');
  assert.equal(received[0].message.id, posted.json.id);
});
