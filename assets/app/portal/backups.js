// The admin portal's backups panel on a tenant's page: its backups (and the files restores kept
// aside), "Back up now" (a tenant.backup job) and "Restore" from one of them, confirmed by
// typing the tenant's slug as the other dangerous actions are.
import { html, useEffect, useState } from '../../vendor/htm-preact.module.js';
import { api } from '../lib/api.js';
import { Async, Confirm, Empty, formatBytes, formatTime, toast, useAsync } from '../lib/ui.js';

/** How often, and how many times, the list is read again while a backup job runs. */
const POLL_MS = 1000;
const POLL_TIMES = 30;

function backupsPath(slug, rest = '') {
  return `/api/admin/tenants/${encodeURIComponent(slug)}/backups${rest}`;
}

export function Backups({ tenant, onRestored }) {
  const state = useAsync((signal) => api('GET', backupsPath(tenant.slug), undefined, { central: true, signal }), [tenant.slug]);
  const [waitingFor, setWaitingFor] = useState(null);
  const [restoring, setRestoring] = useState(null);
  const [busy, setBusy] = useState(false);
  const count = state.data ? state.data.backups.length : 0;

  // While a job runs, read the list again until a new backup shows (or give up quietly).
  useEffect(() => {
    if (waitingFor === null) return undefined;
    if (count > waitingFor.count || waitingFor.left <= 0) {
      if (count > waitingFor.count) toast(`${tenant.name} is backed up.`);
      setWaitingFor(null);
      return undefined;
    }
    const t = setTimeout(() => {
      setWaitingFor((w) => w && { ...w, left: w.left - 1 });
      state.reload();
    }, POLL_MS);
    return () => clearTimeout(t);
  }, [waitingFor, count]);

  const backUp = async () => {
    setBusy(true);
    try {
      await api('POST', backupsPath(tenant.slug), undefined, { central: true });
      toast('Backup started.');
      setWaitingFor({ count, left: POLL_TIMES });
    } catch (err) {
      toast(err.message || 'The backup could not be started.', 'error');
    } finally {
      setBusy(false);
    }
  };

  const restore = async (file) => {
    await api('POST', backupsPath(tenant.slug, '/restore'), { backup: file }, { central: true });
    toast(`${tenant.name} is restored from ${file}.`);
    state.reload();
    if (onRestored) onRestored();
  };

  return html`<section class="panel" aria-labelledby="backups-h" data-testid="backups">
    <div class="panel-head">
      <h2 id="backups-h">Backups</h2>
      <button type="button" class="small" onClick=${backUp} disabled=${busy || waitingFor !== null}>
        ${waitingFor !== null ? 'Backing up…' : 'Back up now'}
      </button>
    </div>
    <${Async} state=${state} label="Reading its backups…">${(data) =>
      data.backups.length === 0
        ? html`<${Empty}>No backups yet. "Back up now" makes one; a schedule of the kind tenant.backup makes them regularly.<//>`
        : html`<div class="table-wrap"><table class="backups">
            <thead><tr><th scope="col">Taken</th><th scope="col">Size</th><th scope="col">File</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
            <tbody>
              ${data.backups.map(
                (b) => html`<tr key=${b.file}>
                  <td>${formatTime(b.created_at)}</td>
                  <td>${formatBytes(b.bytes)}</td>
                  <td class="mono">${b.file}${b.file.startsWith('replaced-') ? html` <span class="muted">(kept by a restore)</span>` : ''}</td>
                  <td><button type="button" class="secondary small" onClick=${() => setRestoring(b)}>Restore<span class="visually-hidden"> from ${b.file}</span></button></td>
                </tr>`,
              )}
            </tbody>
          </table></div>`}
    <//>
    ${restoring &&
    html`<${Confirm} title=${`Restore ${tenant.name} from this backup?`} action="Restore" danger typed=${tenant.slug}
      onClose=${() => setRestoring(null)} onConfirm=${() => restore(restoring.file)}>
      <p>Its database is replaced by the backup of ${formatTime(restoring.created_at)} (${formatBytes(restoring.bytes)}). Everything written since is set aside: the current file is kept as a backup of its own, so this can be undone. Its people get "try again shortly" for the few moments it takes.</p>
    <//>`}
  </section>`;
}
