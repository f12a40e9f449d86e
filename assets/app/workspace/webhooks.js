// A company's automation settings, for members with `settings_manage`: outbound webhook
// endpoints (list, create, edit, delete, rotate the secret, the delivery log), inbound webhook
// sources (their secrets), and the company's background jobs (status filter, retry).
// A secret is answered by the API once, when made: it is shown once here and never again.
import { html, useState } from '../../vendor/htm-preact.module.js';
import { api } from '../lib/api.js';
import { Link, navigate } from '../lib/router.js';
import {
  Async,
  Confirm,
  Dialog,
  Empty,
  ErrorBox,
  Field,
  Submit,
  copyText,
  fieldError,
  formatTime,
  toast,
  useAsync,
  useSubmit,
} from '../lib/ui.js';
import { NoAccess } from './people.js';

const PERMISSION = 'settings_manage';

function endpointPath(id, rest = '') {
  return `/api/webhook-endpoints/${encodeURIComponent(id)}${rest}`;
}

/** The tabs of the settings area. */
export function SettingsTabs({ current }) {
  const tabs = [
    ['/settings/webhooks', 'Webhooks'],
    ['/settings/jobs', 'Background jobs'],
    ['/settings/export', 'Export'],
    ['/settings/company', 'Company'],
  ];
  return html`<nav class="settings-tabs" aria-label="Settings">
    ${tabs.map(([to, label]) => html`<${Link} key=${to} to=${to} aria-current=${current === to ? 'page' : undefined}>${label}<//>`)}
  </nav>`;
}

/** A secret shown once, with a Copy button. */
export function SecretOnce({ secret, what }) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    if (await copyText(secret, 'Secret')) setCopied(true);
  };
  return html`<div class="secret-once" data-testid="secret-once">
    <p><strong>Copy ${what} now.</strong> It is shown only this once; rotate it if it is lost.</p>
    <div class="copy-box"><code data-testid="secret">${secret}</code>
      <button type="button" class="secondary small" onClick=${copy}>${copied ? 'Copied' : 'Copy'}</button></div>
  </div>`;
}

function EndpointState({ endpoint }) {
  if (endpoint.enabled) return html`<span class="status active">Enabled</span>`;
  return html`<span class="status suspended">Disabled</span>${endpoint.disabled_reason &&
    html`<div class="muted small-text">${endpoint.disabled_reason}</div>`}`;
}

function eventsText(events) {
  return events.includes('*') ? 'All events' : events.join(', ');
}

export function WebhooksScreen({ ctx }) {
  if (!ctx.can(PERMISSION)) return html`<${NoAccess} screen="webhooks" title="Webhooks" needs="the permission to manage the company's settings" />`;
  const state = useAsync((signal) => api('GET', '/api/webhook-endpoints', undefined, { signal }), []);
  const [dialog, setDialog] = useState(null);
  const [secret, setSecret] = useState(null);
  const endpoints = (state.data && state.data.endpoints) || [];
  const events = (state.data && state.data.events) || [];
  return html`<section data-screen="webhooks" class="settings">
    <div class="page-head">
      <div>
        <h1>Webhooks</h1>
        <p class="page-sub">Tell other systems what happens here, signed as Standard Webhooks.</p>
      </div>
      <button type="button" onClick=${() => setDialog({ kind: 'create' })}><span aria-hidden="true">+</span> New endpoint</button>
    </div>
    <${SettingsTabs} current="/settings/webhooks" />
    ${secret && html`<${SecretOnce} secret=${secret} what="the signing secret of the new endpoint" />`}
    <h2>Outbound endpoints</h2>
    <${Async} state=${state} label="Loading the endpoints…">${() =>
      endpoints.length === 0
        ? html`<${Empty}>No endpoint yet. Add one to send this company's events to another system.<//>`
        : html`<div class="table-wrap"><table class="webhooks-table">
            <caption class="visually-hidden">Webhook endpoints</caption>
            <thead><tr><th scope="col">URL</th><th scope="col">Events</th><th scope="col">State</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
            <tbody>${endpoints.map(
              (e) => html`<tr key=${e.id} data-testid="endpoint-row">
                <td class="url-cell"><${Link} to=${`/settings/webhooks/${e.id}`} class="mono">${e.url}<//>
                  ${e.description && html`<div class="muted">${e.description}</div>`}</td>
                <td>${eventsText(e.events)}</td>
                <td><${EndpointState} endpoint=${e} /></td>
                <td class="nowrap"><${Link} to=${`/settings/webhooks/${e.id}`}>Open<span class="visually-hidden"> the deliveries and settings of ${e.url}</span><//></td>
              </tr>`,
            )}</tbody>
          </table></div>`}
    <//>
    <${InboundSources} tenantId=${ctx.tenant.id} />
    ${dialog && dialog.kind === 'create' &&
    html`<${EndpointForm} events=${events} onClose=${() => setDialog(null)} onSaved=${(made) => {
      setDialog(null);
      setSecret(made.secret);
      toast('The endpoint was added.');
      state.reload();
    }} />`}
  </section>`;
}

/** Create (no `endpoint`) or edit an endpoint: URL, events, and (editing) enabled. */
function EndpointForm({ endpoint, events, onClose, onSaved }) {
  const [url, setUrl] = useState(endpoint ? endpoint.url : 'https://');
  const [description, setDescription] = useState(endpoint ? endpoint.description : '');
  const [chosen, setChosen] = useState(endpoint ? endpoint.events : []);
  const [enabled, setEnabled] = useState(endpoint ? endpoint.enabled : true);
  const all = chosen.includes('*');
  const toggle = (name) => setChosen((xs) => (xs.includes(name) ? xs.filter((x) => x !== name) : [...xs.filter((x) => x !== '*'), name]));
  const { busy, error, run } = useSubmit(async () => {
    const body = { url: url.trim(), events: chosen, description: description.trim() };
    if (endpoint) body.enabled = enabled;
    const saved = endpoint ? await api('PATCH', endpointPath(endpoint.id), body) : await api('POST', '/api/webhook-endpoints', body);
    onSaved(saved);
  });
  const known = ['url', 'events', 'description'].some((f) => fieldError(error, f));
  return html`<${Dialog} title=${endpoint ? 'Edit endpoint' : 'New endpoint'} onClose=${onClose} wide>
    <form onSubmit=${run} novalidate>
      <${Field} label="URL" type="url" required autocomplete="off" spellcheck="false" value=${url} error=${fieldError(error, 'url')}
        hint="Where the events are POSTed (https)." onInput=${(e) => setUrl(e.target.value)} />
      <${Field} label="Description (optional)" autocomplete="off" value=${description} error=${fieldError(error, 'description')}
        onInput=${(e) => setDescription(e.target.value)} />
      <fieldset class="choice event-choice" aria-describedby=${fieldError(error, 'events') ? 'events-err' : undefined}>
        <legend>Events</legend>
        <label><input type="checkbox" checked=${all} onChange=${() => setChosen(all ? [] : ['*'])} /> All events, present and future</label>
        ${events.map(
          (name) => html`<label key=${name}><input type="checkbox" checked=${all || chosen.includes(name)} disabled=${all}
            onChange=${() => toggle(name)} /> <code>${name}</code></label>`,
        )}
        ${fieldError(error, 'events') && html`<p class="field-error" id="events-err">${fieldError(error, 'events')}</p>`}
      </fieldset>
      ${endpoint &&
      html`<label class="check"><input type="checkbox" checked=${enabled} onChange=${(e) => setEnabled(e.target.checked)} /> Enabled</label>`}
      <${ErrorBox} error=${error && !known ? error : null} />
      <div class="actions">
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
        <${Submit} busy=${busy}>${endpoint ? 'Save' : 'Add endpoint'}<//>
      </div>
    </form>
  <//>`;
}

