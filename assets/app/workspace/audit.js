// The company's audit log (GET /api/audit, audit_view): newest first, filtered by action (one,
// or a group by its prefix), by who did it (their email) and from a day on, a page at a time
// with the API's keyset cursor.
import { html, useState } from '../../vendor/htm-preact.module.js';
import { api } from '../lib/api.js';
import { Async, Empty, Field, changeText, formatTime, useAsync } from '../lib/ui.js';
import { NoAccess, inListOrder, permissionLabel } from './people.js';

const PAGE_SIZE = 25;

/** What an action means, for a person; a trailing `.` is a group the API matches by prefix. */
const ACTIONS = [
  ['invitation.', 'Invitations (all)'],
  ['invitation.created', 'Invited someone'],
  ['invitation.accepted', 'Accepted an invitation'],
  ['invitation.revoked', 'Withdrew an invitation'],
  ['member.', 'Members (all)'],
  ['member.role_changed', "Changed a member's role"],
  ['member.removed', 'Removed a member'],
  ['role.', 'Roles (all)'],
  ['role.created', 'Created a role'],
  ['role.updated', 'Changed a role'],
  ['role.deleted', 'Deleted a role'],
  ['auth.', 'Sign-ins (all)'],
  ['auth.login', 'Signed in'],
  ['auth.login_failed', 'Failed to sign in'],
  ['auth.logout', 'Signed out'],
  ['auth.password_changed', 'Changed their password'],
  ['token.', 'API tokens (all)'],
  ['token.created', 'Created an API token'],
  ['token.revoked', 'Revoked an API token'],
  ['impersonation.', 'Impersonation (all)'],
  ['impersonation.started', 'An administrator started impersonating'],
  ['impersonation.exchanged', 'An administrator opened the company as a member'],
  ['tenant.', 'The company (all)'],
  ['tenant.created', 'Created the company'],
  ['tenant.renamed', 'Renamed the company'],
  ['tenant.suspended', 'Suspended the company'],
  ['tenant.activated', 'Activated the company'],
  ['tenant.domain_added', 'Added a domain'],
  ['tenant.domain_removed', 'Removed a domain'],
];

