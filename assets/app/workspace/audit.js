// PLACEHOLDER: replaced by the real screens.
import { html } from '../../vendor/htm-preact.module.js';
export function AuditScreen() { return html`<section data-screen="todo"><h1>AuditScreen</h1></section>`; }
