// PLACEHOLDER: replaced by the real screens.
import { html } from '../../vendor/htm-preact.module.js';
export function OrdersScreen() { return html`<section data-screen="todo"><h1>OrdersScreen</h1></section>`; }
export function OrderScreen() { return html`<section data-screen="todo"><h1>OrderScreen</h1></section>`; }
