// A company's workspace: who is signed in and as what member (or why not: signed out, not a
// member, suspended), the frame around every screen (navigation, banners, presence; read-only
// while the subscription says so), and the routes to the screens beside this file.
import { html, useCallback, useEffect, useState } from '../../vendor/htm-preact.module.js';
import { api, onApiError, setCsrf } from '../lib/api.js';
import { boot } from '../lib/boot.js';
import { closeEcho, getEcho, useConnectionLost, useConnectionState } from '../lib/realtime.js';
import { Link, navigate, pick, usePath } from '../lib/router.js';
import { Banner, ErrorBox, Loading, formatTime, useEvery } from '../lib/ui.js';
import { AcceptInvitation, Card, NoMember, Profile, SignIn, Suspended, signOut } from '../account/screens.js';
import { ChatsScreen } from './chats.js';
import { OrderScreen, OrdersScreen } from './orders.js';
import { Presence } from './presence.js';
import { MembersScreen, RolesScreen } from './people.js';
import { AuditScreen } from './audit.js';
import { ExportScreen } from './export.js';
import { Logo, SettingsScreen, applySettings } from './settings.js';
import { TenantJobsScreen, WebhookScreen, WebhooksScreen } from './webhooks.js';

/** How often an open workspace asks whether its company is still active (a cached read). */
const STATUS_CHECK_MS = 10_000;

/** Asks for the company; a suspension it answers reaches the shell through onApiError. */
const checkTenant = () => api('GET', '/api/tenant').catch(() => {});

/** Whether the company may write now (`{writable, read_only: {reason, since}}`); null if unknown. */
const loadAccess = () => api('GET', '/api/subscription/access').catch(() => null);

/** Why a company is read-only, in words, with the date it happened in the company's format. */
function readOnlyWhy({ reason, since }) {
  const when = since ? ` on ${formatTime(since)}` : '';
  switch (reason) {
    case 'trial_ended':
      return `its trial ended${when}`;
    case 'past_due':
      return `its payment is overdue and the grace period ended${when}`;
    case 'canceled':
      return `its subscription was canceled${when}`;
    default:
      return 'its subscription is not active';
  }
}

/** The banner of a read-only company: what still works and who can end it. */
function ReadOnlyBanner({ access }) {
  return html`<div data-read-only=${access.read_only.reason}><${Banner} kind="error">
    <strong>This company is read-only:</strong> ${readOnlyWhy(access.read_only)}. You can still read
    everything, but nothing can be created, changed or deleted until the subscription is active again;
    ask your company's administrator.
  <//></div>`;
}

/** The signed-in person's membership of this tenant, from /api/me's pages. */
async function findMembership(me, tenantId) {
  let page = me;
  for (;;) {
    const found = (page.memberships || []).find((m) => m.tenant_id === tenantId);
    if (found || !page.next) return found || null;
    page = await api('GET', `/api/me?limit=200&after=${encodeURIComponent(page.next)}`);
  }
}

/** The workspace's state: loading, signed_out, expired, no_member, suspended, error or ready. */
async function loadSession() {
  // Both at once: a first load waits for one round trip, not two.
  const [meAnswer, tenantAnswer, settingsAnswer, accessAnswer] = await Promise.allSettled([
    api('GET', '/api/me?limit=200'),
    api('GET', '/api/tenant'),
    api('GET', '/api/settings'),
    loadAccess(),
  ]);
  if (meAnswer.status === 'rejected') {
    const err = meAnswer.reason;
    if (err.status === 401) return { state: 'signed_out' };
    if (err.code === 'tenant_suspended') return { state: 'suspended' };
    throw err;
  }
  const me = meAnswer.value;
  setCsrf(me.csrf_token);
  if (tenantAnswer.status === 'rejected') {
    const err = tenantAnswer.reason;
    if (err.code === 'not_a_member') return { state: 'no_member', me };
    if (err.code === 'tenant_suspended') return { state: 'suspended', me };
    throw err;
  }
  const tenant = tenantAnswer.value;
  const membership = await findMembership(me, tenant.id);
  if (!membership) return { state: 'no_member', me };
  const perms = membership.permissions || [];
  const can = (p) => perms.includes('*') || perms.includes(p);
  // Without its settings the workspace still opens, in the browser's own formats.
  const settings = settingsAnswer.status === 'fulfilled' ? settingsAnswer.value : null;
  applySettings(settings);
  const access = accessAnswer.status === 'fulfilled' ? accessAnswer.value : null;
  return { state: 'ready', me, tenant, membership, can, settings, access };
}

