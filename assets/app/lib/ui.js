// Components every screen shares: loading, error and empty states, labelled fields, dialogs,
// banners, toasts, and the useAsync hook that gives a screen its three states.
import { html, useCallback, useEffect, useRef, useState } from '../../vendor/htm-preact.module.js';
import { describe } from './api.js';

/** A screen's data: {data, error, loading, reload, setData}. `load` gets an AbortSignal. */
export function useAsync(load, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const ctl = new AbortController();
    setState((s) => ({ ...s, loading: true, error: null }));
    Promise.resolve()
      .then(() => load(ctl.signal))
      .then(
        (data) => ctl.signal.aborted || setState({ data, error: null, loading: false }),
        (error) => ctl.signal.aborted || (error && error.name === 'AbortError') || setState({ data: null, error, loading: false }),
      );
    return () => ctl.abort();
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  const setData = useCallback((f) => setState((s) => ({ ...s, data: typeof f === 'function' ? f(s.data) : f })), []);
  return { ...state, reload, setData };
}

export function Loading({ label = 'Loading…' }) {
  return html`<p class="loading" role="status"><span class="spinner" aria-hidden="true"></span>${label}</p>`;
}

export function ErrorBox({ error, retry }) {
  if (!error) return null;
  return html`<div class="error-box" role="alert">
    <p>${describe(error)}</p>
    ${retry && html`<button type="button" class="secondary" onClick=${retry}>Try again</button>`}
  </div>`;
}

export function Empty({ children }) {
  return html`<div class="empty"><p>${children}</p></div>`;
}

/** The three states of a useAsync result, then `children(data)`. */
export function Async({ state, label, children }) {
  if (state.error && !state.data) return html`<${ErrorBox} error=${state.error} retry=${state.reload} />`;
  if (state.loading && !state.data) return html`<${Loading} label=${label} />`;
  return children(state.data);
}

let fieldIds = 0;

/** A labelled input (or textarea/select via `as`), with its error announced and linked. */
export function Field({ label, error, hint, as = 'input', children, id, ...rest }) {
  const ref = useRef(id || `f${++fieldIds}`);
  const fid = ref.current;
  const described = [error && `${fid}-err`, hint && `${fid}-hint`].filter(Boolean).join(' ') || undefined;
  let control;
  if (as === 'select') {
    control = html`<select id=${fid} aria-invalid=${error ? 'true' : undefined} aria-describedby=${described} ...${rest}>${children}</select>`;
  } else if (as === 'textarea') {
    control = html`<textarea id=${fid} aria-invalid=${error ? 'true' : undefined} aria-describedby=${described} ...${rest}></textarea>`;
  } else {
    control = html`<input id=${fid} aria-invalid=${error ? 'true' : undefined} aria-describedby=${described} ...${rest} />`;
  }
  return html`<div class="field">
    <label for=${fid}>${label}</label>
    ${control}
    ${hint && html`<p class="hint" id=${`${fid}-hint`}>${hint}</p>`}
    ${error && html`<p class="field-error" id=${`${fid}-err`}>${error}</p>`}
  </div>`;
}

/** A field's error from an ApiError's `fields`, if the API named it. */
export function fieldError(error, name) {
  return error && error.fields ? error.fields[name] : undefined;
}

/** A modal dialog on the native <dialog>: focus moves in, Escape closes, focus returns. */
export function Dialog({ title, onClose, children, wide }) {
  const ref = useRef(null);
  useEffect(() => {
    const d = ref.current;
    const opener = document.activeElement;
    if (d && !d.open) d.showModal();
    const first = d && d.querySelector('input, select, textarea, button:not(.dialog-close)');
    if (first) first.focus();
    return () => {
      if (opener && opener.focus) opener.focus();
    };
  }, []);
  const id = useRef(`dlg${++fieldIds}`).current;
  return html`<dialog ref=${ref} class=${wide ? 'wide' : ''} aria-labelledby=${id} onCancel=${(e) => {
    e.preventDefault();
    onClose();
  }}>
    <div class="dialog-head">
      <h2 id=${id}>${title}</h2>
      <button type="button" class="dialog-close icon" aria-label="Close" onClick=${onClose}>×</button>
    </div>
    ${children}
  </dialog>`;
}