/** One endpoint: its settings, its actions and its delivery log. */
export function WebhookScreen({ ctx, endpointId }) {
  if (!ctx.can(PERMISSION)) return html`<${NoAccess} screen="webhook" title="Webhooks" needs="the permission to manage the company's settings" />`;
  const state = useAsync((signal) => api('GET', endpointPath(endpointId), undefined, { signal }), [endpointId]);
  const events = useAsync((signal) => api('GET', '/api/webhook-endpoints', undefined, { signal }).then((a) => a.events), []);
  const [dialog, setDialog] = useState(null);
  const [secret, setSecret] = useState(null);
  const [tick, setTick] = useState(0);
  return html`<section data-screen="webhook" class="settings">
    <p class="crumbs"><${Link} to="/settings/webhooks">← All webhooks<//></p>
    <${Async} state=${state} label="Loading the endpoint…">${(e) => html`
      <div class="page-head">
        <div>
          <h1 class="mono endpoint-url">${e.url}</h1>
          <p class="page-sub">${eventsText(e.events)}</p>
        </div>
        <div class="head-actions">
          <button type="button" class="secondary" onClick=${() => setDialog('edit')}>Edit</button>
          <button type="button" class="secondary" onClick=${() => setDialog('rotate')}>Rotate secret</button>
          <button type="button" class="secondary" onClick=${() => setTick((t) => t + 1)}>Refresh log</button>
          <button type="button" class="danger" onClick=${() => setDialog('delete')}>Delete</button>
        </div>
      </div>
      ${secret && html`<${SecretOnce} secret=${secret} what="the new signing secret" />`}
      <dl class="details">
        <dt>State</dt><dd><${EndpointState} endpoint=${e} /></dd>
        ${e.description && html`<dt>Description</dt><dd>${e.description}</dd>`}
        <dt>Failures in a row</dt><dd>${e.consecutive_failures}</dd>
        ${e.previous_secret_expires_at && html`<dt>Old secret valid until</dt><dd>${formatTime(e.previous_secret_expires_at)}</dd>`}
        <dt>Created</dt><dd>${formatTime(e.created_at)}</dd>
      </dl>
      <${Deliveries} endpointId=${e.id} tick=${tick} />
      ${dialog === 'edit' &&
      html`<${EndpointForm} endpoint=${e} events=${events.data || []} onClose=${() => setDialog(null)} onSaved=${(saved) => {
        setDialog(null);
        state.setData(saved);
        toast('The endpoint was saved.');
      }} />`}
      ${dialog === 'rotate' &&
      html`<${Confirm} title="Rotate the secret" action="Rotate" onClose=${() => setDialog(null)} onConfirm=${async () => {
        const answer = await api('POST', endpointPath(e.id, '/rotate-secret'));
        setSecret(answer.secret);
        state.reload();
      }}><p>A new secret signs the deliveries from now on; the old one stays valid for a while, so the receiver can switch.</p><//>`}
      ${dialog === 'delete' &&
      html`<${Confirm} title="Delete the endpoint" action="Delete" danger onClose=${() => setDialog(null)} onConfirm=${async () => {
        await api('DELETE', endpointPath(e.id));
        toast('The endpoint was deleted.');
        navigate('/settings/webhooks');
      }}><p>No event will be sent to <code>${e.url}</code> any more, and its delivery log is deleted.</p><//>`}
    `}<//>
  </section>`;
}

