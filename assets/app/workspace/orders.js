// A company's orders: the list (status filter, search, sort and paging, all kept in the URL's
// query), one order's page (its fields, the workflow's next steps, its history, its files from
// workspace/files.js), the create and edit forms, and live updates from the company's orders
// channel. Everything shown comes from the API, which shapes each order by the member's
// permissions: a simple view's answers hold no amount, customer or notes, so nothing here can
// show them; the UI only hides the controls a member may not use.
import { html, useCallback, useEffect, useRef, useState } from '../../vendor/htm-preact.module.js';
import { api } from '../lib/api.js';
import { useReconnect } from '../lib/realtime.js';
import { Link, href, navigate } from '../lib/router.js';
import { OrderFiles } from './files.js';
import {
  Async, Banner, Confirm, Dialog, Empty, ErrorBox, Field, Loading, Submit, currencyDigits,
  formatMoney, formatTime, minorToDecimal, toast, useAsync,
} from '../lib/ui.js';

const PAGE_SIZE = 25;

export const STATUSES = [
  ['new', 'New'],
  ['confirmed', 'Confirmed'],
  ['in_progress', 'In progress'],
  ['shipped', 'Shipped'],
  ['delivered', 'Delivered'],
  ['cancelled', 'Cancelled'],
];
const STATUS_LABEL = Object.fromEntries(STATUSES);

/** The workflow's next steps (orders_validate / OrderStatus::can_become): [status, button]. */
const NEXT_STEPS = {
  new: [['confirmed', 'Confirm']],
  confirmed: [['in_progress', 'Start']],
  in_progress: [['shipped', 'Ship']],
  shipped: [['delivered', 'Deliver']],
  delivered: [],
  cancelled: [],
};
const CANCELLABLE = ['new', 'confirmed', 'in_progress', 'shipped'];

const SORTS = [
  ['-created_at', 'Newest first'],
  ['created_at', 'Oldest first'],
  ['-updated_at', 'Recently updated'],
  ['updated_at', 'Least recently updated'],
  ['-number', 'Number, high to low'],
  ['number', 'Number, low to high'],
];
const DEFAULT_SORT = '-created_at';

/** Currencies offered in the form; an order in another one keeps it (added to the list). */
const CURRENCIES = ['EUR', 'USD', 'GBP', 'CHF', 'JPY', 'CAD', 'AUD', 'NZD', 'SEK', 'NOK', 'DKK', 'PLN', 'CZK', 'HUF', 'INR', 'CNY', 'BRL', 'MXN', 'ZAR'];

const VIEW_PERMISSIONS = ['orders_view', 'orders_view_all', 'orders_simple_view', 'orders_simple_view_all'];
const canView = (ctx) => VIEW_PERMISSIONS.some((p) => ctx.can(p));
/** Whether the member may see full fields of at least some orders (own or all). */
const seesFull = (ctx) => ctx.can('orders_view') || ctx.can('orders_view_all');
const isFull = (order) => order && Object.prototype.hasOwnProperty.call(order, 'amount_minor');

const dayMonth = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const dayMonthYear = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });

/** A compact time for a table cell (today's time, else the day), the full one on hover. */
function CellTime({ value }) {
  const d = new Date(value);
  let text = formatTime(value, { short: true });
  if (!isNaN(d) && new Date().toDateString() !== d.toDateString()) {
    text = (d.getFullYear() === new Date().getFullYear() ? dayMonth : dayMonthYear).format(d);
  }
  return html`<time datetime=${value} title=${formatTime(value)}>${text}</time>`;
}

function StatusBadge({ status }) {
  return html`<span class=${`status ${status}`}>${STATUS_LABEL[status] || status}</span>`;
}

/**
 * The members' names by user id, for assignees and history; only asked for by members who may
 * list members (others see "You" or "Member #id").
 */
