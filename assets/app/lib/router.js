// A small History API router: the current path (without the tenant prefix) as state, links that
// navigate without reloading, and pattern matching with named parameters ("/chats/:id").
import { html, useEffect, useState } from '../../vendor/htm-preact.module.js';
import { pageBase as base } from './boot.js';

const subscribers = new Set();

/** The path the app routes on: location.pathname without this tenant's prefix. */
export function currentPath() {
  const p = location.pathname;
  if (base && (p === base || p.startsWith(base + '/'))) return p.slice(base.length) || '/';
  return p || '/';
}

/** The URL of an app path, with the tenant prefix. */
export function href(path) {
  return base + path;
}

export function navigate(path, { replace = false } = {}) {
  const url = href(path);
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  subscribers.forEach((fn) => fn(currentPath()));
  window.scrollTo(0, 0);
}

addEventListener('popstate', () => subscribers.forEach((fn) => fn(currentPath())));

/** The current path; re-renders the caller on navigation. */
export function usePath() {
  const [path, setPath] = useState(currentPath());
  useEffect(() => {
    subscribers.add(setPath);
    return () => subscribers.delete(setPath);
  }, []);
  return path;
}

/** `match('/chats/:id', '/chats/7')` -> {id: '7'}; null when it does not match. */
export function match(pattern, path) {
  const p = pattern.split('/').filter(Boolean);
  const s = path.split('/').filter(Boolean);
  if (p.length !== s.length) return null;
  const params = {};
  for (let i = 0; i < p.length; i++) {
    if (p[i].startsWith(':')) params[p[i].slice(1)] = decodeURIComponent(s[i]);
    else if (p[i] !== s[i]) return null;
  }
  return params;
}

/** The first route of `routes` ([pattern, render(params)]) that matches `path`. */
export function pick(routes, path) {
  for (const [pattern, render] of routes) {
    const params = match(pattern, path);
    if (params) return render(params);
  }
  return null;
}

/** An in-app link: a real <a href> (open in new tab works), navigation without reload. */
export function Link({ to, children, ...rest }) {
  const onClick = (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(to);
  };
  return html`<a href=${href(to)} onClick=${onClick} ...${rest}>${children}</a>`;
}
