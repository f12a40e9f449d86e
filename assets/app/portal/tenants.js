// The admin portal's tenants: the list (search, status filter, create), and one tenant's page:
// its details and health, the address of its workspace, its domains, impersonation of one of
// its members, and its lifecycle (suspend, activate, delete, restore, purge, rename: name and slug);
// its plan and usage; its backups in backups.js.
import { html, useCallback, useEffect, useState } from '../../vendor/htm-preact.module.js';
import { api, describe } from '../lib/api.js';
import { boot } from '../lib/boot.js';
import { useAdminEvents } from './jobs.js';
import { Backups } from './backups.js';
import { Link, navigate } from '../lib/router.js';
import {
  Async,
  Confirm,
  Dialog,
  Empty,
  ErrorBox,
  Field,
  Submit,
  fieldError,
  formatBytes,
  formatTime,
  toast,
  useAsync,
  useSubmit,
} from '../lib/ui.js';

const STATUS_WORDS = { active: 'Active', suspended: 'Suspended', deleted: 'Deleted', provisioning: 'Provisioning' };
/** Without live updates, how often a list with a tenant still provisioning reads again. */
const PROVISIONING_POLL_MS = 3000;

/** The admin API's path of one tenant (slugs are plain, but never trust a path segment). */
function tenantPath(slug, rest = '') {
  return `/api/admin/tenants/${encodeURIComponent(slug)}${rest}`;
}

function adminApi(method, path, body) {
  return api(method, path, body, { central: true });
}

/**
 * The workspace of `slug` on its own host, `<slug>.<base domain>` with this page's port: its
 * own origin, so a session opened there (an impersonation) never touches the portal's cookie.
 */
export function workspaceUrl(slug, path = '/') {
  const port = location.port ? `:${location.port}` : '';
  return `${location.protocol}//${slug}.${boot.base_domain || 'localhost'}${port}${path}`;
}

export function StatusBadge({ status }) {
  return html`<span class=${`status ${status}`}>${STATUS_WORDS[status] || status}</span>`;
}

/** Splits what a person typed as domains: commas, spaces or new lines between them. */
function parseDomains(text) {
  return text
    .split(/[\s,]+/)
    .map((d) => d.trim().toLowerCase())
    .filter(Boolean);
}

export function TenantsScreen() {
  const state = useAsync((signal) => api('GET', '/api/admin/tenants', undefined, { central: true, signal }), []);
  const [query, setQuery] = useState('');
  const [status, setStatus] = useState('');
  const [creating, setCreating] = useState(false);
  const tenants = (state.data && state.data.tenants) || [];
  const q = query.trim().toLowerCase();
  const shown = tenants.filter(
    (t) =>
      (!status || t.status === status) &&
      (!q || t.slug.includes(q) || t.name.toLowerCase().includes(q) || t.domains.some((d) => d.domain.includes(q))),
  );
  const counts = tenants.reduce((c, t) => ({ ...c, [t.status]: (c[t.status] || 0) + 1 }), {});
  // A tenant made in the background turns active when its job says so on the admin's channel.
  useAdminEvents(useCallback(() => state.reload(), []));
  const provisioning = tenants.some((t) => t.status === 'provisioning');
  useEffect(() => {
    if (!provisioning) return undefined;
    const timer = setInterval(state.reload, PROVISIONING_POLL_MS);
    return () => clearInterval(timer);
  }, [provisioning]);
  return html`<section data-screen="portal-tenants" class="portal">
    <div class="page-head">
      <div>
        <h1>Tenants</h1>
        ${state.data &&
        html`<p class="page-sub">
          ${tenants.length} ${tenants.length === 1 ? 'company' : 'companies'}${tenants.length > 0 &&
          html`: ${counts.active || 0} active, ${counts.suspended || 0} suspended, ${counts.deleted || 0} deleted`}
        </p>`}
      </div>
      <button type="button" onClick=${() => setCreating(true)}><span aria-hidden="true">+</span> New tenant</button>
    </div>
    <${Async} state=${state} label="Loading the tenants…">${() =>
      tenants.length === 0
        ? html`<${FirstTenant} onCreate=${() => setCreating(true)} />`
        : html`
          <form class="toolbar" role="search" onSubmit=${(e) => e.preventDefault()}>
            <${Field} label="Search" type="search" placeholder="Slug, name or domain" value=${query}
              onInput=${(e) => setQuery(e.target.value)} />
            <${Field} as="select" label="Status" value=${status} onChange=${(e) => setStatus(e.target.value)}>
              <option value="">All statuses</option>
              <option value="active">Active</option>
              <option value="suspended">Suspended</option>
              <option value="deleted">Deleted</option>
              <option value="provisioning">Provisioning</option>
            <//>
          </form>
          ${shown.length === 0
            ? html`<${Empty}>No tenant matches these filters.<//>`
            : html`<${TenantTable} tenants=${shown} />`}`}
    <//>
    ${creating && html`<${CreateTenant} onClose=${() => setCreating(false)} onQueued=${state.reload} />`}
  </section>`;
}