const memberCache = new Map();
function useMembers(ctx) {
  const allowed = ctx.can('members_view') || ctx.can('members_manage');
  const key = ctx.tenant.id;
  const [members, setMembers] = useState(() => (memberCache.get(key) instanceof Array ? memberCache.get(key) : null));
  useEffect(() => {
    if (!allowed || members) return;
    let live = true;
    if (!memberCache.has(key)) {
      memberCache.set(key, api('GET', '/api/members').then((a) => a.members.map((m) => m.user), () => null));
    }
    Promise.resolve(memberCache.get(key)).then((list) => {
      if (list) memberCache.set(key, list);
      else memberCache.delete(key);
      if (live) setMembers(list || []);
    });
    return () => {
      live = false;
    };
  }, [allowed, key]);
  const name = useCallback(
    (id) => {
      if (id === null || id === undefined) return '';
      if (id === ctx.me.user.id) return 'You';
      const m = (members || []).find((u) => u.id === id);
      // With the whole member list, someone not in it is no longer in the company (a deleted
      // account keeps the orders it made); without it we cannot tell.
      if (!m) return members ? 'Deleted user' : `Member #${id}`;
      return [m.name, m.surname].filter(Boolean).join(' ') || m.email;
    },
    [members, ctx.me.user.id],
  );
  return { members: members || [], name };
}

/**
 * Live order events on `private-company.<id>.orders`, for members who may hold it (any order
 * view permission, as broadcasting.rs decides). Events carry only id, number, status and
 * updated_at; the handler reads the rest through the API, in the member's own shape.
 * Returns the subscription state: "off", "connecting" or "live".
 */
function useOrderEvents(ctx, onEvent) {
  const [state, setState] = useState('off');
  const handler = useRef(onEvent);
  handler.current = onEvent;
  useEffect(() => {
    if (!ctx.echo || !canView(ctx)) return undefined;
    const name = `${ctx.channel}.orders`;
    setState('connecting');
    const channel = ctx.echo.private(name);
    channel.subscribed(() => setState('live'));
    channel.error(() => setState('off'));
    for (const kind of ['created', 'updated', 'deleted']) {
      channel.listen(`.order.${kind}`, (data) => handler.current(kind, data || {}));
    }
    return () => {
      ctx.echo.leave(name);
      setState('off');
    };
  }, [ctx.echo, ctx.channel]);
  // Events sent while the connection was down are lost: read again once it is back.
  useReconnect(useCallback(() => handler.current('reconnected', {}), []));
  return state;
}

/** The list's query (status, q, sort, cursor) from and to the URL. */
function readQuery() {
  const p = new URLSearchParams(location.search);
  return {
    status: p.get('status') || '',
    q: p.get('q') || '',
    sort: p.get('sort') || DEFAULT_SORT,
    cursor: p.get('cursor') || '',
  };
}

function queryString({ status, q, sort, cursor }) {
  const p = new URLSearchParams();
  if (status) p.set('status', status);
  if (q) p.set('q', q);
  if (sort && sort !== DEFAULT_SORT) p.set('sort', sort);
  if (cursor) p.set('cursor', cursor);
  const s = p.toString();
  return s ? `?${s}` : '';
}

/** Where "All orders" goes back to: the list as it was last shown. */
let lastListQuery = '';

function useListQuery() {
  const [query, setQuery] = useState(readQuery);
  useEffect(() => {
    const onPop = () => setQuery(readQuery());
    addEventListener('popstate', onPop);
    return () => removeEventListener('popstate', onPop);
  }, []);
  const update = useCallback((change, { replace = false } = {}) => {
    const next = { ...readQuery(), cursor: '', ...change };
    const url = href('/orders') + queryString(next);
    if (replace) history.replaceState(null, '', url);
    else history.pushState(null, '', url);
    setQuery(next);
  }, []);
  lastListQuery = queryString(query);
  return [query, update];
}

function NoPermission() {
  return html`<section data-screen="orders" aria-labelledby="orders-title">
    <h1 id="orders-title">Orders</h1>
    <${Empty}>You do not have permission to see orders. Ask an administrator of this company.<//>
  </section>`;
}

export function OrdersScreen({ ctx }) {
  if (!canView(ctx)) return html`<${NoPermission} />`;
  return html`<${OrdersList} ctx=${ctx} />`;
}

