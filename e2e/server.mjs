// Starts the real tenantd binary for the end-to-end tests and the UI benchmark: `serve --demo` on a
// free port with a fresh data directory, and what its banner says (the URL, the first system
// admin's email and password).

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** Every demo account's password (src/demo.rs). */
export const DEMO_PASSWORD = 'demo-password';

const LISTEN_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 5_000;

export function defaultBinary() {
  return process.env.TENANTD_BIN || join(ROOT, 'target', 'debug', 'tenantd');
}

/**
 * Reads the banner `tenantd serve` prints on stdout (src/serve.rs): `tenantd listening on URL`,
 * then, on a first start, a block between two rules of `=` holding `email:` and `password:`.
 * `consume` takes one line; `done` resolves once both the URL and the admin are known (the URL
 * alone with `{ admin: false }`: a later node of a shared catalog shows no first admin).
 */
export function bannerReader({ admin = true } = {}) {
  const found = { url: null, admin: null, lines: [] };
  let inBlock = false;
  const block = {};
  let settle;
  const done = new Promise((resolve) => { settle = resolve; });
  const consume = (line) => {
    found.lines.push(line);
    const listening = line.match(/^tenantd listening on (http:\/\/\S+)$/);
    if (listening) found.url = listening[1];
    if (/^={20,}$/.test(line)) {
      if (inBlock && block.email && block.password) found.admin = { ...block };
      inBlock = !inBlock;
    } else if (inBlock) {
      const field = line.match(/^\s+(email|password):\s+(\S+)\s*$/);
      if (field) block[field[1]] = field[2];
    }
    if (found.url && (found.admin || !admin)) settle(found);
  };
  return { consume, done, found };
}

/**
 * Starts `tenantd serve --demo --bind 127.0.0.1:0 --data <fresh temporary directory>`.
 * Options: `binary` (default TENANTD_BIN or target/debug/tenantd), `env` (added to the
 * environment; TENANTD_* variables of the caller are dropped so they cannot change what is
 * tested), `args` (more arguments for `serve`), `logLevel` (RUST_LOG, default `warn`),
 * `firstAdmin` (default true; false: ready once the URL is printed, for a later node of a
 * catalog other nodes share, which prints no first admin; `admin` is then null).
 *
 * Resolves to `{ url, port, data, binary, admin: {email, password}, banner, host(slug),
 * credentials(), stop() }`. `host('acme')` is `http://acme.localhost:PORT`. `stop()` sends
 * SIGTERM (SIGKILL after 5 s), waits for the exit and removes the data directory.
 */
export async function startServer(options = {}) {
  const binary = options.binary || defaultBinary();
  const data = mkdtempSync(join(tmpdir(), 'tenantd-e2e-'));
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('TENANTD_')) env[k] = v;
  Object.assign(env, { RUST_LOG: options.logLevel || 'warn' }, options.env || {});
  const child = spawn(
    binary,
    ['serve', '--demo', '--bind', '127.0.0.1:0', '--data', data, ...(options.args || [])],
    { env, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  // 'exit' never comes for a binary that could not be spawned: 'error' ends the wait then.
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
    child.on('error', (error) => resolve({ error }));
  });
  const cleanup = () => rmSync(data, { recursive: true, force: true });

  const reader = bannerReader({ admin: options.firstAdmin !== false });
  createInterface({ input: child.stdout }).on('line', reader.consume);
  let timer;
  try {
    await Promise.race([
      reader.done,
      new Promise((_, reject) => {
        exited.then(({ code, signal, error }) => reject(new Error(error
          ? `cannot start ${binary}: ${error.message} (set TENANTD_BIN, or run cargo build)`
          : `tenantd exited (${signal || code}) before it was ready:\n${reader.found.lines.join('\n')}`)));
      }),
      new Promise((_, reject) => {
        // A binary that hangs before listening fails the run instead of hanging it.
        timer = setTimeout(() => reject(new Error(
          `tenantd did not print its URL and first admin within ${LISTEN_TIMEOUT_MS} ms:\n` +
          reader.found.lines.join('\n'))), LISTEN_TIMEOUT_MS);
      }),
    ]);
  } catch (e) {
    child.kill('SIGKILL');
    await exited;
    cleanup();
    throw e;
  } finally {
    clearTimeout(timer);
  }

  const { url, admin } = reader.found;
  const port = Number(new URL(url).port);
  let stopping = null;
  return {
    url,
    port,
    data,
    binary,
    admin,
    banner: reader.found.lines.join('\n'),
    child,
    /** The workspace origin of a company on its subdomain: `http://<slug>.localhost:PORT`. */
    host(slug) { return `http://${slug}.localhost:${port}`; },
    /** `tenantd realtime credentials --json` for this data directory. */
    credentials() {
      return JSON.parse(execFileSync(binary, ['realtime', 'credentials', '--json', '--data', data], {
        encoding: 'utf8',
        env,
      }));
    },
    stop() {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const killer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
          await exited;
          clearTimeout(killer);
        }
        cleanup();
      })();
      return stopping;
    },
  };
}

/** Resolves with `predicate()`'s first truthy value, polled every 20 ms; rejects after `ms`. */
export function waitFor(predicate, what, ms = 5000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      const value = predicate();
      if (value) return resolve(value);
      if (Date.now() - started > ms) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}
