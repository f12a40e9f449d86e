// The admin portal's background work: the jobs of every tenant (filters, paging, one job's
// payload and error, retry and discard), the schedules (list, add, remove), and the admin's own
// real-time channel `private-admin.<id>`, where provisioning in the background says it is done.
import { html, useEffect, useState } from '../../vendor/htm-preact.module.js';
import { api } from '../lib/api.js';
import { getEcho } from '../lib/realtime.js';
import { Link } from '../lib/router.js';
import { Async, Confirm, Empty, ErrorBox, Field, Submit, fieldError, toast, useAsync, useSubmit } from '../lib/ui.js';
import { JobTable, jobTime } from '../workspace/webhooks.js';

const STATUSES = ['pending', 'running', 'done', 'failed', 'discarded'];

function adminApi(method, path, body, options = {}) {
  return api(method, path, body, { central: true, ...options });
}

const adminSubscribers = new Set();

/** Calls `fn(event, data)` for each event on the admin's channel while the caller is mounted. */
export function useAdminEvents(fn) {
  useEffect(() => {
    adminSubscribers.add(fn);
    return () => adminSubscribers.delete(fn);
  }, [fn]);
}

/** Joins the signed-in admin's channel for the whole portal, with a toast for each outcome. */
export function AdminEvents({ admin, csrf }) {
  useEffect(() => {
    const echo = getEcho(csrf, { authEndpoint: '/api/admin/broadcasting/auth' });
    if (!echo || !admin.id) return undefined;
    const name = `admin.${admin.id}`;
    const channel = echo.private(name);
    const tell = (event) => (data) => adminSubscribers.forEach((fn) => fn(event, data));
    channel.listen('.tenant.provisioned', (data) => {
      toast(`${(data.tenant && data.tenant.name) || 'The tenant'} is ready.`);
      tell('tenant.provisioned')(data);
    });
    channel.listen('.tenant.provision_failed', (data) => {
      toast(`Provisioning a tenant failed: ${data.error || 'unknown error'}`, 'error');
      tell('tenant.provision_failed')(data);
    });
    return () => echo.leave(name);
  }, [admin.id, csrf]);
  return null;
}

/** Tenant ids to slugs, for the tables. */
function useTenantNames() {
  const state = useAsync((signal) => adminApi('GET', '/api/admin/tenants', undefined, { signal }), []);
  const bySlug = {};
  for (const t of (state.data && state.data.tenants) || []) bySlug[t.id] = t.slug;
  return (id) => (id ? bySlug[id] || id : 'central');
}

/** A job's tenant; central work about one tenant (its provisioning) names it too. */
function jobTenant(names, job) {
  if (job.tenant_id) return names(job.tenant_id);
  const about = job.payload && typeof job.payload.tenant_id === 'string' ? job.payload.tenant_id : null;
  return about ? `central, for ${names(about)}` : 'central';
}