function OrdersList({ ctx }) {
  const [query, setQuery] = useListQuery();
  const [creating, setCreating] = useState(false);
  // Cursors of the pages before this one, to go back; a reloaded page starts a new trail.
  const [trail, setTrail] = useState([]);
  const [flash, setFlash] = useState({});
  const [said, setSaid] = useState('');
  const { members, name } = useMembers(ctx);
  const full = seesFull(ctx);

  const state = useAsync(
    (signal) => {
      const p = new URLSearchParams({ limit: String(PAGE_SIZE), sort: query.sort });
      if (query.status) p.set('status', query.status);
      if (query.q) p.set('q', query.q);
      if (query.cursor) p.set('cursor', query.cursor);
      return api('GET', `/api/orders?${p}`, undefined, { signal });
    },
    [query.status, query.q, query.sort, query.cursor],
  );

  // Another member's change: read the page again (in this member's own shape), mark the row.
  const reloadSoon = useRef(null);
  const live = useOrderEvents(ctx, (kind, event) => {
    clearTimeout(reloadSoon.current);
    reloadSoon.current = setTimeout(state.reload, 150);
    if (kind === 'reconnected') return;
    if (event.id) {
      setFlash((f) => ({ ...f, [event.id]: kind }));
      setTimeout(() => setFlash((f) => {
        const { [event.id]: _, ...rest } = f;
        return rest;
      }), 4000);
    }
    const number = event.number || 'An order';
    setSaid(kind === 'created' ? `${number} was created.` : kind === 'deleted' ? 'An order was deleted.' : `${number} was updated.`);
  });
  useEffect(() => () => clearTimeout(reloadSoon.current), []);

  const [search, setSearch] = useState(query.q);
  useEffect(() => setSearch(query.q), [query.q]);
  const searchTimer = useRef(null);
  const onSearch = (e) => {
    const value = e.target.value;
    setSearch(value);
    clearTimeout(searchTimer.current);
    searchTimer.current = setTimeout(() => {
      setTrail([]);
      setQuery({ q: value.trim() }, { replace: true });
    }, 300);
  };
  const submitSearch = (e) => {
    e.preventDefault();
    clearTimeout(searchTimer.current);
    setTrail([]);
    setQuery({ q: search.trim() });
  };
  const filtered = query.status || query.q;

  const sortBy = (column) => {
    const current = query.sort.replace(/^-/, '');
    const descending = query.sort.startsWith('-');
    // A column's first click: numbers low to high, times newest first.
    const next = current === column ? (descending ? column : `-${column}`) : column === 'number' ? 'number' : `-${column}`;
    setTrail([]);
    setQuery({ sort: next });
  };
  const ariaSort = (column) => {
    if (query.sort.replace(/^-/, '') !== column) return 'none';
    return query.sort.startsWith('-') ? 'descending' : 'ascending';
  };
  const SortHeader = ({ column, label, className }) => html`<th scope="col" class=${className} aria-sort=${ariaSort(column)}>
    <button type="button" class="sort" onClick=${() => sortBy(column)}>
      ${label}<span class="sort-mark" aria-hidden="true">${ariaSort(column) === 'ascending' ? ' ▲' : ariaSort(column) === 'descending' ? ' ▼' : ' ↕'}</span>
    </button>
  </th>`;

  const created = (order) => {
    setCreating(false);
    toast(`${order.number} created.`);
    if (order.status) navigate(`/orders/${order.id}`);
    else state.reload();
  };

  return html`<section class="orders" data-screen="orders" data-live=${live} aria-labelledby="orders-title">
    <div class="page-head">
      <h1 id="orders-title">Orders</h1>
      ${ctx.can('orders_create') && html`<button type="button" disabled=${ctx.readOnly} title=${ctx.readOnly ? 'The company is read-only' : undefined} onClick=${() => setCreating(true)}><span aria-hidden="true">+</span> New order</button>`}
    </div>
    <form class="toolbar orders-toolbar" role="search" aria-label="Filter orders" onSubmit=${submitSearch}>
      <${Field} label="Search" type="search" value=${search} onInput=${onSearch}
        hint=${full ? 'Number, title or customer' : 'Number or title'} autocomplete="off" />
      <${Field} label="Status" as="select" value=${query.status} onChange=${(e) => {
        setTrail([]);
        setQuery({ status: e.target.value });
      }}>
        <option value="">All statuses</option>
        ${STATUSES.map(([value, label]) => html`<option key=${value} value=${value}>${label}</option>`)}
      <//>
      <${Field} label="Sort by" as="select" value=${query.sort} onChange=${(e) => {
        setTrail([]);
        setQuery({ sort: e.target.value });
      }}>
        ${SORTS.map(([value, label]) => html`<option key=${value} value=${value}>${label}</option>`)}
      <//>
    </form>
    <p class="visually-hidden" aria-live="polite">${said}</p>
    <${Async} state=${state} label="Loading orders…">
      ${(page) => html`
        ${state.error && html`<${ErrorBox} error=${state.error} retry=${state.reload} />`}
        ${page.orders.length === 0
          ? html`<${Empty}>${filtered ? 'No orders match these filters.' : 'No orders yet.'}
              ${filtered && html` <button type="button" class="link" onClick=${() => {
                setTrail([]);
                setSearch('');
                setQuery({ status: '', q: '' });
              }}>Clear the filters</button>`}<//>`
          : html`<div class="table-wrap orders-table" aria-busy=${state.loading ? 'true' : 'false'}>
              <table>
                <caption class="visually-hidden">Orders, ${SORTS.find(([v]) => v === query.sort)?.[1] || ''}</caption>
                <thead><tr>
                  <${SortHeader} column="number" label="Number" />
                  <th scope="col">Title</th>
                  ${full && html`<th scope="col">Customer</th>`}
                  <th scope="col">Status</th>
                  <th scope="col">Assignee</th>
                  ${full && html`<th scope="col" class="num">Amount</th>`}
                  <${SortHeader} column="created_at" label="Created" />
                  <${SortHeader} column="updated_at" label="Updated" />
                </tr></thead>
                <tbody>
                  ${page.orders.map((o) => html`<tr key=${o.id} data-testid="order-row" data-order-id=${o.id} class=${flash[o.id] ? 'flash' : ''}>
                    <td data-label="Number" class="order-number"><${Link} to=${`/orders/${o.id}`}>${o.number}<//></td>
                    <td data-label="Title" class="order-title">${o.title}</td>
                    ${full && html`<td data-label="Customer">${isFull(o) ? o.customer_name : html`<span class="muted">—</span>`}</td>`}
                    <td data-label="Status"><${StatusBadge} status=${o.status} /></td>
                    <td data-label="Assignee">${o.assigned_to ? name(o.assigned_to) : html`<span class="muted">Unassigned</span>`}</td>
                    ${full && html`<td data-label="Amount" class="num">${isFull(o) ? formatMoney(o.amount_minor, o.currency) : html`<span class="muted">—</span>`}</td>`}
                    <td data-label="Created"><${CellTime} value=${o.created_at} /></td>
                    <td data-label="Updated"><${CellTime} value=${o.updated_at} /></td>
                  </tr>`)}
                </tbody>
              </table>
            </div>`}
        <nav class="pager" aria-label="Pages of orders">
          <span class="muted">${page.orders.length ? `${page.orders.length} order${page.orders.length === 1 ? '' : 's'} on this page` : ''}</span>
          <span class="pager-buttons">
            ${query.cursor && !trail.length && html`<button type="button" class="secondary" onClick=${() => setQuery({ cursor: '' })}>First page</button>`}
            ${trail.length > 0 && html`<button type="button" class="secondary" onClick=${() => {
              const prev = trail[trail.length - 1];
              setTrail(trail.slice(0, -1));
              setQuery({ cursor: prev });
            }}>Previous page</button>`}
            ${page.next && html`<button type="button" class="secondary" onClick=${() => {
              setTrail([...trail, query.cursor]);
              setQuery({ cursor: page.next });
            }}>Next page</button>`}
          </span>
        </nav>`}
    <//>
    ${creating && html`<${OrderForm} ctx=${ctx} members=${members} onClose=${() => setCreating(false)} onSaved=${created} />`}
  </section>`;
}

