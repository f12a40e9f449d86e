// PLACEHOLDER: replaced by the real screens.
import { html } from '../../vendor/htm-preact.module.js';
export function TwoFactorScreen() { return html`<section data-screen="todo"><h1>TwoFactorScreen</h1></section>`; }