/** The first-run state: what a tenant is and how to make one, here or with the CLI. */
function FirstTenant({ onCreate }) {
  return html`<div class="empty first-run">
    <h2>Create your first tenant</h2>
    <p>A tenant is one company: its own database file, its own people and its own workspace, at${' '}
      <code>${workspaceUrl('<slug>')}</code>.</p>
    <p>Choose a short slug (like <code>acme</code>) and a name; add the company's own domains now or later.</p>
    <p><button type="button" onClick=${onCreate}>Create the first tenant</button></p>
    <p class="hint">From a terminal: <code>tenantd tenants create acme --name "Acme"</code></p>
  </div>`;
}

function TenantTable({ tenants }) {
  return html`<div class="table-wrap">
    <table class="tenants">
      <caption class="visually-hidden">Tenants</caption>
      <thead>
        <tr><th scope="col">Tenant</th><th scope="col">Status</th><th scope="col">Domains</th><th scope="col">Created</th><th scope="col"><span class="visually-hidden">Workspace</span></th></tr>
      </thead>
      <tbody>
        ${tenants.map(
          (t) => html`<tr key=${t.id} data-testid="tenant-row">
            <td>
              <${Link} to=${`/tenants/${encodeURIComponent(t.slug)}`} class="tenant-name">${t.name}<//>
              <div class="mono muted">${t.slug}</div>
            </td>
            <td><${StatusBadge} status=${t.status} /></td>
            <td>
              ${t.domains.length === 0
                ? html`<span class="muted">None</span>`
                : html`<ul class="domain-list">${t.domains.map((d) => html`<li key=${d.domain} class="mono">${d.domain}</li>`)}</ul>`}
            </td>
            <td class="nowrap">${formatTime(t.created_at)}</td>
            <td class="nowrap">
              ${t.status === 'active' &&
              html`<a href=${workspaceUrl(t.slug)} target="_blank" rel="noopener" aria-label=${`Open the workspace of ${t.name} (new tab)`}>Open ↗</a>`}
            </td>
          </tr>`,
        )}
      </tbody>
    </table>
  </div>`;
}

function CreateTenant({ onClose, onQueued }) {
  const [slug, setSlug] = useState('');
  const [name, setName] = useState('');
  const [domains, setDomains] = useState('');
  const [background, setBackground] = useState(false);
  const { busy, error, run: submit } = useSubmit(async () => {
    const body = { slug: slug.trim(), name: name.trim(), domains: parseDomains(domains) };
    if (background) {
      const answer = await adminApi('POST', '/api/admin/tenants', { ...body, async: true });
      toast(`${answer.tenant.name} is being created in the background.`);
      onClose();
      onQueued();
      return;
    }
    const record = await adminApi('POST', '/api/admin/tenants', body);
    toast(`${record.name} is ready.`);
    onClose();
    navigate(`/tenants/${encodeURIComponent(record.slug)}`);
  });
  const known = ['slug', 'name', 'domains'].some((f) => fieldError(error, f));
  return html`<${Dialog} title="New tenant" onClose=${onClose}>
    <form onSubmit=${submit} novalidate>
      <${Field} label="Slug" required autocomplete="off" spellcheck="false" value=${slug} error=${fieldError(error, 'slug')}
        hint=${`Lower-case letters, digits and hyphens. The workspace will be at ${workspaceUrl(slug.trim() || '<slug>')}`}
        onInput=${(e) => setSlug(e.target.value)} />
      <${Field} label="Name" required autocomplete="off" value=${name} error=${fieldError(error, 'name')}
        onInput=${(e) => setName(e.target.value)} />
      <${Field} label="Domains (optional)" autocomplete="off" spellcheck="false" value=${domains} error=${fieldError(error, 'domains')}
        hint="The company's own host names, separated by commas; the first is the primary one." onInput=${(e) => setDomains(e.target.value)} />
      <label class="check"><input type="checkbox" checked=${background} onChange=${(e) => setBackground(e.target.checked)} /> Create in the background</label>
      <${ErrorBox} error=${error && !known ? error : null} />
      <div class="actions">
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
        <${Submit} busy=${busy}>Create tenant<//>
      </div>
    </form>
  <//>`;
}