/** An impersonation ticket in the fragment (`/impersonate#ticket=...`) becomes this tab's session. */
async function exchangeTicket() {
  const ticket = new URLSearchParams(location.hash.slice(1)).get('ticket');
  if (!ticket) return;
  history.replaceState(null, '', location.pathname);
  const answer = await api('POST', '/api/auth/impersonate', { ticket });
  setCsrf(answer.csrf_token);
}

export function WorkspaceApp() {
  const path = usePath();
  const [session, setSession] = useState({ state: 'loading' });
  const [expired, setExpired] = useState(false);
  const load = useCallback(async () => {
    try {
      if (path === '/impersonate') {
        await exchangeTicket();
        navigate('/', { replace: true });
      }
      const s = await loadSession();
      setExpired(false);
      setSession(s);
    } catch (error) {
      setSession({ state: 'error', error });
    }
  }, []);
  useEffect(() => {
    load();
  }, [load]);
  // An ended session or a suspension noticed by any request changes the whole page.
  useEffect(
    () =>
      onApiError((err) => {
        if (err.code === 'unauthorized') setExpired(true);
        if (err.code === 'tenant_suspended') setSession((s) => ({ ...s, state: 'suspended' }));
      }),
    [],
  );
  const signedIn = () => load();
  // Also for someone signed in: they may accept with their own session, or as another account.
  if (path === '/invite') return html`<${AcceptInvitation} me=${session.me} onAccepted=${signedIn} />`;
  switch (session.state) {
    case 'loading':
      return html`<main class="card-page"><${Loading} label="Opening the workspace…" /></main>`;
    case 'signed_out':
      return html`<${SignIn} subtitle=${boot.tenant.slug} onSignedIn=${signedIn} />`;
    case 'no_member':
      return html`<${NoMember} me=${session.me} />`;
    case 'suspended':
      return html`<${Suspended} onActive=${load} />`;
    case 'error':
      return html`<${Card} screen="error" title="The workspace cannot be opened"><${ErrorBox} error=${session.error} retry=${load} /><//>`;
    default:
      if (expired) {
        closeEcho();
        return html`<${SignIn} subtitle=${boot.tenant.slug} notice="Your session has ended. Sign in again to go on." onSignedIn=${signedIn} />`;
      }
      return html`<${Workspace} session=${session} path=${path} onProfile=${(user) => setSession((s) => ({ ...s, me: { ...s.me, user } }))}
        onSettings=${(settings) => {
          applySettings(settings);
          setSession((s) => ({ ...s, settings }));
        }} />`;
  }
}

