// The page's entry: reads what the server said about this page (boot.js) and mounts the area:
// a company's workspace, the central host (admin portal, or a person's companies), or the
// "no company here" or "down for maintenance" screen.
import { html, render } from '../vendor/htm-preact.module.js';
import { boot } from './lib/boot.js';
import { Toasts } from './lib/ui.js';
import { WorkspaceApp } from './workspace/shell.js';
import { CentralApp } from './portal/shell.js';
import { Maintenance, NoTenant } from './account/screens.js';

function App() {
  let area;
  if (boot.area === 'workspace') area = html`<${WorkspaceApp} />`;
  else if (boot.area === 'no_tenant') area = html`<${NoTenant} />`;
  else if (boot.area === 'maintenance') area = html`<${Maintenance} />`;
  else area = html`<${CentralApp} />`;
  return html`${area}<${Toasts} />`;
}

const root = document.getElementById('app');
// Preact keeps children it did not render: the page's own "Loading…" would stay below the app.
root.textContent = '';
render(html`<${App} />`, root);