/**
 * A decimal amount typed by a person as minor units, exactly: "1234.5" in EUR is 123450. The
 * text is split, never parsed as a float. Returns {minor} or {error}.
 */
export function parseAmount(text, currency) {
  const digits = currencyDigits(currency);
  const s = String(text || '').replace(/[\s_]/g, '');
  if (!s) return { error: 'Enter an amount.' };
  const m = /^(\d+)(?:[.,](\d*))?$/.exec(s);
  if (!m) return { error: digits ? 'Enter a number such as 1234.50.' : 'Enter a whole number such as 1234.' };
  const [, whole, frac = ''] = m;
  if (frac.length > digits) {
    return { error: digits ? `${currency} has ${digits} decimal place${digits === 1 ? '' : 's'} at most.` : `${currency} has no decimal places.` };
  }
  const minorText = (whole + frac.padEnd(digits, '0')).replace(/^0+(?=\d)/, '');
  if (minorText.length > 15 || Number(minorText) > 999_999_999_999_999) return { error: 'That amount is too large.' };
  return { minor: Number(minorText) };
}

/** The API's field names as the form's. */
const FORM_FIELD = { amount_minor: 'amount' };

/**
 * Create (no `order`) or edit. Editing an order seen in the simple view offers only its simple
 * fields; the form never holds a value the member was not given.
 */
