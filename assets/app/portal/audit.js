// The admin portal's audit log: every tenant's entries and the admins' own, filtered by tenant,
// action, actor and time, newest first, a page at a time (GET /api/admin/audit).
import { html, useState } from '../../vendor/htm-preact.module.js';
import { api } from '../lib/api.js';
import { Async, Empty, Field, changeText, formatTime, useAsync } from '../lib/ui.js';

const PAGE = 50;

/** The filters in this page's query string (a tenant page links to `/audit?tenant=acme`). */
function filtersFromUrl() {
  const q = new URLSearchParams(location.search);
  return { tenant: q.get('tenant') || '', action: q.get('action') || '', actor: q.get('actor') || '', from: q.get('from') || '' };
}

/** `datetime-local` text (this browser's time zone, as the field shows it) to unix seconds. */
function unixOf(local) {
  const t = Date.parse(local);
  return Number.isNaN(t) ? null : Math.floor(t / 1000);
}

function query(filters, before) {
  const q = new URLSearchParams({ limit: String(PAGE) });
  if (filters.tenant) q.set('tenant', filters.tenant);
  if (filters.action) q.set('action', filters.action.trim());
  if (filters.actor) q.set('actor', filters.actor.trim());
  const since = filters.from && unixOf(filters.from);
  if (since) q.set('since', String(since));
  if (before) q.set('before', String(before));
  return q.toString();
}

export function PortalAuditScreen() {
  const [filters, setFilters] = useState(filtersFromUrl);
  const [draft, setDraft] = useState(filters);
  // The `before` of each page seen so far: the last one is the page shown.
  const [pages, setPages] = useState([null]);
  const before = pages[pages.length - 1];
  const tenants = useAsync((signal) => api('GET', '/api/admin/tenants', undefined, { central: true, signal }), []);
  const state = useAsync((signal) => api('GET', `/api/admin/audit?${query(filters, before)}`, undefined, { central: true, signal }), [filters, before]);
  const slugOf = new Map(((tenants.data && tenants.data.tenants) || []).map((t) => [t.id, t.slug]));
  const apply = (e) => {
    e.preventDefault();
    setFilters({ ...draft });
    setPages([null]);
    const q = new URLSearchParams(Object.entries(draft).filter(([, v]) => v));
    history.replaceState(null, '', `/audit${q.toString() ? '?' + q : ''}`);
  };
  const clear = () => {
    const none = { tenant: '', action: '', actor: '', from: '' };
    setDraft(none);
    setFilters(none);
    setPages([null]);
    history.replaceState(null, '', '/audit');
  };
  const set = (name) => (e) => setDraft({ ...draft, [name]: e.target.value });
  const filtered = Object.values(filters).some(Boolean);
  return html`<section data-screen="portal-audit" class="portal">
    <div class="page-head"><div><h1>Audit log</h1><p class="page-sub">Who did what, in every tenant and in this portal, newest first.</p></div></div>
    <form class="toolbar filters" role="search" aria-label="Filter the audit log" onSubmit=${apply}>
      <${Field} as="select" label="Tenant" value=${draft.tenant} onChange=${set('tenant')}>
        <option value="">All tenants</option>
        ${((tenants.data && tenants.data.tenants) || []).map((t) => html`<option key=${t.id} value=${t.slug}>${t.name} (${t.slug})</option>`)}
        ${draft.tenant && !tenants.data && html`<option value=${draft.tenant}>${draft.tenant}</option>`}
      <//>
      <${Field} label="Action" placeholder="e.g. tenant." value=${draft.action} onInput=${set('action')} autocomplete="off" spellcheck="false" />
      <${Field} label="Actor" placeholder="Email or user:12" value=${draft.actor} onInput=${set('actor')} autocomplete="off" spellcheck="false" />
      <${Field} label="From" type="datetime-local" value=${draft.from} onInput=${set('from')} />
      <div class="filter-buttons">
        <button type="submit">Apply</button>
        <button type="button" class="secondary" onClick=${clear}>Clear</button>
      </div>
    </form>
    <p class="hint filter-hint">An action ending in a dot matches every action it starts: <code>tenant.</code> finds every tenant change. An actor is an email, <code>user:12</code> or <code>admin:1</code>.</p>
    <${Async} state=${state} label="Loading the audit log…">${(data) =>
      data.entries.length === 0
        ? html`<${Empty}>${filtered ? 'No entry matches these filters.' : 'Nothing has been recorded yet.'}<//>`
        : html`<${AuditTable} entries=${data.entries} slugOf=${slugOf} />`}
    <//>
    ${state.data &&
    html`<nav class="pager" aria-label="Audit log pages">
      <button type="button" class="secondary" disabled=${pages.length === 1} onClick=${() => setPages(pages.slice(0, -1))}>← Newer</button>
      <span>Page ${pages.length}</span>
      <button type="button" class="secondary" disabled=${!state.data.next} onClick=${() => setPages([...pages, state.data.next])}>Older →</button>
    </nav>`}
  </section>`;
}

function actorOf(e) {
  if (e.actor_email) return e.actor_email;
  if (e.actor_id !== null && e.actor_id !== undefined) return `${e.actor_type} #${e.actor_id}`;
  return e.actor_type;
}

/** The details object as "key: value" pairs; a change as "from → to", other nested values as compact JSON. */
function detailsOf(details) {
  if (!details || typeof details !== 'object') return [];
  return Object.entries(details).map(([k, v]) => `${k.replace(/_/g, ' ')}: ${changeText(v) ?? (typeof v === 'object' ? JSON.stringify(v) : v)}`);
}

/** What was acted on; nothing when it is the entry's tenant itself (the Tenant column says it). */
function targetOf(e) {
  if (!e.target_type || (e.target_type === 'tenant' && e.target_id === e.tenant_id)) return '';
  const id = e.target_id || '';
  return `${e.target_type} ${id.length > 12 ? id.slice(0, 8) + '…' : id}`;
}

function AuditTable({ entries, slugOf }) {
  return html`<div class="table-wrap">
    <table class="audit">
      <caption class="visually-hidden">Audit log entries, newest first</caption>
      <thead>
        <tr><th scope="col">When</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Tenant</th><th scope="col">Target</th><th scope="col">Details</th></tr>
      </thead>
      <tbody>
        ${entries.map(
          (e) => html`<tr key=${e.id} data-testid="audit-row">
            <td class="nowrap">${formatTime(e.at)}</td>
            <td><span class="actor">${actorOf(e)}</span> <span class=${`badge actor-${e.actor_type}`}>${e.actor_type}</span></td>
            <td class="nowrap"><code>${e.action}</code></td>
            <td class="nowrap">${e.tenant_id ? (slugOf.get(e.tenant_id) || html`<span class="muted" title=${e.tenant_id}>purged ${e.tenant_id.slice(0, 8)}…</span>`) : html`<span class="muted">—</span>`}</td>
            <td>${targetOf(e)}</td>
            <td class="details-cell">
              ${detailsOf(e.details).map((d) => html`<div>${d}</div>`)}
              ${e.ip && html`<div class="muted">from ${e.ip}</div>`}
            </td>
          </tr>`,
        )}
      </tbody>
    </table>
  </div>`;
}
