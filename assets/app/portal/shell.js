// The central host: the admin portal for system admins, a person's companies and profile for
// everyone else, and the sign-in that leads to either.
import { html, useCallback, useEffect, useState } from '../../vendor/htm-preact.module.js';
import { api, onApiError, setCsrf } from '../lib/api.js';
import { href, Link, pick, usePath } from '../lib/router.js';
import { Banner, ErrorBox, Loading } from '../lib/ui.js';
import { AcceptInvitation, Card, Companies, Profile, SignIn } from '../account/screens.js';
import { TenantScreen, TenantsScreen } from './tenants.js';
import { PortalAuditScreen } from './audit.js';
import { TwoFactorScreen } from './twofactor.js';
import { AdminEvents, JobScreen, JobsScreen, SchedulesScreen } from './jobs.js';

/** Who holds this host's session: a system admin, a person, or nobody. */
async function whoIsIn() {
  try {
    const answer = await api('GET', '/api/admin/me', undefined, { central: true });
    setCsrf(answer.csrf_token);
    return { state: 'admin', admin: answer.admin, csrf: answer.csrf_token };
  } catch (err) {
    if (err.status !== 401 && err.status !== 403) throw err;
  }
  try {
    const me = await api('GET', '/api/me?limit=200', undefined, { central: true });
    setCsrf(me.csrf_token);
    return { state: 'person', me };
  } catch (err) {
    if (err.status === 401) return { state: 'signed_out' };
    throw err;
  }
}

export function CentralApp() {
  const path = usePath();
  const [session, setSession] = useState({ state: 'loading' });
  const [expired, setExpired] = useState(false);
  const load = useCallback(async () => {
    try {
      setSession(await whoIsIn());
      setExpired(false);
    } catch (error) {
      setSession({ state: 'error', error });
    }
  }, []);
  useEffect(() => {
    load();
  }, [load]);
  useEffect(() => onApiError((err) => err.code === 'unauthorized' && setExpired(true)), []);
  if (path === '/invite' && session.state !== 'admin') return html`<${AcceptInvitation} me=${session.me} onAccepted=${load} />`;
  switch (session.state) {
    case 'loading':
      return html`<main class="card-page"><${Loading} /></main>`;
    case 'error':
      return html`<${Card} screen="error" title="tenantd cannot be reached"><${ErrorBox} error=${session.error} retry=${load} /><//>`;
    case 'signed_out':
      return html`<${CentralSignIn} onSignedIn=${load} />`;
    default:
      if (expired) return html`<${CentralSignIn} notice="Your session has ended. Sign in again to go on." onSignedIn=${load} />`;
      if (session.state === 'admin') return html`<${Portal} admin=${session.admin} csrf=${session.csrf} path=${path} onAdmin=${(admin) => setSession((s) => ({ ...s, state: 'admin', admin }))} />`;
      return html`<${PersonHome} me=${session.me} path=${path} />`;
  }
}

/** One form, two kinds of account: the system admin's portal, or a person's companies. */
function CentralSignIn({ notice, onSignedIn }) {
  const [admin, setAdmin] = useState(true);
  const footer = html`<p class="switch-kind">
    ${admin
      ? html`Not a system administrator? <button type="button" class="link" onClick=${() => setAdmin(false)}>Use a company account</button>`
      : html`System administrator? <button type="button" class="link" onClick=${() => setAdmin(true)}>Use the admin account</button>`}
  </p>`;
  return html`<${SignIn}
    key=${admin ? 'admin' : 'person'}
    admin=${admin}
    title=${admin ? 'Admin portal' : 'Sign in to your companies'}
    notice=${notice}
    onSignedIn=${onSignedIn}
    footer=${footer} />`;
}

async function signOutHere() {
  try {
    await api('POST', '/api/auth/logout', undefined, { central: true });
  } catch {
    // Already ended.
  }
  location.assign(href('/'));
}

function PersonHome({ me, path }) {
  const screen = path === '/profile' ? html`<${Profile} me=${me} />` : html`<${Companies} me=${me} />`;
  return html`<div class="shell">
    <a class="skip-link" href="#main">Skip to content</a>
    <header class="topbar">
      <span class="company-title">tenantd</span>
      <nav aria-label="Account" class="inline-nav">
        <${Link} to="/" aria-current=${path === '/' ? 'page' : undefined}>Companies<//>
        <${Link} to="/profile" aria-current=${path === '/profile' ? 'page' : undefined}>Profile<//>
      </nav>
      <div class="user-menu">
        <span>${me.user.email}</span>
        <button type="button" class="secondary small" onClick=${signOutHere}>Sign out</button>
      </div>
    </header>
    <main id="main" tabindex="-1">${screen}</main>
  </div>`;
}

function Portal({ admin, csrf, path, onAdmin }) {
  const [menuOpen, setMenuOpen] = useState(false);
  useEffect(() => setMenuOpen(false), [path]);
  const screen =
    pick(
      [
        ['/', () => html`<${TenantsScreen} admin=${admin} />`],
        ['/tenants', () => html`<${TenantsScreen} admin=${admin} />`],
        ['/tenants/:slug', ({ slug }) => html`<${TenantScreen} admin=${admin} slug=${slug} />`],
        ['/audit', () => html`<${PortalAuditScreen} admin=${admin} />`],
        ['/jobs', () => html`<${JobsScreen} admin=${admin} />`],
        ['/jobs/:id', ({ id }) => html`<${JobScreen} admin=${admin} jobId=${Number(id)} />`],
        ['/schedules', () => html`<${SchedulesScreen} admin=${admin} />`],
        ['/security', () => html`<${TwoFactorScreen} admin=${admin} onAdmin=${onAdmin} />`],
      ],
      path,
    ) || html`<section data-screen="not-found"><h1>Page not found</h1><p><${Link} to="/">Go to the tenants<//></p></section>`;
  const current = (to) => (path === to || path.startsWith(to + '/') || (to === '/tenants' && path === '/') ? 'page' : undefined);
  return html`<div class="shell">
    <a class="skip-link" href="#main">Skip to content</a>
    <${AdminEvents} admin=${admin} csrf=${csrf} />
    ${admin.totp_enabled === false && path !== '/security' &&
    html`<${Banner} kind="info">Two-factor sign-in is off for your account. <${Link} to="/security">Turn it on<//>.<//>`}
    <header class="topbar">
      <button type="button" class="icon menu-toggle" aria-expanded=${menuOpen ? 'true' : 'false'} aria-controls="portal-nav"
        onClick=${() => setMenuOpen(!menuOpen)}><span aria-hidden="true">☰</span><span class="visually-hidden">Menu</span></button>
      <span class="company-title">tenantd admin</span>
      <div class="user-menu">
        <span>${admin.email}</span>
        <button type="button" class="secondary small" onClick=${signOutHere}>Sign out</button>
      </div>
    </header>
    <div class="shell-body">
    <nav id="portal-nav" class=${menuOpen ? 'open' : ''} aria-label="Admin portal">
      <ul>
        <li><${Link} to="/tenants" aria-current=${current('/tenants')}>Tenants<//></li>
        <li><${Link} to="/jobs" aria-current=${current('/jobs')}>Jobs<//></li>
        <li><${Link} to="/schedules" aria-current=${current('/schedules')}>Schedules<//></li>
        <li><${Link} to="/audit" aria-current=${current('/audit')}>Audit log<//></li>
        <li><${Link} to="/security" aria-current=${current('/security')}>Two-factor sign-in<//></li>
      </ul>
    </nav>
    <main id="main" tabindex="-1">${screen}</main>
    </div>
  </div>`;
}