export function JobsScreen() {
  const params = new URLSearchParams(location.search);
  const [filters, setFilters] = useState({
    status: params.get('status') || '',
    queue: params.get('queue') || '',
    kind: params.get('kind') || '',
    tenant: params.get('tenant') || '',
  });
  const [draft, setDraft] = useState(filters);
  const [before, setBefore] = useState([]);
  const cursor = before[before.length - 1];
  const names = useTenantNames();
  const state = useAsync(
    (signal) => {
      const q = new URLSearchParams({ limit: '25' });
      for (const [k, v] of Object.entries(filters)) if (v.trim()) q.set(k, v.trim());
      if (cursor) q.set('before', cursor);
      return adminApi('GET', `/api/admin/jobs?${q}`, undefined, { signal });
    },
    [filters, cursor],
  );
  // New jobs and finished ones come from elsewhere: the list follows the admin's channel.
  useAdminEvents(state.reload);
  const apply = (e) => {
    e.preventDefault();
    setBefore([]);
    setFilters({ ...draft });
  };
  const set = (k) => (e) => setDraft((d) => ({ ...d, [k]: e.target.value }));
  return html`<section data-screen="portal-jobs" class="portal">
    <div class="page-head">
      <div><h1>Jobs</h1><p class="page-sub">Background work of every tenant and of the service itself, newest first.</p></div>
      <div class="head-actions"><button type="button" class="secondary" onClick=${state.reload}>Refresh</button></div>
    </div>
    <form class="toolbar" role="search" aria-label="Filter the jobs" onSubmit=${apply}>
      <${Field} as="select" label="Status" value=${draft.status} onChange=${(e) => {
        const status = e.target.value;
        setDraft((d) => ({ ...d, status }));
        setBefore([]);
        setFilters((f) => ({ ...f, status }));
      }}>
        <option value="">All statuses</option>
        ${STATUSES.map((s) => html`<option key=${s} value=${s}>${s}</option>`)}
      <//>
      <${Field} label="Queue" value=${draft.queue} placeholder="default" autocomplete="off" onInput=${set('queue')} />
      <${Field} label="Kind" value=${draft.kind} placeholder="tenant.provision" autocomplete="off" onInput=${set('kind')} />
      <${Field} label="Tenant" value=${draft.tenant} placeholder="Slug or id" autocomplete="off" onInput=${set('tenant')} />
      <button type="submit" class="secondary">Filter</button>
    </form>
    <${Async} state=${state} label="Loading the jobs…">${(answer) =>
      answer.jobs.length === 0
        ? html`<${Empty}>No job matches these filters.<//>`
        : html`<${JobTable} jobs=${answer.jobs} tenantColumn=${(j) => jobTenant(names, j)}
            link=${(j) => html`<${Link} to=${`/jobs/${j.id}`}>${j.id}<span class="visually-hidden"> (details)</span><//>`}
            actions=${(j) => html`<${Link} to=${`/jobs/${j.id}`} class="small-text">Details<span class="visually-hidden"> of job ${j.id}</span><//>`} />
          <div class="pager">
            <button type="button" class="secondary small" disabled=${!cursor} onClick=${() => setBefore((b) => b.slice(0, -1))}>Newer</button>
            <button type="button" class="secondary small" disabled=${!answer.next_before} onClick=${() => setBefore((b) => [...b, answer.next_before])}>Older</button>
          </div>`}
    <//>
    ${state.error && state.data && html`<${ErrorBox} error=${state.error} />`}
  </section>`;
}

export function JobScreen({ jobId }) {
  const state = useAsync((signal) => adminApi('GET', `/api/admin/jobs/${jobId}`, undefined, { signal }), [jobId]);
  const names = useTenantNames();
  const [asking, setAsking] = useState(null);
  return html`<section data-screen="portal-job" class="portal">
    <p class="crumbs"><${Link} to="/jobs">← All jobs<//></p>
    <${Async} state=${state} label="Loading the job…">${(j) => html`
      <div class="page-head">
        <div>
          <h1>Job ${j.id} <span class=${`status job-${j.status}`}>${j.status}</span></h1>
          <p class="page-sub"><code>${j.kind}</code> on the queue ${j.queue}</p>
        </div>
        <div class="head-actions">
          ${(j.status === 'failed' || j.status === 'discarded') && html`<button type="button" onClick=${() => setAsking('retry')}>Retry</button>`}
          ${(j.status === 'pending' || j.status === 'failed') && html`<button type="button" class="danger" onClick=${() => setAsking('discard')}>Discard</button>`}
        </div>
      </div>
      <dl class="details">
        <dt>Tenant</dt><dd class="mono">${jobTenant(names, j)}</dd>
        <dt>Attempts</dt><dd>${j.attempts} of ${j.max_attempts}</dd>
        <dt>Created</dt><dd>${jobTime(j.created_at)}</dd>
        <dt>Runs at</dt><dd>${jobTime(j.run_at)}</dd>
        ${j.started_at && html`<dt>Started</dt><dd>${jobTime(j.started_at)}</dd>`}
        ${j.finished_at && html`<dt>Finished</dt><dd>${jobTime(j.finished_at)}</dd>`}
        ${j.unique_key && html`<dt>Unique key</dt><dd class="mono">${j.unique_key}</dd>`}
        ${j.lease_owner && html`<dt>Leased by</dt><dd class="mono">${j.lease_owner}</dd>`}
      </dl>
      <h2>Last error</h2>
      ${j.last_error ? html`<pre class="payload" data-testid="job-error">${j.last_error}</pre>` : html`<p class="muted">None.</p>`}
      <h2>Payload</h2>
      <pre class="payload" data-testid="job-payload">${JSON.stringify(j.payload, null, 2)}</pre>
      ${asking &&
      html`<${Confirm} title=${asking === 'retry' ? `Retry job ${j.id}` : `Discard job ${j.id}`} action=${asking === 'retry' ? 'Retry' : 'Discard'}
        danger=${asking === 'discard'} onClose=${() => setAsking(null)} onConfirm=${async () => {
          const changed = await adminApi('POST', `/api/admin/jobs/${j.id}/${asking}`);
          state.setData(changed);
          toast(asking === 'retry' ? `Job ${j.id} will run again.` : `Job ${j.id} was discarded.`);
        }}>
        <p>${asking === 'retry' ? 'The job runs again from its first attempt.' : 'The job will not run; it is kept as discarded.'}</p>
      <//>`}
    `}<//>
  </section>`;
}