export function TenantScreen({ slug }) {
  const state = useAsync((signal) => api('GET', tenantPath(slug), undefined, { central: true, signal }), [slug]);
  return html`<section data-screen="portal-tenant" class="portal">
    <p class="crumbs"><${Link} to="/tenants">← All tenants<//></p>
    <${Async} state=${state} label="Loading the tenant…">${(tenant) =>
      html`<${Tenant} key=${tenant.id} tenant=${tenant} onChange=${(t) => state.setData(t)} />`}
    <//>
  </section>`;
}

function Tenant({ tenant, onChange }) {
  const health = useAsync((signal) => api('GET', tenantPath(tenant.slug, '/health'), undefined, { central: true, signal }), [tenant.slug, tenant.status]);
  return html`
    <div class="page-head">
      <div>
        <h1>${tenant.name} <${StatusBadge} status=${tenant.status} /></h1>
        <p class="page-sub mono">${tenant.slug}</p>
      </div>
      <div class="head-actions">
        ${tenant.status === 'active' &&
        html`<a class="button" href=${workspaceUrl(tenant.slug)} target="_blank" rel="noopener">Open workspace <span aria-hidden="true">↗</span><span class="visually-hidden">(new tab)</span></a>`}
        <${Link} class="button secondary" to=${`/audit?tenant=${encodeURIComponent(tenant.slug)}`}>Audit log<//>
      </div>
    </div>
    ${tenant.status === 'suspended' &&
    html`<p class="notice warning">Suspended: its people see a "suspended" screen and its API refuses every request. Its data is kept.</p>`}
    ${tenant.status === 'deleted' &&
    html`<p class="notice error">Deleted ${formatTime(tenant.deleted_at)}: nothing answers for it, but its file is kept until it is purged. Restore brings it back.</p>`}
    <div class="panels">
      <section class="panel" aria-labelledby="details-h">
        <h2 id="details-h">Details</h2>
        <dl class="details">
          <dt>Workspace</dt><dd class="mono">${tenant.status === 'active' ? html`<a href=${workspaceUrl(tenant.slug)} target="_blank" rel="noopener">${workspaceUrl(tenant.slug)}</a>` : workspaceUrl(tenant.slug)}</dd>
          <dt>Id</dt><dd class="mono">${tenant.id}</dd>
          <dt>Created</dt><dd>${formatTime(tenant.created_at)}</dd>
          <dt>Updated</dt><dd>${formatTime(tenant.updated_at)}</dd>
          ${tenant.deleted_at && html`<dt>Deleted</dt><dd>${formatTime(tenant.deleted_at)}</dd>`}
        </dl>
      </section>
      <section class="panel" aria-labelledby="health-h">
        <div class="panel-head">
          <h2 id="health-h">Health</h2>
          <button type="button" class="secondary small" onClick=${health.reload} disabled=${health.loading}>Refresh</button>
        </div>
        <${Async} state=${health} label="Reading its health…">${(h) => html`<${Health} health=${h} />`}<//>
      </section>
      <${Plan} tenant=${tenant} />
      <${Backups} tenant=${tenant} onRestored=${health.reload} />
      <${Domains} tenant=${tenant} onChange=${onChange} />
      <${Impersonate} tenant=${tenant} />
      <${Lifecycle} tenant=${tenant} onChange=${onChange} />
    </div>`;
}

const SUBSCRIPTION_WORDS = { trialing: 'Trial', active: 'Active', past_due: 'Past due', canceled: 'Canceled' };

