// PLACEHOLDER: replaced by the real screens.
import { html } from '../../vendor/htm-preact.module.js';
export function Presence() { return html`<section data-screen="todo"><h1>Presence</h1></section>`; }