export function SchedulesScreen() {
  const state = useAsync((signal) => adminApi('GET', '/api/admin/schedules', undefined, { signal }), []);
  const names = useTenantNames();
  const [removing, setRemoving] = useState(null);
  return html`<section data-screen="portal-schedules" class="portal">
    <div class="page-head"><div><h1>Schedules</h1><p class="page-sub">Recurring jobs from cron expressions (seconds first), per tenant or central.</p></div></div>
    <${Async} state=${state} label="Loading the schedules…">${(answer) =>
      answer.schedules.length === 0
        ? html`<${Empty}>No schedule yet.<//>`
        : html`<div class="table-wrap"><table>
            <caption class="visually-hidden">Schedules</caption>
            <thead><tr><th scope="col">Cron</th><th scope="col">Kind</th><th scope="col">Tenant</th><th scope="col">Next run</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
            <tbody>${answer.schedules.map(
              (s) => html`<tr key=${s.id} data-testid="schedule-row">
                <td class="mono">${s.cron}</td><td><code>${s.kind}</code></td><td class="mono">${names(s.tenant_id)}</td>
                <td class="nowrap">${jobTime(s.next_run_at)}</td>
                <td><button type="button" class="secondary small" onClick=${() => setRemoving(s)}>Remove<span class="visually-hidden"> the schedule ${s.id}</span></button></td>
              </tr>`,
            )}</tbody>
          </table></div>`}
    <//>
    <${AddSchedule} onAdded=${state.reload} />
    ${removing &&
    html`<${Confirm} title="Remove the schedule" action="Remove" danger onClose=${() => setRemoving(null)} onConfirm=${async () => {
      await adminApi('DELETE', `/api/admin/schedules/${removing.id}`);
      toast('The schedule was removed.');
      state.reload();
    }}><p>No more <code>${removing.kind}</code> jobs will be made from <code>${removing.cron}</code>.</p><//>`}
  </section>`;
}

function AddSchedule({ onAdded }) {
  const [cron, setCron] = useState('0 0 3 * * *');
  const [kind, setKind] = useState('noop');
  const [tenant, setTenant] = useState('');
  const [payload, setPayload] = useState('{}');
  const [payloadError, setPayloadError] = useState(null);
  const { busy, error, run } = useSubmit(async () => {
    let parsed;
    try {
      parsed = JSON.parse(payload || '{}');
    } catch {
      setPayloadError('must be JSON, such as {}');
      return;
    }
    setPayloadError(null);
    const body = { cron: cron.trim(), kind: kind.trim(), payload: parsed };
    if (tenant.trim()) body.tenant = tenant.trim();
    await adminApi('POST', '/api/admin/schedules', body);
    toast('The schedule was added.');
    onAdded();
  });
  const known = ['cron', 'kind', 'tenant', 'payload'].some((f) => fieldError(error, f));
  return html`<section class="panel" aria-labelledby="add-schedule">
    <h2 id="add-schedule">Add a schedule</h2>
    <form class="schedule-form" onSubmit=${run} novalidate>
      <${Field} label="Cron" required autocomplete="off" spellcheck="false" value=${cron} error=${fieldError(error, 'cron')}
        hint="sec min hour day month weekday" onInput=${(e) => setCron(e.target.value)} />
      <${Field} label="Kind" required autocomplete="off" value=${kind} error=${fieldError(error, 'kind')} onInput=${(e) => setKind(e.target.value)} />
      <${Field} label="Tenant (optional)" autocomplete="off" value=${tenant} error=${fieldError(error, 'tenant')}
        hint="Slug or id; empty for central work." onInput=${(e) => setTenant(e.target.value)} />
      <div class="wide-field"><${Field} as="textarea" label="Payload (JSON)" rows="3" spellcheck="false" value=${payload}
        error=${payloadError || fieldError(error, 'payload')} onInput=${(e) => setPayload(e.target.value)} /></div>
      <${ErrorBox} error=${error && !known ? error : null} />
      <div class="actions"><${Submit} busy=${busy}>Add schedule<//></div>
    </form>
  </section>`;
}