/** A confirmation dialog; `typed` asks the person to type a word first (for destructive acts). */
export function Confirm({ title, children, action = 'Confirm', danger, typed, onConfirm, onClose }) {
  const [text, setText] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const ok = !typed || text === typed;
  const submit = async (e) => {
    e.preventDefault();
    if (!ok) return;
    setBusy(true);
    setError(null);
    try {
      await onConfirm();
      onClose();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return html`<${Dialog} title=${title} onClose=${onClose}>
    <form onSubmit=${submit}>
      ${children}
      ${typed && html`<${Field} label=${`Type ${typed} to confirm`} value=${text} autocomplete="off" onInput=${(e) => setText(e.target.value)} />`}
      <${ErrorBox} error=${error} />
      <div class="actions">
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
        <button type="submit" class=${danger ? 'danger' : ''} disabled=${!ok || busy}>${busy ? 'Working…' : action}</button>
      </div>
    </form>
  <//>`;
}

export function Banner({ kind = 'info', children }) {
  return html`<div class=${`banner ${kind}`} role=${kind === 'error' || kind === 'warning' ? 'alert' : 'status'}>${children}</div>`;
}

const toastSubscribers = new Set();
let toastId = 0;

/** Shows a short message in the page's live region. */
export function toast(text, kind = 'info') {
  const t = { id: ++toastId, text, kind };
  toastSubscribers.forEach((fn) => fn(t));
}

export function Toasts() {
  const [items, setItems] = useState([]);
  useEffect(() => {
    const add = (t) => {
      setItems((xs) => [...xs, t]);
      setTimeout(() => setItems((xs) => xs.filter((x) => x.id !== t.id)), 5000);
    };
    toastSubscribers.add(add);
    return () => toastSubscribers.delete(add);
  }, []);
  return html`<div class="toasts" aria-live="polite" role="status">
    ${items.map((t) => html`<p key=${t.id} class=${`toast ${t.kind}`}>${t.text}</p>`)}
  </div>`;
}

/**
 * A form's submission: `run(event?)` stops the page from reloading, marks it busy, awaits `action`
 * and keeps its error for the form to show. `{busy, error, run}`.
 */
export function useSubmit(action) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async (e) => {
    if (e && e.preventDefault) e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (err) {
      setError(err);
    }
    setBusy(false);
  };
  return { busy, error, run };
}

/**
 * Calls `fn` every `ms` and whenever the tab gets the focus back, while mounted: how a page
 * notices what no event tells it (a company suspended or activated).
 */
export function useEvery(ms, fn) {
  useEffect(() => {
    const timer = setInterval(fn, ms);
    addEventListener('focus', fn);
    return () => {
      clearInterval(timer);
      removeEventListener('focus', fn);
    };
  }, [ms, fn]);
}

/**
 * Copies `text` to the clipboard and says so (`what`: "Link", "Secret"...); true when it
 * worked, false after asking the person to copy it by hand (a page without clipboard access).
 */
export async function copyText(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    toast(`${what} copied.`);
    return true;
  } catch {
    toast(`Copying failed: select the ${what.toLowerCase()} and copy it by hand.`, 'error');
    return false;
  }
}

/** A submit button that says it is working. */
export function Submit({ busy, children, ...rest }) {
  return html`<button type="submit" disabled=${busy} aria-busy=${busy ? 'true' : undefined} ...${rest}>${busy ? 'Working…' : children}</button>`;
}

let dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
let timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });
let dayOf = null;
/** The company's settings as formatTime and formatMoney apply them (see setFormatting). */
let formatting = { locale: undefined, timeZone: undefined, dateFormat: null };