/** The tenant's plan, its subscription's status, and its usage against each limit. */
function Plan({ tenant }) {
  const state = useAsync(
    (signal) => api('GET', tenantPath(tenant.slug, '/subscription'), undefined, { central: true, signal }),
    [tenant.slug],
  );
  return html`<section class="panel" aria-labelledby="plan-h">
    <h2 id="plan-h">Plan</h2>
    <${Async} state=${state} label="Reading its plan…">${(s) => {
      const limits = s.plan.limits || {};
      const usage = s.usage || {};
      const names = [...new Set([...Object.keys(usage), ...Object.keys(limits)])].sort();
      return html`
        ${!s.writable && html`<p class="notice warning" role="status">Read-only: the subscription is not active. Nothing is deleted.</p>`}
        <dl class="details" data-testid="plan">
          <dt>Plan</dt><dd>${s.plan.name} <span class="muted mono">${s.plan.slug}</span></dd>
          <dt>Status</dt><dd>${SUBSCRIPTION_WORDS[s.subscription.status] || s.subscription.status}</dd>
          ${names.map(
            (n) => html`<dt key=${`${n}-t`}>${n.replace(/_/g, ' ')}</dt><dd key=${`${n}-d`}>${usage[n] ?? '–'} of ${limits[n] ?? 'unlimited'}</dd>`,
          )}
        </dl>`;
    }}<//>
  </section>`;
}

function Health({ health }) {
  const schema =
    health.schema_version === null || health.schema_version === undefined
      ? 'Unknown'
      : health.schema_version === health.latest_schema_version
        ? `${health.schema_version} (latest)`
        : `${health.schema_version}, migrates to ${health.latest_schema_version} when next opened`;
  return html`
    ${health.error && html`<p class="notice error" role="alert">${health.error}</p>`}
    <dl class="details" data-testid="health">
      <dt>Database file</dt><dd>${health.file_exists ? formatBytes(health.file_bytes) : 'Missing'}</dd>
      <dt>Write-ahead log</dt><dd>${formatBytes(health.wal_bytes)}</dd>
      <dt>Schema version</dt><dd>${schema}</dd>
      <dt>Last backup</dt><dd>${health.last_backup ? `${formatTime(health.last_backup.created_at)} (${formatBytes(health.last_backup.bytes)})` : 'None'}</dd>
      <dt>Last access</dt><dd>${health.last_access ? formatTime(health.last_access) : 'Not since the server started'}</dd>
      <dt>Connection pool</dt><dd><span class=${`dot ${health.pool_open ? 'on' : 'off'}`} aria-hidden="true"></span>${health.pool_open ? 'Open' : 'Closed (opens on the next request)'}</dd>
      <dt>Recent errors</dt><dd>${(health.recent_errors || []).length === 0 ? 'None since the server started' : `${health.recent_errors.length}, newest first below`}</dd>
    </dl>
    ${(health.recent_errors || []).length > 0 &&
    html`<ul class="recent-errors" data-testid="recent-errors">
      ${health.recent_errors.map(
        (e, i) => html`<li key=${i}><span class="muted">${formatTime(e.at)} · ${e.source === 'job' ? 'job' : 'request'}</span> <span class="mono">${e.message}</span></li>`,
      )}
    </ul>`}`;
}

