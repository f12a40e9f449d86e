// PLACEHOLDER: replaced by the real screens.
import { html } from '../../vendor/htm-preact.module.js';
export function PortalAuditScreen() { return html`<section data-screen="todo"><h1>PortalAuditScreen</h1></section>`; }