/** The order of day, month and year each named date format writes, and its separator. */
const DATE_ORDERS = { iso: [['year', 'month', 'day'], '-'], dmy: [['day', 'month', 'year'], '/'], mdy: [['month', 'day', 'year'], '/'] };

/**
 * Dates and money from now on in the company's locale, time zone and date format
 * (`{locale, timezone, date_format}` from /api/settings); a value the browser does not know
 * leaves its own default in place.
 */
export function setFormatting({ locale, timezone, date_format: dateFormat } = {}) {
  const next = { locale: undefined, timeZone: undefined, dateFormat: DATE_ORDERS[dateFormat] ? dateFormat : null };
  try {
    next.locale = Intl.getCanonicalLocales(locale)[0];
  } catch {
    // The browser's own.
  }
  try {
    new Intl.DateTimeFormat('en', { timeZone: timezone });
    next.timeZone = timezone;
  } catch {
    // The browser's own.
  }
  formatting = next;
  const zone = { timeZone: next.timeZone };
  timeOnly = new Intl.DateTimeFormat(next.locale, { ...zone, timeStyle: 'short' });
  dateTime = new Intl.DateTimeFormat(next.locale, { ...zone, dateStyle: 'medium', timeStyle: 'short' });
  dayOf = new Intl.DateTimeFormat('en', { ...zone, year: 'numeric', month: '2-digit', day: '2-digit' });
}

/** A date and time in the named date format, in the company's time zone. */
function formatDate(d) {
  const [order, sep] = DATE_ORDERS[formatting.dateFormat];
  const parts = Object.fromEntries(dayOf.formatToParts(d).map((p) => [p.type, p.value]));
  return `${order.map((k) => parts[k]).join(sep)} ${timeOnly.format(d)}`;
}

/** The calendar day of a date where the company is, to tell today from other days. */
const dayKey = (d) => (dayOf ? dayOf.format(d) : d.toDateString());

/** An audit detail `{from, to}` (a rename records one per field it changed) as "from → to"; else undefined. */
export function changeText(v) {
  if (!v || typeof v !== 'object' || Object.keys(v).sort().join() !== 'from,to') return undefined;
  return `${v.from} → ${v.to}`;
}

/** A time from the API (unix seconds, or an ISO/SQLite text) for a person. */
export function formatTime(value, { short = false } = {}) {
  if (value === null || value === undefined || value === '') return '';
  let d;
  if (typeof value === 'number') d = new Date(value * 1000);
  else d = new Date(/^\d{4}-\d\d-\d\d \d/.test(value) ? value.replace(' ', 'T') + 'Z' : value);
  if (isNaN(d)) return String(value);
  if (short && dayKey(new Date()) === dayKey(d)) return timeOnly.format(d);
  return formatting.dateFormat ? formatDate(d) : dateTime.format(d);
}

/** How many minor-unit digits a currency has (2 for EUR, 0 for JPY, 3 for BHD), as ISO 4217 says. */
export function currencyDigits(currency) {
  try {
    return new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits;
  } catch {
    return 2;
  }
}

/** Minor units as an exact decimal text: (123456, 2) -> "1234.56", without float arithmetic. */
export function minorToDecimal(minor, digits) {
  const sign = minor < 0 ? '-' : '';
  const s = String(Math.abs(minor));
  if (!digits) return sign + s;
  const padded = s.padStart(digits + 1, '0');
  return `${sign}${padded.slice(0, -digits)}.${padded.slice(-digits)}`;
}

/** An amount in minor units (cents for EUR, yen for JPY) with its currency. */
export function formatMoney(minor, currency) {
  if (minor === null || minor === undefined) return '';
  const code = currency || 'USD';
  // A decimal string is formatted exactly (Intl.NumberFormat v3); no division by 100 in floats.
  const text = minorToDecimal(minor, currencyDigits(code));
  try {
    return new Intl.NumberFormat(formatting.locale, { style: 'currency', currency: code }).format(text);
  } catch {
    return `${text} ${code}`;
  }
}

/** Bytes for a person. */
export function formatBytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}
