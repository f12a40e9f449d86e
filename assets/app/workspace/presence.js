// Who of the company is online: one presence channel per company
// (`presence-company.<tenant id>.presence`, see src/api/broadcasting.rs), joined once however many
// components ask for it, and shown in the top bar as a few initials with the names for screen
// readers. Chats (chats.js) reads the same list to name people its member may not list otherwise.
import { html, useEffect, useState } from '../../vendor/htm-preact.module.js';

/** How many avatars the top bar shows before "+N". */
const SHOWN = 5;

// One entry per channel name: the Echo channel, who is here, the components listening, and how
// many hold it (the channel is left when the last one lets go).
const joined = new Map();

function acquire(echo, name) {
  let entry = joined.get(name);
  if (!entry) {
    entry = { users: [], listeners: new Set(), holders: 0 };
    const set = (users) => {
      entry.users = users;
      entry.listeners.forEach((fn) => fn(users));
    };
    entry.channel = echo
      .join(name)
      .here((users) => set(dedupe(users)))
      .joining((user) => set(dedupe([...entry.users, user])))
      .leaving((user) => set(entry.users.filter((u) => u.id !== user.id)));
    joined.set(name, entry);
  }
  entry.holders += 1;
  return entry;
}

function release(echo, name) {
  const entry = joined.get(name);
  if (!entry) return;
  entry.holders -= 1;
  if (entry.holders <= 0) {
    joined.delete(name);
    echo.leaveChannel('presence-' + name);
  }
}

/** A person online in two tabs is one person. */
function dedupe(users) {
  const seen = new Map();
  for (const u of users) if (u && !seen.has(u.id)) seen.set(u.id, u);
  return [...seen.values()];
}

/** The people online in this company now: `[{id, name, surname, email, photo}]`, by name. */
export function usePresence(ctx) {
  const name = `${ctx.channel}.presence`;
  const [users, setUsers] = useState(() => (joined.get(name) ? joined.get(name).users : []));
  useEffect(() => {
    const echo = ctx.echo;
    if (!echo) return undefined;
    const entry = acquire(echo, name);
    entry.listeners.add(setUsers);
    setUsers(entry.users);
    return () => {
      entry.listeners.delete(setUsers);
      release(echo, name);
    };
  }, [ctx.echo, name]);
  return [...users].sort((a, b) => fullName(a).localeCompare(fullName(b)));
}

/** "Ada Agent", or the email when a person has no name. */
export function fullName(user) {
  if (!user) return '';
  const name = [user.name, user.surname].filter(Boolean).join(' ');
  return name || user.email || `Member ${user.id}`;
}

/** Up to two letters for an avatar. */
export function initials(user) {
  const parts = [user && user.name, user && user.surname].filter(Boolean);
  const letters = parts.length ? parts.map((p) => p[0]) : [((user && user.email) || '?')[0]];
  return letters.join('').slice(0, 2).toUpperCase();
}

// A few calm colours with white text at 4.5:1 or more; a person keeps theirs.
const HUES = 6;

/** The avatar colour class of a person (by id, so it is the same everywhere). */
export function avatarClass(user) {
  const id = Number(user && user.id) || 0;
  return `avatar hue-${Math.abs(id) % HUES}`;
}

export function Avatar({ user, small }) {
  return html`<span class=${avatarClass(user) + (small ? ' small' : '')} aria-hidden="true">${initials(user)}</span>`;
}

export function Presence({ ctx }) {
  const users = usePresence(ctx);
  if (!ctx.echo) return null;
  const shown = users.slice(0, SHOWN);
  const more = users.length - shown.length;
  return html`<div class="presence" data-testid="presence">
    <span class="presence-count"><span class="presence-dot" aria-hidden="true"></span>${users.length} online</span>
    ${users.length > 0 &&
    html`<ul aria-label="Online now">
      ${shown.map(
        (u) => html`<li key=${u.id} title=${fullName(u)}>
          <${Avatar} user=${u} /><span class="visually-hidden">${fullName(u)}${u.id === ctx.me.user.id ? ' (you)' : ''}</span>
        </li>`,
      )}
      ${more > 0 && html`<li class="presence-more" title=${users.slice(SHOWN).map(fullName).join(', ')}>+${more}<span class="visually-hidden"> more</span></li>`}
    </ul>`}
  </div>`;
}