function actionWords(action) {
  const found = ACTIONS.find(([a]) => a === action);
  if (found) return found[1];
  const words = action.replace(/[._]/g, ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** Unix seconds of the start of a yyyy-mm-dd day, in this browser's time zone. */
function dayStart(value) {
  if (!value) return undefined;
  const [y, m, d] = value.split('-').map(Number);
  const t = new Date(y, m - 1, d).getTime();
  return isNaN(t) ? undefined : Math.floor(t / 1000);
}

function query(filters, before) {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (filters.action) q.set('action', filters.action);
  if (filters.actor.trim()) q.set('actor', filters.actor.trim());
  const since = dayStart(filters.since);
  if (since !== undefined) q.set('since', String(since));
  if (before) q.set('before', String(before));
  return q.toString();
}

const NO_FILTERS = Object.freeze({ action: '', actor: '', since: '' });

export function AuditScreen({ ctx }) {
  if (!ctx.can('audit_view')) return html`<${NoAccess} screen="audit" title="Audit log" needs="the permission to read the audit log" />`;
  return html`<${Audit} ctx=${ctx} />`;
}

function Audit({ ctx }) {
  const [draft, setDraft] = useState(NO_FILTERS);
  const [filters, setFilters] = useState(NO_FILTERS);
  // The cursors of the pages before this one: Newer pops, Older pushes.
  const [cursors, setCursors] = useState([]);
  const before = cursors.length ? cursors[cursors.length - 1] : null;
  const state = useAsync((signal) => api('GET', `/api/audit?${query(filters, before)}`, undefined, { signal }), [filters, before]);
  // Names for the user ids the log holds as targets, when this member may see the members.
  const people = useAsync(
    (signal) => (ctx.can('members_view') ? api('GET', '/api/members', undefined, { signal }).then((a) => a.members) : Promise.resolve([])),
    [],
  );
  const apply = (e) => {
    e.preventDefault();
    setFilters({ ...draft });
    setCursors([]);
  };
  const clear = () => {
    setDraft(NO_FILTERS);
    setFilters(NO_FILTERS);
    setCursors([]);
  };
  const set = (k) => (e) => setDraft((d) => ({ ...d, [k]: e.target.value }));
  const filtered = filters.action || filters.actor.trim() || filters.since;
  const userName = (id) => {
    const m = (people.data || []).find((p) => String(p.user.id) === String(id));
    return m ? m.user.email : `user #${id}`;
  };
  return html`<section data-screen="audit" class="audit">
    <h1>Audit log</h1>
    <p class="hint">What people and administrators did in this company, newest first.</p>
    <form class="toolbar audit-filters" onSubmit=${apply} aria-label="Filter the audit log">
      <${Field} as="select" label="Action" value=${draft.action} onChange=${set('action')}>
        <option value="">All actions</option>
        ${ACTIONS.map(([a, words]) => html`<option key=${a} value=${a}>${a.endsWith('.') ? words : `\u2003${words}`}</option>`)}
      <//>
      <${Field} label="Who (email)" type="email" value=${draft.actor} placeholder="someone@example.com" onInput=${set('actor')} />
      <${Field} label="From date" type="date" value=${draft.since} onInput=${set('since')} />
      <div class="toolbar-buttons">
        <button type="submit">Filter</button>
        ${filtered && html`<button type="button" class="secondary" onClick=${clear}>Clear filters</button>`}
      </div>
    </form>
    <${Async} state=${state} label="Loading the audit log…">${(data) => html`
      ${data.entries.length === 0
        ? html`<${Empty}>${filtered ? 'No entries match these filters.' : 'Nothing has been recorded yet.'}<//>`
        : html`<div class="table-wrap">
            <table class="audit-table">
              <caption class="visually-hidden">Audit entries${cursors.length ? `, page ${cursors.length + 1}` : ''}</caption>
              <thead><tr><th scope="col">Time</th><th scope="col">Who</th><th scope="col">What</th><th scope="col">Target</th><th scope="col">Details</th></tr></thead>
              <tbody>
                ${data.entries.map((e) => html`<tr key=${e.id} data-testid="audit-row" data-action=${e.action}>
                  <td data-label="Time" class="nowrap"><time datetime=${new Date(e.at * 1000).toISOString()}>${formatTime(e.at)}</time></td>
                  <td data-label="Who">${who(e)}</td>
                  <td data-label="What"><span class="audit-what">${actionWords(e.action)}</span> <code class="audit-action">${e.action}</code></td>
                  <td data-label="Target">${target(e, userName)}</td>
                  <td data-label="Details">${details(e)}</td>
                </tr>`)}
              </tbody>
            </table>
          </div>`}
      <nav class="pager" aria-label="Audit log pages">
        <button type="button" class="secondary" disabled=${cursors.length === 0} onClick=${() => setCursors((c) => c.slice(0, -1))}>← Newer</button>
        <span class="hint">Page ${cursors.length + 1}</span>
        <button type="button" class="secondary" disabled=${!data.next} onClick=${() => setCursors((c) => [...c, data.next])}>Older →</button>
      </nav>`}<//>
  </section>`;
}

function who(e) {
  if (e.actor_type === 'admin') return html`<span>${e.actor_email || `admin #${e.actor_id}`}</span> <span class="badge">system admin</span>`;
  if (e.actor_type === 'system') return html`<span class="badge">tenantd</span>`;
  if (e.actor_type === 'anonymous') return html`<span>${e.actor_email || 'someone signed out'}</span>`;
  return e.actor_email || (e.actor_id ? `user #${e.actor_id}` : '—');
}

function target(e, userName) {
  const d = e.details || {};
  switch (e.target_type) {
    case 'user':
      return userName(e.target_id);
    case 'role':
      return d.name ? html`role <strong>${d.name}</strong>` : `role #${e.target_id}`;
    case 'invitation':
      return d.email ? html`invitation for <strong>${d.email}</strong>` : `invitation #${e.target_id}`;
    case null:
    case undefined:
      return '—';
    default:
      return `${e.target_type.replace(/_/g, ' ')}${e.target_id ? ` #${e.target_id}` : ''}`;
  }
}

/** The details as "key: value" lines; the ones the Target column already says are left out. */
function details(e) {
  const d = e.details && typeof e.details === 'object' ? { ...e.details } : {};
  if (e.target_type === 'role') delete d.name;
  if (e.target_type === 'invitation') delete d.email;
  if (d.replaced === 0) delete d.replaced;
  const lines = Object.entries(d).map(([k, v]) => {
    let text;
    if (k === 'permissions' && Array.isArray(v)) text = v.length ? inListOrder(v).map(permissionLabel).join('; ') : 'none';
    else if (k === 'replaced') text = v ? `replaced ${v} earlier invitation${v === 1 ? '' : 's'}` : 'no';
    else if (v !== null && typeof v === 'object') text = changeText(v) ?? JSON.stringify(v);
    else text = String(v);
    return html`<li key=${k}><span class="detail-key">${k.replace(/_/g, ' ')}:</span> ${text}</li>`;
  });
  const where = e.ip ? html`<li class="hint">from ${e.ip}</li>` : null;
  if (!lines.length && !where) return '—';
  return html`<ul class="audit-details">${lines}${where}</ul>`;
}
