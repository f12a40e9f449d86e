// A company's data, for members with `settings_manage`: the archive downloaded at once (made
// while it is sent), or prepared in the background for a large company and downloaded from
// the list once ready (kept 3 days). The format is described by the archive's own README.
import { html, useEffect } from '../../vendor/htm-preact.module.js';
import { api } from '../lib/api.js';
import { base } from '../lib/boot.js';
import { Async, Empty, formatTime, toast, useAsync, useSubmit } from '../lib/ui.js';
import { NoAccess } from './people.js';
import { SettingsTabs } from './webhooks.js';

const PERMISSION = 'settings_manage';

/** How often the list is asked again while an export is being made. */
const POLL_MS = 3000;

const STATUS_LABEL = { pending: 'Waiting', running: 'Being made', ready: 'Ready', failed: 'Failed', expired: 'Expired' };

export function ExportScreen({ ctx }) {
  if (!ctx.can(PERMISSION)) return html`<${NoAccess} screen="export" title="Export" needs="the permission to manage the company's settings" />`;
  const list = useAsync((signal) => api('GET', '/api/exports', undefined, { signal }), []);
  const busyExports = list.data && list.data.exports.some((e) => e.status === 'pending' || e.status === 'running');
  const { reload } = list;
  useEffect(() => {
    if (!busyExports) return undefined;
    const timer = setInterval(reload, POLL_MS);
    return () => clearInterval(timer);
  }, [busyExports, reload]);
  const { busy, run: prepare } = useSubmit(async () => {
    await api('POST', '/api/exports');
    toast('The export is being prepared. It appears below when ready.');
    list.reload();
  });
  return html`<section data-screen="export" class="settings">
    <div class="page-head"><div><h1>Export company data</h1><p class="page-sub">Every chat, message, order and setting of ${ctx.tenant.name}, its members, roles and audit log, in one zip of JSON files.</p></div></div>
    <${SettingsTabs} current="/settings/export" />
    <p><a class="button" href=${base + '/api/export'} download data-testid="export-now">Export company data</a></p>
    <p class="hint">For a large company, prepare the export in the background and download it when it is ready. Prepared exports are kept for 3 days.</p>
    <form onSubmit=${prepare}><button type="submit" class="secondary" disabled=${busy}>${busy ? 'Working…' : 'Prepare an export'}</button></form>
    <${Async} state=${list} label="Loading the exports…">${(answer) =>
      answer.exports.length === 0
        ? html`<${Empty}>No export has been prepared.<//>`
        : html`<div class="table-wrap"><table>
            <caption class="visually-hidden">Prepared exports, newest first</caption>
            <thead><tr><th scope="col">Requested</th><th scope="col">Status</th><th scope="col" class="num">Size</th><th scope="col"><span class="visually-hidden">Download</span></th></tr></thead>
            <tbody>${answer.exports.map((e) => html`<tr key=${e.id} data-testid="export-row">
              <td>${formatTime(e.created_at)}</td>
              <td>${STATUS_LABEL[e.status] || e.status}${e.error ? html` <span class="muted">(${e.error})</span>` : ''}</td>
              <td class="num">${e.bytes === null ? '' : `${Math.max(1, Math.round(e.bytes / 1024))} KB`}</td>
              <td>${e.status === 'ready' && html`<a href=${`${base}/api/exports/${e.id}/download`} download>Download</a>`}</td>
            </tr>`)}</tbody>
          </table></div>`}
    <//>
  </section>`;
}
