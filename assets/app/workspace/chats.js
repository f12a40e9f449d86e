// PLACEHOLDER: replaced by the real screens.
import { html } from '../../vendor/htm-preact.module.js';
export function ChatsScreen() { return html`<section data-screen="todo"><h1>ChatsScreen</h1></section>`; }
