// The one way the page talks to the API: same-origin fetch with the session cookie, the CSRF
// header on every change, and errors turned into ApiError with words a person understands.
import { base } from './boot.js';
import { socketId } from './realtime.js';

let csrf = null;
const listeners = new Set();

/** Remembers the session's CSRF token (from a login answer or GET /api/me). */
export function setCsrf(token) {
  csrf = token || null;
}

/** Called with every ApiError; the shell uses it to notice an expired session or suspension. */
export function onApiError(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export class ApiError extends Error {
  constructor(status, code, message, fields, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.fields = fields || null;
    /** The answer's whole `error` object: a quota's `limit_name`, `limit` and `usage`. */
    this.details = details || {};
  }
}

/** The headers of a change: the CSRF token, and the socket that is to be left out of its event. */
function changeHeaders(headers) {
  if (csrf) headers['X-CSRF-Token'] = csrf;
  // Our own change is already on screen: the server leaves this socket out of its event.
  const socket = socketId();
  if (socket) headers['X-Socket-ID'] = socket;
  return headers;
}

/** An answer's status and text as api() resolves or rejects it. */
function answer(status, statusText, text) {
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (status < 200 || status > 299) {
    const e = (json && json.error) || {};
    const err = new ApiError(status, e.code || 'http_' + status, e.message || statusText, e.fields, e);
    listeners.forEach((fn) => fn(err));
    throw err;
  }
  return json;
}

function networkError() {
  const err = new ApiError(0, 'network', 'The server cannot be reached. Check your connection and try again.');
  listeners.forEach((fn) => fn(err));
  return err;
}

/**
 * `api('GET', '/api/orders')`: tenant paths get this page's tenant prefix unless `central` is set.
 * Resolves to the parsed JSON answer; rejects with ApiError.
 */
export async function api(method, path, body, { central = false, signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD') changeHeaders(headers);
  let res;
  try {
    res = await fetch((central ? '' : base) + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      signal,
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw networkError();
  }
  return answer(res.status, res.statusText, await res.text());
}

/**
 * `upload('/api/orders/5/files', file, { query: { name: file.name }, onProgress })`: POSTs a
 * File's bytes as the body (no multipart; the API takes the type from Content-Type and the name
 * from the query), with the CSRF header, on this page's tenant. Resolves and rejects as api()
 * does. Through XMLHttpRequest: fetch cannot report how much of a request body has gone, and
 * `onProgress(sent, total)` is how a person sees a large upload move.
 */
export function upload(path, file, { query = {}, onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const q = new URLSearchParams(query).toString();
    xhr.open('POST', base + path + (q ? `?${q}` : ''));
    const headers = changeHeaders({ Accept: 'application/json', 'Content-Type': file.type || 'application/octet-stream' });
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    if (onProgress) xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded, e.total);
    xhr.onload = () => {
      try {
        resolve(answer(xhr.status, xhr.statusText, xhr.responseText));
      } catch (err) {
        reject(err);
      }
    };
    xhr.onerror = () => reject(networkError());
    xhr.onabort = () => reject(new DOMException('The upload was stopped.', 'AbortError'));
    if (signal) {
      if (signal.aborted) return xhr.onabort();
      signal.addEventListener('abort', () => xhr.abort(), { once: true });
    }
    xhr.send(file);
  });
}

const WORDS = {
  network: 'The server cannot be reached. Check your connection and try again.',
  unauthorized: 'Your session has ended. Please sign in again.',
  invalid_credentials: 'That email and password do not match.',
  totp_required: 'Enter the code from your authenticator app.',
  csrf_failed: 'Your session is out of date. Reload the page and try again.',
  not_a_member: 'You are not a member of this company.',
  forbidden: 'You do not have permission to do that.',
  too_many_requests: 'Too many attempts. Wait a moment and try again.',
  not_found: 'That was not found. It may have been deleted.',
  tenant_not_found: 'There is no company at this address.',
  tenant_suspended: 'This company is suspended. Its data is kept, but it cannot be used until an administrator activates it again.',
  tenant_unavailable: 'This company is busy right now. Try again in a moment.',
  subscription_inactive:
    'This company is read-only because its subscription is not active: nothing can be created, changed or deleted until it is. Ask your company\'s administrator.',
  validation_failed: 'Some fields need your attention.',
  payload_too_large: 'That is too large to send.',
  internal_error: 'Something went wrong on the server. Try again; if it keeps happening, tell your administrator.',
  invitation_invalid: 'This invitation link is not valid. Ask for a new one.',
  invitation_expired: 'This invitation has expired. Ask for a new one.',
  invitation_accepted: 'This invitation has already been used. Sign in instead.',
  invitation_revoked: 'This invitation was withdrawn. Ask for a new one.',
};

/** Words for an error, for a person: the API's message when we have nothing better. */
export function describe(err) {
  if (!err) return '';
  if (err instanceof ApiError) {
    if (err.code === 'validation_failed' && err.fields) {
      return Object.entries(err.fields)
        .map(([field, why]) => `${field.replace(/_/g, ' ')}: ${why}`)
        .join('; ');
    }
    if (err.code === 'forbidden' && err.message && err.message.startsWith('this needs')) {
      return `You do not have permission to do that (${err.message.replace('this needs the ', '')}).`;
    }
    return WORDS[err.code] || (err.message ? capitalise(err.message) + '.' : 'Something went wrong.');
  }
  return String(err.message || err);
}

function capitalise(s) {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