function OrderForm({ ctx, order, members, onClose, onSaved }) {
  const editing = !!order;
  const full = editing ? isFull(order) : true;
  const initial = {
    title: order?.title || '',
    customer_name: order?.customer_name || '',
    customer_email: order?.customer_email || '',
    customer_phone: order?.customer_phone || '',
    currency: order?.currency || 'EUR',
    amount: full && editing ? minorToDecimal(order.amount_minor, currencyDigits(order.currency)) : '',
    assigned_to: order?.assigned_to ? String(order.assigned_to) : '',
    notes: order?.notes || '',
  };
  const [values, setValues] = useState(initial);
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (name) => (e) => setValues((v) => ({ ...v, [name]: e.target.value }));
  const assignable = members.length > 0;
  const currencies = CURRENCIES.includes(values.currency) ? CURRENCIES : [values.currency, ...CURRENCIES];

  const submit = async (e) => {
    e.preventDefault();
    const local = {};
    if (!values.title.trim()) local.title = 'Enter a title.';
    let amount;
    if (full) {
      if (!values.customer_name.trim()) local.customer_name = 'Enter the customer’s name.';
      amount = parseAmount(values.amount, values.currency);
      if (amount.error) local.amount = amount.error;
    }
    setErrors(local);
    setError(null);
    if (Object.keys(local).length) {
      focusFirstError(e.target);
      return;
    }
    const body = { title: values.title.trim() };
    if (assignable) body.assigned_to = values.assigned_to ? Number(values.assigned_to) : null;
    if (full) {
      Object.assign(body, {
        customer_name: values.customer_name.trim(),
        customer_email: values.customer_email.trim() || null,
        customer_phone: values.customer_phone.trim() || null,
        amount_minor: amount.minor,
        currency: values.currency,
        notes: values.notes,
      });
    }
    if (editing) {
      // Only what changed: a patch of unchanged fields records nothing, and a field left alone
      // is never written back over someone else's change.
      for (const k of Object.keys(body)) {
        const was = order[k] === undefined ? null : order[k];
        const now = body[k];
        if (was === now || ((was === null || was === '') && (now === null || now === ''))) delete body[k];
      }
      if (!Object.keys(body).length) {
        onClose();
        return;
      }
    } else if (!assignable || body.assigned_to === null) {
      delete body.assigned_to;
    }
    setBusy(true);
    try {
      const saved = editing ? await api('PATCH', `/api/orders/${order.id}`, body) : await api('POST', '/api/orders', body);
      onSaved(saved);
    } catch (err) {
      setBusy(false);
      if (err.fields) {
        const mapped = {};
        const unplaced = {};
        for (const [k, why] of Object.entries(err.fields)) {
          const name = FORM_FIELD[k] || k;
          if (name in values) mapped[name] = capitalise(why);
          else unplaced[k] = why;
        }
        setErrors(mapped);
        if (Object.keys(unplaced).length) setError({ ...err, fields: unplaced, message: err.message, code: err.code });
        else setError(null);
        focusFirstError(e.target);
      } else {
        setError(err);
      }
    }
  };

  return html`<${Dialog} title=${editing ? `Edit ${order.number}` : 'New order'} onClose=${onClose} wide>
    <form class="order-form" onSubmit=${submit} noValidate>
      ${Object.keys(errors).length > 0 && html`<p class="form-problems" role="alert">Some fields need your attention.</p>`}
      <div class="form-grid">
        <${Field} label="Title" value=${values.title} onInput=${set('title')} error=${errors.title} maxLength="200" required />
        ${full && html`
          <${Field} label="Customer name" value=${values.customer_name} onInput=${set('customer_name')} error=${errors.customer_name} maxLength="200" autocomplete="off" required />
          <${Field} label="Customer email" type="email" value=${values.customer_email} onInput=${set('customer_email')} error=${errors.customer_email} autocomplete="off" hint="Optional" />
          <${Field} label="Customer phone" type="tel" value=${values.customer_phone} onInput=${set('customer_phone')} error=${errors.customer_phone} autocomplete="off" hint="Optional" />
          <div class="amount-pair">
            <${Field} label="Amount" value=${values.amount} onInput=${set('amount')} error=${errors.amount} inputmode="decimal" autocomplete="off"
              hint=${currencyDigits(values.currency) ? 'For example 1234.50' : 'A whole number'} required />
            <${Field} label="Currency" as="select" value=${values.currency} onChange=${set('currency')} error=${errors.currency}>
              ${currencies.map((c) => html`<option key=${c} value=${c}>${c}</option>`)}
            <//>
          </div>`}
        ${assignable && html`<${Field} label="Assignee" as="select" value=${values.assigned_to} onChange=${set('assigned_to')} error=${errors.assigned_to}>
          <option value="">Unassigned</option>
          ${members.map((u) => html`<option key=${u.id} value=${String(u.id)}>${[u.name, u.surname].filter(Boolean).join(' ') || u.email}</option>`)}
        <//>`}
        ${full && html`<${Field} label="Notes" as="textarea" value=${values.notes} onInput=${set('notes')} error=${errors.notes} hint="Optional" />`}
      </div>
      <${ErrorBox} error=${error} />
      <div class="actions">
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
        <${Submit} busy=${busy}>${editing ? 'Save changes' : 'Create order'}<//>
      </div>
    </form>
  <//>`;
}