function Deliveries({ endpointId, tick }) {
  const [before, setBefore] = useState([]);
  const cursor = before[before.length - 1];
  const state = useAsync(
    (signal) => api('GET', endpointPath(endpointId, `/deliveries?limit=25${cursor ? `&before=${cursor}` : ''}`), undefined, { signal }),
    [endpointId, cursor, tick],
  );
  return html`<h2>Delivery log</h2>
    <${Async} state=${state} label="Loading the deliveries…">${(answer) => {
      const items = answer.deliveries || answer.items || [];
      if (items.length === 0 && !cursor) return html`<${Empty}>No delivery yet. Events are sent as they happen.<//>`;
      return html`<div class="table-wrap"><table class="deliveries-table">
          <caption class="visually-hidden">Delivery attempts, newest first</caption>
          <thead><tr><th scope="col">Time</th><th scope="col">Event</th><th scope="col" class="num">Status</th><th scope="col" class="num">Duration</th><th scope="col" class="num">Attempt</th><th scope="col">Response</th></tr></thead>
          <tbody>${items.map(
            (d) => html`<tr key=${d.id} data-testid="delivery-row">
              <td class="nowrap">${formatTime(d.at, { short: true })}</td>
              <td><code>${d.event}</code></td>
              <td class="num"><span class=${`http-status ${d.status_code >= 200 && d.status_code < 300 ? 'ok' : 'bad'}`}>${d.status_code ?? 'none'}</span></td>
              <td class="num nowrap">${d.duration_ms} ms</td>
              <td class="num">${d.attempt}</td>
              <td><pre class="excerpt">${d.error ? d.error : d.response_excerpt || ''}</pre></td>
            </tr>`,
          )}</tbody>
        </table></div>
        <div class="pager">
          <button type="button" class="secondary small" disabled=${!cursor} onClick=${() => setBefore((b) => b.slice(0, -1))}>Newer</button>
          <button type="button" class="secondary small" disabled=${!answer.next} onClick=${() => setBefore((b) => [...b, answer.next])}>Older</button>
        </div>`;
    }}<//>`;
}

function InboundSources({ tenantId }) {
  const state = useAsync((signal) => api('GET', '/api/webhook-sources', undefined, { signal }), []);
  const [asking, setAsking] = useState(null);
  const [secret, setSecret] = useState(null);
  return html`<h2>Inbound sources</h2>
    <p class="muted">Other systems may post to these paths on the central host, signed with the source's secret and naming this company's id, <code>${tenantId}</code>.</p>
    ${secret && html`<${SecretOnce} secret=${secret.secret} what=${`the secret of ${secret.source}`} />`}
    <${Async} state=${state} label="Loading the sources…">${(answer) => html`<ul class="source-list">
      ${answer.sources.map(
        (s) => html`<li key=${s.source} class="panel" data-testid="source-row">
          <div>
            <strong>${s.source}</strong> <code>${s.path}</code>
            <div class="muted">${s.secret_set ? `Secret set ${formatTime(s.rotated_at || s.created_at)}` : 'No secret yet: deliveries are refused.'}</div>
          </div>
          <button type="button" class="secondary small" onClick=${() => setAsking(s)}>${s.secret_set ? 'Rotate secret' : 'Create secret'}</button>
        </li>`,
      )}
    </ul>`}<//>
    ${asking &&
    html`<${Confirm} title=${asking.secret_set ? `Rotate the secret of ${asking.source}` : `Create a secret for ${asking.source}`}
      action=${asking.secret_set ? 'Rotate' : 'Create'} onClose=${() => setAsking(null)} onConfirm=${async () => {
        const answer = await api('POST', `/api/webhook-sources/${encodeURIComponent(asking.source)}/secret`);
        setSecret(answer);
        state.reload();
      }}>
      <p>${asking.secret_set ? 'The current secret stops working at once; senders need the new one.' : 'Senders sign their deliveries with this secret.'}</p>
    <//>`}`;
}

