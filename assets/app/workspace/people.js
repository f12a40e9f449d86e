// PLACEHOLDER: replaced by the real screens.
import { html } from '../../vendor/htm-preact.module.js';
export function MembersScreen() { return html`<section data-screen="todo"><h1>MembersScreen</h1></section>`; }
export function RolesScreen() { return html`<section data-screen="todo"><h1>RolesScreen</h1></section>`; }