function focusFirstError(form) {
  // After Preact has rendered the errors.
  setTimeout(() => {
    const bad = form.querySelector('[aria-invalid="true"]');
    if (bad) bad.focus();
  }, 0);
}

function capitalise(s) {
  const t = String(s);
  return t.charAt(0).toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? '' : '.');
}

export function OrderScreen({ ctx, orderId }) {
  if (!canView(ctx)) return html`<${NoPermission} />`;
  return html`<${OrderPage} key=${orderId} ctx=${ctx} orderId=${orderId} />`;
}

function OrderPage({ ctx, orderId }) {
  const order = useAsync((signal) => api('GET', `/api/orders/${orderId}`, undefined, { signal }), [orderId]);
  const history = useAsync((signal) => api('GET', `/api/orders/${orderId}/history`, undefined, { signal }), [orderId]);
  const { members, name } = useMembers(ctx);
  const [editing, setEditing] = useState(false);
  const [confirm, setConfirm] = useState(null);
  const [busy, setBusy] = useState(null);
  const [actionError, setActionError] = useState(null);
  const [deleted, setDeleted] = useState(false);
  const [said, setSaid] = useState('');
  // No event announces a file: the files are read again after a lost connection, as the rest is.
  const [filesVersion, setFilesVersion] = useState(0);

  const live = useOrderEvents(ctx, (kind, event) => {
    if (kind === 'reconnected') {
      order.reload();
      history.reload();
      setFilesVersion((v) => v + 1);
      return;
    }
    if (event.id !== orderId) return;
    if (kind === 'deleted') {
      setDeleted(true);
      setSaid('This order was deleted by someone else.');
    } else if (kind === 'updated') {
      order.reload();
      history.reload();
      setSaid(`${event.number || 'This order'} was changed by someone else.`);
    }
  });

  const apply = (saved) => {
    // A write that took the order out of this member's sight answers only id and number.
    if (!saved.status) {
      toast(`${saved.number} saved; it is no longer among the orders you see.`);
      navigate('/orders' + lastListQuery);
      return;
    }
    order.setData(saved);
    history.reload();
  };

  const setStatus = async (status) => {
    setBusy(status);
    setActionError(null);
    try {
      const saved = await api('PATCH', `/api/orders/${orderId}`, { status });
      apply(saved);
      toast(`${saved.number}: ${STATUS_LABEL[status].toLowerCase()}.`);
    } catch (err) {
      setActionError(err);
      if (err.code === 'validation_failed' || err.status === 409) order.reload();
    } finally {
      setBusy(null);
    }
  };

  const back = html`<p class="back-link"><${Link} to=${'/orders' + lastListQuery}>← All orders<//></p>`;
  if (order.error && !order.data) {
    return html`<section data-screen="order" aria-labelledby="order-title">
      ${back}
      <h1 id="order-title">Order</h1>
      <${ErrorBox} error=${order.error} retry=${order.error.status === 404 ? null : order.reload} />
    </section>`;
  }
  if (!order.data) {
    return html`<section data-screen="order" aria-labelledby="order-title">${back}<h1 id="order-title" class="visually-hidden">Order</h1><${Loading} label="Loading the order…" /></section>`;
  }
  const o = order.data;
  const full = isFull(o);
  const canEdit = ctx.can('orders_edit') && !deleted;
  const steps = canEdit ? NEXT_STEPS[o.status] || [] : [];
  const cancellable = canEdit && CANCELLABLE.includes(o.status);

  return html`<section class="order-page" data-screen="order" data-live=${live} data-order-id=${o.id} aria-labelledby="order-title">
    ${back}
    <p class="visually-hidden" aria-live="polite">${said}</p>
    ${deleted && html`<${Banner} kind="warning">This order was deleted by someone else. <${Link} to=${'/orders' + lastListQuery}>Back to the orders<//><//>`}
    <div class="page-head">
      <div class="order-heading">
        <h1 id="order-title"><span class="order-num">${o.number}</span> ${o.title}</h1>
        <${StatusBadge} status=${o.status} />
      </div>
      <div class="order-actions" role="group" aria-label="Order actions">
        ${steps.map(([to, label]) => html`<button type="button" key=${to} disabled=${!!busy} aria-busy=${busy === to ? 'true' : undefined}
          onClick=${() => setStatus(to)}>${busy === to ? 'Working…' : label}</button>`)}
        ${cancellable && html`<button type="button" class="secondary danger-text" disabled=${!!busy} onClick=${() => setConfirm('cancel')}>Cancel order</button>`}
        ${canEdit && html`<button type="button" class="secondary" onClick=${() => setEditing(true)}>Edit</button>`}
        ${ctx.can('orders_delete') && !deleted && html`<button type="button" class="secondary danger-text" onClick=${() => setConfirm('delete')}>Delete</button>`}
      </div>
    </div>
    <${ErrorBox} error=${actionError} />
    <${Workflow} status=${o.status} />
    <div class="order-columns">
      <div class="order-stack">
        <div class="panel">
          <h2>Details</h2>
          <dl class="details">
            <dt>Status</dt><dd><${StatusBadge} status=${o.status} /></dd>
            <dt>Assignee</dt><dd>${o.assigned_to ? name(o.assigned_to) : 'Unassigned'}</dd>
            ${full && html`
              <dt>Customer</dt><dd>${o.customer_name}</dd>
              <dt>Email</dt><dd>${o.customer_email ? html`<a href=${`mailto:${o.customer_email}`}>${o.customer_email}</a>` : html`<span class="muted">None</span>`}</dd>
              <dt>Phone</dt><dd>${o.customer_phone ? html`<a href=${`tel:${o.customer_phone.replace(/[^\d+]/g, '')}`}>${o.customer_phone}</a>` : html`<span class="muted">None</span>`}</dd>
              <dt>Amount</dt><dd class="amount">${formatMoney(o.amount_minor, o.currency)}</dd>
              <dt>Created by</dt><dd>${name(o.created_by)}</dd>`}
            <dt>Created</dt><dd><time datetime=${o.created_at}>${formatTime(o.created_at)}</time></dd>
            <dt>Updated</dt><dd><time datetime=${o.updated_at}>${formatTime(o.updated_at)}</time></dd>
          </dl>
          ${full && html`<h3>Notes</h3>${o.notes ? html`<p class="notes">${o.notes}</p>` : html`<p class="muted">No notes.</p>`}`}
        </div>
        <${OrderFiles} ctx=${ctx} orderId=${o.id} canAttach=${canEdit} name=${name} version=${filesVersion} />
      </div>
      <div class="panel">
        <h2>History</h2>
        <${Async} state=${history} label="Loading the history…">
          ${(h) => h.history.length === 0
            ? html`<p class="muted">No changes recorded.</p>`
            : html`<ol class="history" data-testid="history">
                ${[...h.history].reverse().map((ev) => html`<li key=${ev.id} data-field=${ev.field}>
                  <p class="history-what"><strong>${name(ev.user_id)}</strong> ${describeEvent(ev, o, name)}</p>
                  <p class="history-when"><time datetime=${ev.at}>${formatTime(ev.at)}</time></p>
                </li>`)}
              </ol>`}
        <//>
      </div>
    </div>
    ${editing && html`<${OrderForm} ctx=${ctx} order=${o} members=${members} onClose=${() => setEditing(false)} onSaved=${(saved) => {
      setEditing(false);
      apply(saved);
      toast(`${saved.number} saved.`);
    }} />`}
    ${confirm === 'cancel' && html`<${Confirm} title=${`Cancel ${o.number}?`} action="Cancel order" danger
      onClose=${() => setConfirm(null)} onConfirm=${async () => {
        const saved = await api('PATCH', `/api/orders/${orderId}`, { status: 'cancelled' });
        apply(saved);
        toast(`${saved.number} cancelled.`);
      }}>
      <p>A cancelled order stays in the list and its history, but cannot move along the workflow again.</p>
    <//>`}
    ${confirm === 'delete' && html`<${Confirm} title=${`Delete ${o.number}?`} action="Delete order" danger
      onClose=${() => setConfirm(null)} onConfirm=${async () => {
        await api('DELETE', `/api/orders/${orderId}`);
        toast(`${o.number} deleted.`);
        navigate('/orders' + lastListQuery);
      }}>
      <p>The order and its history are deleted for everyone. Its number is not given out again.</p>
    <//>`}
  </section>`;
}

/** The workflow as steps, the current one marked; a cancelled order says so instead. */
function Workflow({ status }) {
  if (status === 'cancelled') return html`<p class="workflow-note">This order was cancelled.</p>`;
  const path = STATUSES.filter(([s]) => s !== 'cancelled');
  const at = path.findIndex(([s]) => s === status);
  return html`<ol class="workflow" aria-label="Workflow">
    ${path.map(([s, label], i) => html`<li key=${s} class=${i < at ? 'done' : i === at ? 'current' : ''} aria-current=${i === at ? 'step' : undefined}>${label}</li>`)}
  </ol>`;
}

const FIELD_WORDS = {
  title: 'the title',
  customer_name: 'the customer',
  customer_email: 'the customer email',
  customer_phone: 'the customer phone',
  currency: 'the currency',
  notes: 'the notes',
};

/** One history event in words ("changed the status from New to Confirmed"). */
function describeEvent(ev, order, name) {
  const from = ev.from_value;
  const to = ev.to_value;
  switch (ev.field) {
    case 'created':
      return 'created the order';
    case 'status':
      return html`changed the status from <${StatusBadge} status=${from} /> to <${StatusBadge} status=${to} />`;
    case 'assigned_to':
      if (!to) return `unassigned ${from ? name(Number(from)) : 'it'}`;
      return `assigned it to ${name(Number(to))}`;
    case 'amount_minor': {
      const money = (v) => (v === null ? 'nothing' : formatMoney(Number(v), order.currency));
      return `changed the amount from ${money(from)} to ${money(to)}`;
    }
    case 'notes':
      return to ? 'changed the notes' : 'cleared the notes';
    default: {
      const what = FIELD_WORDS[ev.field] || ev.field.replace(/_/g, ' ');
      if (from === null || from === '') return `set ${what} to “${to}”`;
      if (to === null || to === '') return `cleared ${what} (was “${from}”)`;
      return `changed ${what} from “${from}” to “${to}”`;
    }
  }
}