function Workspace({ session, path, onProfile, onSettings }) {
  const { me, tenant, membership, can, settings } = session;
  const echo = getEcho(me.csrf_token);
  const connection = useConnectionState();
  const lost = useConnectionLost();
  const [menuOpen, setMenuOpen] = useState(false);
  const [access, setAccess] = useState(session.access);
  const refreshAccess = useCallback(async () => {
    const next = await loadAccess();
    if (next) setAccess(next);
  }, []);
  // A suspension or a subscription that lapsed does not reach an idle page by itself: ask now
  // and then, and when the tab returns; a write refused for it asks at once.
  const check = useCallback(() => {
    checkTenant();
    refreshAccess();
  }, [refreshAccess]);
  useEvery(STATUS_CHECK_MS, check);
  useEffect(
    () =>
      onApiError((err) => {
        if (err.code === 'subscription_inactive') refreshAccess();
      }),
    [refreshAccess],
  );
  useEffect(() => setMenuOpen(false), [path]);
  const readOnly = !!(access && access.read_only);
  const ctx = { me, tenant, membership, can, echo, channel: `company.${tenant.id}`, readOnly };
  const screen =
    pick(
      [
        ['/', () => html`<${ChatsScreen} ctx=${ctx} />`],
        ['/chats', () => html`<${ChatsScreen} ctx=${ctx} />`],
        ['/chats/:id', ({ id }) => html`<${ChatsScreen} ctx=${ctx} chatId=${Number(id)} />`],
        ['/orders', () => html`<${OrdersScreen} ctx=${ctx} />`],
        ['/orders/:id', ({ id }) => html`<${OrderScreen} ctx=${ctx} orderId=${Number(id)} />`],
        ['/people', () => html`<${MembersScreen} ctx=${ctx} />`],
        ['/roles', () => html`<${RolesScreen} ctx=${ctx} />`],
        ['/audit', () => html`<${AuditScreen} ctx=${ctx} />`],
        ['/settings', () => html`<${WebhooksScreen} ctx=${ctx} />`],
        ['/settings/webhooks', () => html`<${WebhooksScreen} ctx=${ctx} />`],
        ['/settings/webhooks/:id', ({ id }) => html`<${WebhookScreen} ctx=${ctx} endpointId=${Number(id)} />`],
        ['/settings/jobs', () => html`<${TenantJobsScreen} ctx=${ctx} />`],
        ['/settings/export', () => html`<${ExportScreen} ctx=${ctx} />`],
        ['/settings/company', () => html`<${SettingsScreen} ctx=${ctx} onSettings=${onSettings} />`],
        ['/profile', () => html`<${Profile} me=${me} onChanged=${onProfile} />`],
      ],
      path,
    ) || html`<section data-screen="not-found"><h1>Page not found</h1><p><${Link} to="/">Go to the chats<//></p></section>`;
  const nav = [
    ['/chats', 'Chats', true],
    ['/orders', 'Orders', ['orders_view', 'orders_view_all', 'orders_simple_view', 'orders_simple_view_all'].some(can)],
    ['/people', 'People', can('members_view') || can('members_manage')],
    ['/roles', 'Roles', can('roles_manage')],
    ['/audit', 'Audit log', can('audit_view')],
    ['/settings', 'Settings', can('settings_manage')],
  ];
  const current = (to) => (path === to || path.startsWith(to + '/') || (to === '/chats' && path === '/') ? 'page' : undefined);
  const endImpersonation = async () => {
    await signOut();
  };
  return html`<div class="shell">
    <a class="skip-link" href="#main">Skip to content</a>
    ${me.impersonated && html`<${Banner} kind="warning">
      You are viewing this company as <strong>${me.user.email}</strong>, signed in by the administrator
      ${me.impersonated_by && me.impersonated_by.email ? html` <strong>${me.impersonated_by.email}</strong>` : ''}.
      <button type="button" class="small" onClick=${endImpersonation}>End impersonation</button>
    <//>`}
    ${readOnly && html`<${ReadOnlyBanner} access=${access} />`}
    ${(lost || connection === 'unavailable' || connection === 'failed') &&
    html`<${Banner} kind="warning">Live updates are interrupted; reconnecting… What you see may be out of date.<//>`}
    <header class="topbar">
      <button type="button" class="icon menu-toggle" aria-expanded=${menuOpen ? 'true' : 'false'} aria-controls="workspace-nav"
        onClick=${() => setMenuOpen(!menuOpen)}><span aria-hidden="true">☰</span><span class="visually-hidden">Menu</span></button>
      <${Logo} settings=${settings} />
      <span class="company-title">${tenant.name}</span>
      <${Presence} ctx=${ctx} />
      <div class="user-menu">
        <${Link} to="/profile" aria-current=${current('/profile')}>${me.user.name || me.user.email}<//>
        <span class="role-badge">${membership.role}</span>
        <button type="button" class="secondary small" onClick=${signOut}>Sign out</button>
      </div>
    </header>
    <div class="shell-body">
    <nav id="workspace-nav" class=${menuOpen ? 'open' : ''} aria-label="Workspace">
      <ul>
        ${nav.filter(([, , shown]) => shown).map(([to, label]) => html`<li key=${to}><${Link} to=${to} aria-current=${current(to)}>${label}<//></li>`)}
      </ul>
    </nav>
    <main id="main" tabindex="-1">${screen}</main>
    </div>
  </div>`;
}


