// Attachments: an order's "Files" panel (the list, "Attach file", delete), the file links a chat
// message carries, and the words for an upload that failed. The bytes go up as they are
// (lib/api.js upload()); a download is a plain link to /api/files/{id}/download, which the
// server answers as an attachment in a sandbox, so nothing of a file is ever shown in the page.
import { html, useState } from '../../vendor/htm-preact.module.js';
import { api, describe, upload } from '../lib/api.js';
import { base } from '../lib/boot.js';
import { Async, Confirm, ErrorBox, formatBytes, formatTime, toast, useAsync } from '../lib/ui.js';

/** Where a file is downloaded, under this page's tenant like every API path. */
export function downloadHref(file) {
  return `${base}/api/files/${file.id}/download`;
}

/**
 * Words for an upload that failed: the plan's limit when the file is too large or the storage
 * full (the API's message names it), else what describe() says.
 */
export function describeUpload(err, file) {
  const what = file ? `“${file.name}” (${formatBytes(file.size)})` : 'That file';
  if (err && err.code === 'payload_too_large') {
    return `${what} is too large: ${err.message || 'the server refused its size'}.`;
  }
  if (err && err.code === 'quota_exceeded' && err.details.limit_name === 'storage_mb') {
    return `There is no room left for ${what}: the plan allows ${err.details.limit} MiB of storage in all. ` +
      'Delete files that are no longer needed, or ask an administrator to upgrade the plan.';
  }
  return describe(err);
}

/**
 * A visually hidden file input with a label that looks like a button: the input keeps the
 * focus, the keyboard and the label for assistive technology; the label shows where it is.
 */
export function FilePicker({ id, label, busy, onPick, className = 'button secondary', describedBy, children }) {
  return html`<span class="file-picker">
    <input type="file" id=${id} class="file-input" disabled=${busy} aria-describedby=${describedBy}
      onChange=${(e) => {
        const file = e.target.files && e.target.files[0];
        // The same file can be chosen again after a failure.
        e.target.value = '';
        if (file) onPick(file);
      }} />
    <label for=${id} class=${className}>${children || label}</label>
  </span>`;
}

/** How far an upload is, for a person and for assistive technology. */
export function UploadProgress({ name, sent, total }) {
  const percent = total ? Math.floor((sent / total) * 100) : null;
  return html`<div class="upload-progress" role="status">
    <span>Uploading “${name}”…${percent === null ? '' : ` ${percent}%`}</span>
    <progress max="100" value=${percent === null ? undefined : percent} aria-label=${`Uploading ${name}`}></progress>
  </div>`;
}

/** The files of a chat message, as download links. */
export function MessageFiles({ files }) {
  if (!files || !files.length) return null;
  return html`<ul class="message-files" aria-label="Attached files">
    ${files.map((f) => html`<li key=${f.id} data-testid="message-file">
      <a href=${downloadHref(f)} download=${f.name}>${f.name}</a>
      <span class="file-size">${formatBytes(f.size)}</span>
    </li>`)}
  </ul>`;
}

/**
 * An order's "Files" panel: its files (name, size, who added it and when), each a download link;
 * "Attach file" for members who may edit orders; delete for the uploader and for them.
 * `name(userId)` names a member; `version` changes when the order should be read again.
 */
export function OrderFiles({ ctx, orderId, canAttach, name, version }) {
  const state = useAsync((signal) => api('GET', `/api/orders/${orderId}/files`, undefined, { signal }), [orderId, version]);
  const [progress, setProgress] = useState(null);
  const [error, setError] = useState(null);
  const [deleting, setDeleting] = useState(null);
  const me = ctx.me.user.id;
  const mayDelete = (f) => f.uploaded_by === me || ctx.can('orders_edit');

  const attach = async (file) => {
    setError(null);
    setProgress({ name: file.name, sent: 0, total: file.size });
    try {
      const added = await upload(`/api/orders/${orderId}/files`, file, {
        query: { name: file.name },
        onProgress: (sent, total) => setProgress({ name: file.name, sent, total }),
      });
      state.setData((d) => (d ? { ...d, files: [...d.files.filter((f) => f.id !== added.id), added] } : { files: [added] }));
      toast(`“${added.name}” attached.`);
    } catch (err) {
      setError({ text: describeUpload(err, file) });
    } finally {
      setProgress(null);
    }
  };

  return html`<section class="panel order-files" data-testid="order-files" aria-labelledby="order-files-title">
    <div class="panel-head">
      <h2 id="order-files-title">Files</h2>
      ${canAttach && html`<${FilePicker} id="order-file-input" label="Attach file" busy=${!!progress} onPick=${attach} />`}
    </div>
    ${progress && html`<${UploadProgress} ...${progress} />`}
    ${error && html`<div class="error-box" role="alert"><p>${error.text}</p></div>`}
    <${Async} state=${state} label="Loading the files…">
      ${(d) => d.files.length === 0
        ? html`<p class="muted">No files${canAttach ? ' yet. Attach drawings, quotes or photos with “Attach file”.' : '.'}</p>`
        : html`<ul class="file-list">
            ${d.files.map((f) => html`<li key=${f.id} data-testid="order-file" data-file-id=${f.id}>
              <div class="file-main">
                <a href=${downloadHref(f)} download=${f.name} class="file-name">${f.name}</a>
                <p class="file-meta">
                  <span class="file-size">${formatBytes(f.size)}</span>
                  <span>${name(f.uploaded_by)}</span>
                  <time datetime=${f.created_at}>${formatTime(f.created_at)}</time>
                </p>
              </div>
              ${mayDelete(f) && html`<button type="button" class="secondary small danger-text" onClick=${() => setDeleting(f)}>
                Delete<span class="visually-hidden"> ${f.name}</span>
              </button>`}
            </li>`)}
          </ul>`}
    <//>
    ${state.error && state.data && html`<${ErrorBox} error=${state.error} retry=${state.reload} />`}
    ${deleting && html`<${Confirm} title=${`Delete “${deleting.name}”?`} action="Delete file" danger
      onClose=${() => setDeleting(null)} onConfirm=${async () => {
        await api('DELETE', `/api/files/${deleting.id}`);
        state.setData((d) => (d ? { ...d, files: d.files.filter((f) => f.id !== deleting.id) } : d));
        toast(`“${deleting.name}” deleted.`);
      }}>
      <p>The file is removed from this order for everyone.</p>
    <//>`}
  </section>`;
}