function Domains({ tenant, onChange }) {
  const [domain, setDomain] = useState('');
  const [removing, setRemoving] = useState(null);
  const { busy, error, run: add } = useSubmit(async () => {
    const record = await adminApi('POST', tenantPath(tenant.slug, '/domains'), { domain: domain.trim().toLowerCase() });
    setDomain('');
    onChange(record);
    toast(`${domain.trim()} now leads to ${tenant.name}.`);
  });
  return html`<section class="panel" aria-labelledby="domains-h">
    <h2 id="domains-h">Domains</h2>
    ${tenant.domains.length === 0
      ? html`<p class="muted">No custom domain: the workspace is at its subdomain and at <code>/t/${tenant.slug}/</code>.</p>`
      : html`<ul class="domains">
          ${tenant.domains.map(
            (d) => html`<li key=${d.domain}>
              <span class="mono">${d.domain}</span>
              ${d.is_primary && html`<span class="badge">primary</span>`}
              <button type="button" class="secondary small" aria-label=${`Remove ${d.domain}`} onClick=${() => setRemoving(d.domain)}>Remove</button>
            </li>`,
          )}
        </ul>`}
    <form class="inline-form" onSubmit=${add} novalidate>
      <${Field} label="Add a domain" placeholder="shop.example.com" autocomplete="off" spellcheck="false" value=${domain}
        error=${error ? describe(error) : undefined} onInput=${(e) => setDomain(e.target.value)} />
      <${Submit} busy=${busy} class="secondary" disabled=${busy || !domain.trim()}>Add<//>
    </form>
    ${removing &&
    html`<${Confirm} title="Remove the domain?" action="Remove" danger onClose=${() => setRemoving(null)}
      onConfirm=${async () => {
        onChange(await adminApi('DELETE', tenantPath(tenant.slug, `/domains/${encodeURIComponent(removing)}`)));
        toast(`${removing} removed.`);
      }}>
      <p><code>${removing}</code> will no longer lead to ${tenant.name}.</p>
    <//>`}
  </section>`;
}

/**
 * Asks for a ticket to act as one member and opens the tenant's workspace with it in a new
 * tab. The tab is opened at the click (so no popup blocker stops it) and sent on once the
 * ticket is there; the ticket rides in the fragment, which never reaches a server log.
 */
function Impersonate({ tenant }) {
  const members = useAsync((signal) => api('GET', tenantPath(tenant.slug, '/members'), undefined, { central: true, signal }), [tenant.slug]);
  const [userId, setUserId] = useState('');
  const [fallback, setFallback] = useState(null);
  const active = tenant.status === 'active';
  const { busy, error, run: start } = useSubmit(async () => {
    const list = (members.data && members.data.members) || [];
    const chosen = list.find((m) => String(m.user.id) === (userId || String(list[0] && list[0].user.id)));
    if (!chosen) return;
    setFallback(null);
    const tab = window.open('', '_blank');
    let answer;
    try {
      answer = await adminApi('POST', tenantPath(tenant.slug, '/impersonate'), { user_id: chosen.user.id });
    } catch (err) {
      if (tab) tab.close();
      throw err;
    }
    const url = workspaceUrl(tenant.slug, `/impersonate#ticket=${encodeURIComponent(answer.ticket)}`);
    if (tab) {
      tab.opener = null;
      tab.location.href = url;
      toast(`Opened ${tenant.name} as ${chosen.user.email} in a new tab.`);
    } else {
      setFallback({ url, email: chosen.user.email });
    }
  });
  return html`<section class="panel" aria-labelledby="impersonate-h">
    <h2 id="impersonate-h">Impersonate</h2>
    <p class="muted">Open the workspace as one of its members, in a new tab with a banner saying so. Your
      session here is not affected; the audit log records it.</p>
    <${Async} state=${members} label="Loading the members…">${(data) =>
      data.members.length === 0
        ? html`<p class="muted">${tenant.name} has no members yet.</p>`
        : html`<form class="inline-form" onSubmit=${start}>
            <${Field} as="select" label="Member" value=${userId || String(data.members[0].user.id)} onChange=${(e) => setUserId(e.target.value)}>
              ${data.members.map(
                (m) => html`<option key=${m.user.id} value=${String(m.user.id)}>
                  ${[m.user.name, m.user.surname].filter(Boolean).join(' ') || m.user.email} · ${m.user.email} · ${m.role}${m.user.disabled ? ' (disabled)' : ''}
                </option>`,
              )}
            <//>
            <${Submit} busy=${busy} disabled=${busy || !active}>Open as this member<//>
          </form>
          ${!active && html`<p class="hint">Only an active tenant can be opened.</p>`}`}
    <//>
    <${ErrorBox} error=${error} />
    ${fallback &&
    html`<p class="notice info">Your browser blocked the new tab. <a href=${fallback.url} target="_blank" rel="noopener">Open the workspace as ${fallback.email}</a> (within a minute).</p>`}
  </section>`;
}

/** What each lifecycle action asks before it runs, and what it calls. */
function lifecycleActions(tenant) {
  const s = tenant.status;
  const name = tenant.name;
  return [
    s === 'active' && {
      id: 'suspend', label: 'Suspend', kind: 'secondary', path: '/suspend',
      title: `Suspend ${name}?`, text: 'Its people see a "suspended" screen and every request is refused until you activate it. Nothing is deleted.',
      done: `${name} is suspended.`,
    },
    s === 'suspended' && {
      id: 'activate', label: 'Activate', kind: '', path: '/activate',
      title: `Activate ${name}?`, text: 'Its people can use the workspace again.', done: `${name} is active again.`,
    },
    s !== 'deleted' && {
      id: 'delete', label: 'Delete', kind: 'danger', method: 'DELETE', path: '',
      title: `Delete ${name}?`, text: 'The tenant stops answering at once. Its file, slug and domains are kept, so you can restore it until you purge it.',
      done: `${name} is deleted. You can still restore it.`,
    },
    s === 'deleted' && {
      id: 'restore', label: 'Restore', kind: '', path: '/restore',
      title: `Restore ${name}?`, text: 'It becomes active again with all its data.', done: `${name} is restored.`,
    },
    s === 'deleted' && {
      id: 'purge', label: 'Purge permanently', kind: 'danger', path: '/purge', typed: tenant.slug,
      title: `Purge ${name} for good?`, text: 'Its database file and its catalog entry are removed. This cannot be undone; only the audit log keeps its history.',
      done: `${name} is purged.`,
    },
  ].filter(Boolean);
}

