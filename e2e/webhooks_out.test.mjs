// End-to-end: outbound webhooks from the real binary (its own job workers) to a Node receiver on
// loopback, which checks every signature with the official `standardwebhooks` package from npm,
// not with tenantd's code. The server runs with --webhooks-allow-private (the receiver is on
// loopback), a short job backoff and a small failure threshold, and the demo companies.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { Webhook } from 'standardwebhooks';

import { startServer, DEMO_PASSWORD as PASSWORD } from './server.mjs';

let server;
let receiver;
let hookBase;
const got = []; // { path, headers, body }
const scripts = new Map(); // path -> [status, ...] answered first, then 200
const tokens = {};
const tenantIds = {};

function waitFor(predicate, what, ms = 20000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = async () => {
      const value = await predicate();
      if (value) return resolve(value);
      if (Date.now() - started > ms) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

async function api(method, path, token, body) {
  const res = await fetch(server.url + path, {
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

async function register(slug, path, events) {
  const res = await api('POST', `/t/${slug}/api/webhook-endpoints`, tokens[slug], {
    url: hookBase + path,
    events,
  });
  assert.equal(res.status, 201, JSON.stringify(res.json));
  return res.json;
}

async function createOrder(slug, title) {
  const res = await api('POST', `/t/${slug}/api/orders`, tokens[slug], {
    title,
    customer_name: 'Ada',
    amount_minor: 4200,
    currency: 'EUR',
  });
  assert.equal(res.status, 201, JSON.stringify(res.json));
  return res.json;
}

const at = (path) => got.filter((r) => r.path === path);

/** The receiver's view: `new Webhook(secret).verify(body, headers)`, as an integrator would. */
function verifies(secret, request) {
  try {
    new Webhook(secret).verify(request.body, request.headers);
    return true;
  } catch {
    return false;
  }
}

before(async () => {
  receiver = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      got.push({ path: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const script = scripts.get(req.url) || [];
      const status = script.length ? script.shift() : 200;
      res.writeHead(status, { 'Content-Type': 'text/plain' });
      res.end(status === 200 ? 'ok' : 'nope');
    });
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  hookBase = `http://127.0.0.1:${receiver.address().port}`;
  server = await startServer({
    args: ['--webhooks-allow-private', '--job-backoff', '0.2'],
    env: { TENANTD_WEBHOOKS_MAX_FAILURES: '3' },
  });
  for (const [slug, email] of [['acme', 'alice@acme.test'], ['globex', 'gina@globex.test']]) {
    const res = await api('POST', '/api/auth/login', null, { email, password: PASSWORD });
    assert.equal(res.status, 200);
    tokens[slug] = res.json.token;
    tenantIds[slug] = (await api('GET', `/t/${slug}/api/tenant`, tokens[slug])).json.id;
  }
});

after(async () => {
  await server?.stop();
  receiver?.close();
});

test('an order is delivered with its tenant id, signed so that the npm package verifies it; globex never sees it', async () => {
  const acme = await register('acme', '/acme', ['order.created']);
  const globex = await register('globex', '/globex', ['*']);
  const order = await createOrder('acme', 'from e2e');
  const [request] = await waitFor(() => at('/acme').length && at('/acme'), 'the delivery');
  assert.ok(verifies(acme.secret, request), 'the signature verifies');
  assert.ok(!verifies(globex.secret, request), "another endpoint's secret does not");
  const payload = new Webhook(acme.secret).verify(request.body, request.headers);
  assert.equal(payload.type, 'order.created');
  assert.equal(payload.data.tenant_id, tenantIds.acme);
  assert.equal(payload.data.order.id, order.id);
  assert.match(request.headers['webhook-id'], /^msg_/);

  // globex's own order reaches globex's endpoint, and acme's never did.
  await createOrder('globex', 'globex only');
  await waitFor(() => at('/globex').length, "globex's delivery");
  const globexEvents = at('/globex').map((r) => JSON.parse(r.body));
  assert.ok(globexEvents.every((e) => e.data.tenant_id === tenantIds.globex), JSON.stringify(globexEvents));
  assert.equal(at('/acme').length, 1);
});

test('a 500 is retried with the same webhook-id, then 200; the log shows both attempts', async () => {
  scripts.set('/flaky', [500]);
  const endpoint = await register('acme', '/flaky', ['order.updated']);
  const order = await createOrder('acme', 'flaky');
  const res = await api('PATCH', `/t/acme/api/orders/${order.id}`, tokens.acme, { status: 'confirmed' });
  assert.equal(res.status, 200, JSON.stringify(res.json));
  const [first, second] = await waitFor(() => at('/flaky').length >= 2 && at('/flaky'), 'the retry');
  assert.equal(first.headers['webhook-id'], second.headers['webhook-id']);
  assert.ok(verifies(endpoint.secret, first) && verifies(endpoint.secret, second));
  const log = await waitFor(async () => {
    const page = await api('GET', `/t/acme/api/webhook-endpoints/${endpoint.id}/deliveries`, tokens.acme);
    return page.json.deliveries.length >= 2 && page.json.deliveries;
  }, 'the log');
  assert.deepEqual(log.map((d) => [d.attempt, d.status_code]), [[2, 200], [1, 500]]);
  assert.equal(log[0].webhook_id, first.headers['webhook-id']);
  assert.equal(log[1].response_excerpt, 'nope');
});

test('after a rotation both the old and the new secret verify', async () => {
  const endpoint = await register('acme', '/rotated', ['order.deleted']);
  const rotated = await api('POST', `/t/acme/api/webhook-endpoints/${endpoint.id}/rotate-secret`, tokens.acme);
  assert.equal(rotated.status, 200);
  const order = await createOrder('acme', 'to delete');
  assert.equal((await api('DELETE', `/t/acme/api/orders/${order.id}`, tokens.acme)).status, 200);
  const [request] = await waitFor(() => at('/rotated').length && at('/rotated'), 'the delivery');
  assert.ok(verifies(rotated.json.secret, request), 'the new secret verifies');
  assert.ok(verifies(endpoint.secret, request), 'the old secret verifies during the grace');
  assert.equal(JSON.parse(request.body).data.id, order.id);
});

test('an endpoint that keeps failing is disabled and says why', async () => {
  scripts.set('/down', Array(20).fill(503));
  const endpoint = await register('globex', '/down', ['order.created']);
  await createOrder('globex', 'into the void');
  const shown = await waitFor(async () => {
    const res = await api('GET', `/t/globex/api/webhook-endpoints/${endpoint.id}`, tokens.globex);
    return res.json.enabled === false && res.json;
  }, 'the endpoint disabled');
  assert.match(shown.disabled_reason, /3 failed/);
  assert.equal(at('/down').length, 3);
  const audit = await api('GET', '/t/globex/api/audit?action=webhook_endpoint.disabled', tokens.globex);
  assert.equal(audit.json.entries.length, 1);
});
