// PLACEHOLDER: replaced by the real screens.
import { html } from '../../vendor/htm-preact.module.js';
export function TenantsScreen() { return html`<section data-screen="todo"><h1>TenantsScreen</h1></section>`; }
export function TenantScreen() { return html`<section data-screen="todo"><h1>TenantScreen</h1></section>`; }
