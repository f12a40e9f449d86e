// The page's one real-time connection: laravel-echo over pusher-js (their browser builds, as our
// users run them), authorised by the session cookie and the CSRF header through
// <base>/broadcasting/auth, and its connection state for the "reconnecting" banner.
import { useCallback, useEffect, useState } from '../../vendor/htm-preact.module.js';
import { base, boot } from './boot.js';

let echo = null;
let state = 'initialized';
const stateSubscribers = new Set();

/**
 * The Echo instance for the signed-in person, made on first use with their CSRF token. The
 * portal passes its own `authEndpoint` (a system admin's channels are authorised elsewhere).
 */
export function getEcho(csrf, { authEndpoint = base + '/broadcasting/auth' } = {}) {
  if (echo) return echo;
  const EchoClass = window.Echo && (window.Echo.default || window.Echo);
  if (!EchoClass || !window.Pusher || !boot.realtime || !boot.realtime.key) return null;
  const secure = location.protocol === 'https:';
  const port = Number(location.port) || (secure ? 443 : 80);
  echo = new EchoClass({
    broadcaster: 'pusher',
    Pusher: window.Pusher,
    key: boot.realtime.key,
    cluster: 'mt1',
    wsHost: location.hostname,
    wsPort: port,
    wssPort: port,
    forceTLS: secure,
    enabledTransports: secure ? ['wss'] : ['ws'],
    disableStats: true,
    authEndpoint,
    auth: { headers: { 'X-CSRF-Token': csrf || '', Accept: 'application/json' } },
  });
  const connection = echo.connector.pusher.connection;
  setState(connection.state);
  connection.bind('state_change', ({ current }) => setState(current));
  return echo;
}

const reconnectSubscribers = new Set();
let wasConnected = false;
let lost = false;

function setState(s) {
  if (s === 'connected') {
    // Events published while the socket was away are not replayed: screens read again.
    if (wasConnected && lost) reconnectSubscribers.forEach((fn) => fn());
    wasConnected = true;
    lost = false;
  } else if (wasConnected) {
    lost = true;
  }
  state = s;
  stateSubscribers.forEach((fn) => fn(s));
}

/** Whether live updates were flowing and are not now (the "reconnecting" banner). */
export function useConnectionLost() {
  useConnectionState();
  return lost;
}

/** Calls `fn` each time the connection comes back after it was lost (to read again what was missed). */
export function useReconnect(fn) {
  useEffect(() => {
    reconnectSubscribers.add(fn);
    return () => reconnectSubscribers.delete(fn);
  }, [fn]);
}

/** Ends the connection (sign out, session ended). */
export function closeEcho() {
  if (echo) {
    echo.disconnect();
    echo = null;
  }
  setState('disconnected');
}

/** The socket id, for the `X-Socket-ID` header that keeps our own changes from echoing back. */
export function socketId() {
  return echo ? echo.socketId() : undefined;
}

/**
 * pusher-js's connection state: "connecting", "connected", "unavailable" (retrying),
 * "failed", "disconnected".
 */
export function useConnectionState() {
  const [s, set] = useState(state);
  useEffect(() => {
    stateSubscribers.add(set);
    set(state);
    return () => stateSubscribers.delete(set);
  }, []);
  return s;
}

/** A number that goes up each time the connection comes back: a dependency that reloads a screen. */
export function useReconnectCount() {
  const [count, setCount] = useState(0);
  useReconnect(useCallback(() => setCount((n) => n + 1), []));
  return count;
}