const JOB_STATUSES = ['pending', 'running', 'done', 'failed', 'discarded'];

/** The company's background jobs: a status filter, paging, and retry for failed ones. */
export function TenantJobsScreen({ ctx }) {
  if (!ctx.can(PERMISSION)) return html`<${NoAccess} screen="jobs" title="Background jobs" needs="the permission to manage the company's settings" />`;
  const [status, setStatus] = useState('');
  const [before, setBefore] = useState([]);
  const cursor = before[before.length - 1];
  const state = useAsync(
    (signal) => {
      const q = new URLSearchParams({ limit: '25' });
      if (status) q.set('status', status);
      if (cursor) q.set('before', cursor);
      return api('GET', `/api/jobs?${q}`, undefined, { signal });
    },
    [status, cursor],
  );
  const retry = async (job) => {
    try {
      await api('POST', `/api/jobs/${job.id}/retry`);
      toast(`Job ${job.id} will run again.`);
      state.reload();
    } catch (err) {
      toast(describeShort(err), 'error');
    }
  };
  return html`<section data-screen="jobs" class="settings">
    <div class="page-head"><div><h1>Background jobs</h1><p class="page-sub">Work done for this company outside of requests, such as webhook deliveries.</p></div></div>
    <${SettingsTabs} current="/settings/jobs" />
    <form class="toolbar" onSubmit=${(e) => e.preventDefault()}>
      <${Field} as="select" label="Status" value=${status} onChange=${(e) => {
        setBefore([]);
        setStatus(e.target.value);
      }}>
        <option value="">All statuses</option>
        ${JOB_STATUSES.map((s) => html`<option key=${s} value=${s}>${s}</option>`)}
      <//>
    </form>
    <${Async} state=${state} label="Loading the jobs…">${(answer) =>
      answer.jobs.length === 0
        ? html`<${Empty}>No job${status ? ` is ${status}` : ' yet'}.<//>`
        : html`<${JobTable} jobs=${answer.jobs} actions=${(j) => j.status === 'failed' && html`<button type="button" class="small" onClick=${() => retry(j)}>Retry</button>`} />
          <div class="pager">
            <button type="button" class="secondary small" disabled=${!cursor} onClick=${() => setBefore((b) => b.slice(0, -1))}>Newer</button>
            <button type="button" class="secondary small" disabled=${!answer.next_before} onClick=${() => setBefore((b) => [...b, answer.next_before])}>Older</button>
          </div>`}
    <//>
  </section>`;
}

function describeShort(err) {
  return err && err.message ? err.message : 'That did not work.';
}

/** Job times are unix milliseconds. */
export function jobTime(ms) {
  return ms ? formatTime(ms / 1000, { short: true }) : '';
}

/** A table of jobs; `actions(job)` gives the last cell, `link(job)` the id cell's link if any. */
export function JobTable({ jobs, actions, link, tenantColumn }) {
  return html`<div class="table-wrap"><table class="jobs-table">
    <caption class="visually-hidden">Jobs, newest first</caption>
    <thead><tr><th scope="col" class="num">Job</th><th scope="col">Kind</th>${tenantColumn && html`<th scope="col">Tenant</th>`}<th scope="col">Status</th>
      <th scope="col" class="num">Attempts</th><th scope="col">Created</th><th scope="col">Last error</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
    <tbody>${jobs.map(
      (j) => html`<tr key=${j.id} data-testid="job-row">
        <td class="num">${link ? link(j) : j.id}</td>
        <td><code>${j.kind}</code><div class="muted">${j.queue}</div></td>
        ${tenantColumn && html`<td class="mono small-text">${tenantColumn(j)}</td>`}
        <td><span class=${`status job-${j.status}`}>${j.status}</span></td>
        <td class="num">${j.attempts}/${j.max_attempts}</td>
        <td class="nowrap">${jobTime(j.created_at)}</td>
        <td class="job-error">${j.last_error || ''}</td>
        <td class="nowrap">${actions(j) || ''}</td>
      </tr>`,
    )}</tbody>
  </table></div>`;
}