function Lifecycle({ tenant, onChange }) {
  const [asking, setAsking] = useState(null);
  const [renaming, setRenaming] = useState(false);
  const actions = lifecycleActions(tenant);
  const run = async (a) => {
    const answer = await adminApi(a.method || 'POST', tenantPath(tenant.slug, a.path));
    toast(a.done);
    if (a.id === 'purge') navigate('/tenants');
    else onChange(answer);
  };
  return html`<section class="panel lifecycle" aria-labelledby="lifecycle-h">
    <h2 id="lifecycle-h">Lifecycle</h2>
    <div class="lifecycle-row">
      <p>Status: <${StatusBadge} status=${tenant.status} /></p>
      <div class="actions">
        ${actions.map((a) => html`<button key=${a.id} type="button" class=${a.kind} onClick=${() => setAsking(a)}>${a.label}</button>`)}
      </div>
    </div>
    ${tenant.status !== 'deleted' &&
    html`<div class="lifecycle-row">
      <p><span>Name <strong>${tenant.name}</strong>, slug <code>${tenant.slug}</code> (the workspace's address).</span></p>
      <div class="actions"><button type="button" class="secondary" onClick=${() => setRenaming(true)}>Rename</button></div>
    </div>`}
    ${asking &&
    html`<${Confirm} title=${asking.title} action=${asking.label} danger=${asking.kind === 'danger'} typed=${asking.typed}
      onClose=${() => setAsking(null)} onConfirm=${() => run(asking)}>
      <p>${asking.text}</p>
    <//>`}
    ${renaming && html`<${Rename} tenant=${tenant} onChange=${onChange} onClose=${() => setRenaming(false)} />`}
  </section>`;
}

/** The name and the slug, prefilled; only what changed is sent. */
function Rename({ tenant, onChange, onClose }) {
  const [name, setName] = useState(tenant.name);
  const [slug, setSlug] = useState(tenant.slug);
  const change = {};
  if (name.trim() !== tenant.name) change.name = name.trim();
  if (slug.trim() !== tenant.slug) change.slug = slug.trim();
  const { busy, error, run: submit } = useSubmit(async () => {
    const record = await adminApi('PATCH', tenantPath(tenant.slug), change);
    onClose();
    if (record.slug !== tenant.slug) {
      toast(`${record.name} is now at ${workspaceUrl(record.slug)}`);
      navigate(`/tenants/${encodeURIComponent(record.slug)}`, { replace: true });
    } else {
      toast(`${tenant.name} is now called ${record.name}.`);
      onChange(record);
    }
  });
  const known = ['name', 'slug'].some((f) => fieldError(error, f));
  return html`<${Dialog} title=${`Rename ${tenant.name}`} onClose=${onClose}>
    <form onSubmit=${submit} novalidate>
      <${Field} label="Name" required autocomplete="off" value=${name} error=${fieldError(error, 'name')}
        hint="What its people see at the top of the workspace." onInput=${(e) => setName(e.target.value)} />
      <${Field} label="Slug" required autocomplete="off" spellcheck="false" value=${slug} error=${fieldError(error, 'slug')}
        hint=${`The workspace will be at ${workspaceUrl(slug.trim() || '<slug>')}`} onInput=${(e) => setSlug(e.target.value)} />
      ${change.slug !== undefined &&
      html`<p class="notice warning">The workspace moves to the new address at once; links and bookmarks to the old one stop
        working. Its custom domains are not affected.</p>`}
      <${ErrorBox} error=${error && !known ? error : null} />
      <div class="actions">
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
        <${Submit} busy=${busy} disabled=${busy || Object.keys(change).length === 0 || !name.trim() || !slug.trim()}>Save<//>
      </div>
    </form>
  <//>`;
}
