// A person's own screens, in every area: sign in, accept an invitation, profile and password,
// the company chooser, and the screens that say why a workspace cannot be shown.
import { html, useCallback, useRef, useState } from '../../vendor/htm-preact.module.js';
import { ApiError, api, setCsrf } from '../lib/api.js';
import { base, boot } from '../lib/boot.js';
import { navigate } from '../lib/router.js';
import { Async, Banner, Confirm, Empty, ErrorBox, Field, Submit, copyText, fieldError, formatTime, toast, useAsync, useEvery, useSubmit } from '../lib/ui.js';

/** The product's name and the place, above a sign-in or error card. */
function Brand({ subtitle }) {
  return html`<header class="brand">
    <span class="logo" aria-hidden="true">◆</span>
    <span class="brand-name">tenantd</span>
    ${subtitle && html`<span class="brand-sub">${subtitle}</span>`}
  </header>`;
}

/** A centred card for the screens before a person is in. */
export function Card({ screen, title, subtitle, children }) {
  return html`<main class="card-page" data-screen=${screen}>
    <${Brand} subtitle=${subtitle} />
    <section class="card">
      <h1>${title}</h1>
      ${children}
    </section>
  </main>`;
}

/**
 * Email and password; `admin` signs in a system admin (with a TOTP code once asked for).
 * `onSignedIn(answer)` gets the login answer (which holds csrf_token).
 */
export function SignIn({ admin = false, title, subtitle, notice, onSignedIn, footer }) {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [code, setCode] = useState('');
  const [needCode, setNeedCode] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = { email, password };
      if (admin && needCode) body.code = code;
      const answer = await api('POST', admin ? '/api/admin/auth/login' : '/api/auth/login', body, { central: admin });
      setCsrf(answer.csrf_token);
      onSignedIn(answer);
    } catch (err) {
      if (err.code === 'totp_required') {
        setNeedCode(true);
        setError(needCode ? err : null);
      } else {
        setError(err);
      }
      setBusy(false);
    }
  };
  return html`<${Card} screen="signin" title=${title || 'Sign in'} subtitle=${subtitle}>
    ${notice && html`<${Banner} kind="warning">${notice}<//>`}
    <form onSubmit=${submit} novalidate>
      <${Field} label="Email" type="email" name="email" autocomplete="username" required value=${email}
        onInput=${(e) => setEmail(e.target.value)} />
      <${Field} label="Password" type="password" name="password" autocomplete="current-password" required value=${password}
        onInput=${(e) => setPassword(e.target.value)} />
      ${needCode && html`<${Field} label="Authenticator code" inputmode="numeric" autocomplete="one-time-code" required
        value=${code} onInput=${(e) => setCode(e.target.value)} hint="Six digits from your authenticator app." />`}
      <${ErrorBox} error=${error} />
      <div class="actions"><${Submit} busy=${busy}>Sign in<//></div>
    </form>
    ${footer}
  <//>`;
}

/** Signs out (ends the session on the server, which clears the cookie) and reloads the page. */
export async function signOut() {
  try {
    await api('POST', '/api/auth/logout');
  } catch {
    // Already ended: the page starts over either way.
  }
  location.assign(base + '/');
}

/** A field's error from the API as a sentence that names the field: "Password must be at least 8 characters." */
function said(error, name, label) {
  const why = fieldError(error, name);
  return why ? `${label} ${why.replace(/\.$/, '')}.` : undefined;
}

/** The error to show above a form: the ones not shown beside a field. */
function formError(error, ...fields) {
  return error && !fields.some((f) => fieldError(error, f)) ? error : null;
}

/** The shortest password the API accepts (src/api/account.rs, check_new_password). */
const MIN_PASSWORD = 8;

/** The invitation in the link's fragment (`#token=...`: a fragment never reaches a server log). */
function invitationToken() {
  return new URLSearchParams(location.hash.slice(1)).get('token') || '';
}

/**
 * Accepting an invitation: set a password for a new account, or confirm with an existing one's
 * password, or (signed in with the invited email already) with one button.
 */
export function AcceptInvitation({ me, onAccepted }) {
  const token = invitationToken();
  const lookup = useAsync(
    () =>
      token
        ? api('POST', '/api/invitations/lookup', { token })
        : Promise.reject(new ApiError(0, 'invitation_incomplete', 'This invitation link is incomplete. Open the whole link you were sent')),
    [token],
  );
  const [name, setName] = useState('');
  const [surname, setSurname] = useState('');
  const [password, setPassword] = useState('');
  // Without a password: the session of someone signed in with the invited email.
  const withSession = useRef(false);
  const { busy, error, run } = useSubmit(async () => {
    const body = {};
    if (!withSession.current) {
      body.password = password;
      if (name.trim()) body.name = name.trim();
      if (surname.trim()) body.surname = surname.trim();
    }
    const answer = await api('POST', '/api/invitations/accept', { token, ...body });
    if (answer.csrf_token) setCsrf(answer.csrf_token);
    // The token is spent: the address bar should not keep it, and the workspace opens at its start.
    navigate('/', { replace: true });
    toast(`Welcome to ${answer.tenant ? answer.tenant.name : 'the company'}.`);
    onAccepted(answer);
  });
  // A wrong password can only be an existing account's: say so in the field's own words.
  const passwordError =
    said(error, 'password', 'The password') ||
    (error && error.code === 'invalid_credentials' ? 'That is not the password of the account with this email.' : undefined);
  return html`<${Card} screen="invitation" title="Accept your invitation">
    <${Async} state=${lookup} label="Checking the invitation…">${(data) => {
      const signedInAsInvitee = me && me.user && me.user.email.toLowerCase() === data.invitation.email.toLowerCase() && !me.impersonated;
      return html`
      <p>You are invited to join <strong>${data.tenant.name}</strong> as <strong>${data.invitation.role}</strong>,
        with the email <strong>${data.invitation.email}</strong>.</p>
      ${signedInAsInvitee
        ? html`<p class="hint">You are signed in with this email.</p>
            <${ErrorBox} error=${error} />
            <div class="actions"><button type="button" disabled=${busy} onClick=${() => {
              withSession.current = true;
              run();
            }}>${busy ? 'Working…' : `Join ${data.tenant.name}`}</button></div>`
        : html`<p class="hint">Already have an account with this email? Enter its password and you are in.
            New here? Choose a password (at least ${MIN_PASSWORD} characters) for your new account.</p>
          <form onSubmit=${run} novalidate>
            <div class="field-row">
              <${Field} label="First name" hint="For a new account" autocomplete="given-name" value=${name} error=${said(error, 'name', 'The first name')} onInput=${(e) => setName(e.target.value)} />
              <${Field} label="Last name" hint="For a new account" autocomplete="family-name" value=${surname} error=${said(error, 'surname', 'The last name')} onInput=${(e) => setSurname(e.target.value)} />
            </div>
            <${Field} label="Password" type="password" autocomplete="new-password" required value=${password}
              error=${passwordError} onInput=${(e) => setPassword(e.target.value)} />
            <${ErrorBox} error=${passwordError ? null : formError(error, 'name', 'surname')} />
            <div class="actions"><${Submit} busy=${busy}>Join ${data.tenant.name}<//></div>
          </form>`}`;
    }}<//>
  <//>`;
}

/** Name and password of the signed-in person. */
export function Profile({ me, onChanged }) {
  const user = me.user;
  const [name, setName] = useState(user.name || '');
  const [surname, setSurname] = useState(user.surname || '');
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const { busy, error, run: save } = useSubmit(async () => {
    // The answer is {user}: the whole account as it is now.
    const answer = await api('PATCH', '/api/me', { name: name.trim(), surname: surname.trim() });
    setName(answer.user.name || '');
    setSurname(answer.user.surname || '');
    toast('Profile saved.');
    onChanged && onChanged(answer.user);
  });
  const { busy: pwBusy, error: pwError, run: changePassword } = useSubmit(async () => {
    const answer = await api('POST', '/api/me/password', { current_password: current, new_password: next });
    setCurrent('');
    setNext('');
    const others = answer.sessions_revoked || 0;
    toast(others ? `Password changed. ${others === 1 ? 'One other session was' : `${others} other sessions were`} signed out.` : 'Password changed.');
  });
  return html`<section data-screen="profile" class="narrow profile">
    <h1>Your profile</h1>
    ${me.impersonated && html`<${Banner} kind="warning">An administrator is viewing this account: its password cannot be changed now.<//>`}
    <form onSubmit=${save} novalidate>
      <${Field} label="Email" value=${user.email} readonly />
      <div class="field-row">
        <${Field} label="First name" autocomplete="given-name" value=${name} error=${said(error, 'name', 'The first name')} onInput=${(e) => setName(e.target.value)} />
        <${Field} label="Last name" autocomplete="family-name" value=${surname} error=${said(error, 'surname', 'The last name')} onInput=${(e) => setSurname(e.target.value)} />
      </div>
      <${ErrorBox} error=${formError(error, 'name', 'surname')} />
      <div class="actions"><${Submit} busy=${busy}>Save profile<//></div>
    </form>
    <h2>Password</h2>
    <form onSubmit=${changePassword} novalidate>
      <fieldset class="plain" disabled=${me.impersonated}>
        <legend class="visually-hidden">Change your password</legend>
        <${Field} label="Current password" type="password" autocomplete="current-password" value=${current} error=${said(pwError, 'current_password', 'The current password')} onInput=${(e) => setCurrent(e.target.value)} />
        <${Field} label="New password" type="password" autocomplete="new-password" value=${next} hint=${`At least ${MIN_PASSWORD} characters. Your other sessions are signed out.`} error=${said(pwError, 'new_password', 'The new password')} onInput=${(e) => setNext(e.target.value)} />
        <${ErrorBox} error=${formError(pwError, 'current_password', 'new_password')} />
        <div class="actions"><${Submit} busy=${pwBusy}>Change password<//></div>
      </fieldset>
    </form>
    <${ApiTokens} me=${me} />
    <${YourData} me=${me} />
  </section>`;
}

/**
 * What the product holds about this person (`GET /api/me/export`, a JSON file), and the end of
 * the account (`DELETE /api/me` with the password): what they wrote stays, as "Deleted user".
 */
function YourData({ me }) {
  const [password, setPassword] = useState('');
  const { busy, error, run: remove } = useSubmit(async () => {
    await api('DELETE', '/api/me', { password });
    // The server ended every session and cleared the cookie: the page starts over.
    location.assign(base + '/');
  });
  return html`<section class="your-data" aria-labelledby="your-data-title">
    <h2 id="your-data-title">Your data</h2>
    <p class="hint">Your account, your memberships and, in each company, the messages you wrote and the orders you created, as one JSON file.</p>
    <p><a class="button secondary" href=${base + '/api/me/export'} download>Download my data</a></p>
    <h2>Delete your account</h2>
    <p class="hint">You are signed out everywhere and leave every company. Your messages and orders stay, shown as “Deleted user”. This cannot be undone.</p>
    <form onSubmit=${remove} novalidate>
      <fieldset class="plain" disabled=${me.impersonated}>
        <legend class="visually-hidden">Delete your account</legend>
        <${Field} label="Your password" type="password" autocomplete="current-password" value=${password} error=${said(error, 'password', 'The password')} onInput=${(e) => setPassword(e.target.value)} />
        <${ErrorBox} error=${formError(error, 'password')} />
        <div class="actions"><${Submit} busy=${busy} class="danger">Delete my account<//></div>
      </fieldset>
    </form>
  </section>`;
}

/**
 * Personal API tokens (`/api/tokens`): each bound to one company, shown once when made, revocable.
 * An impersonation cannot make one (the API refuses: it would outlive the impersonation).
 */
function ApiTokens({ me }) {
  const tokens = useAsync(() => api('GET', '/api/tokens'), []);
  const companies = me.memberships || [];
  const [name, setName] = useState('');
  const [tenant, setTenant] = useState(companies.length ? companies[0].tenant_id : '');
  const [days, setDays] = useState('90');
  const [made, setMade] = useState(null);
  const [revoking, setRevoking] = useState(null);
  const companyName = (id) => (companies.find((m) => m.tenant_id === id) || {}).name || id;
  const { busy, error, run: create } = useSubmit(async () => {
    const body = { name: name.trim(), tenant };
    if (days) body.expires_in_days = Number(days);
    const answer = await api('POST', '/api/tokens', body);
    setMade(answer);
    setName('');
    tokens.reload();
  });
  const copy = () => copyText(made.token, 'Token');
  return html`<section class="api-tokens" aria-labelledby="api-tokens-title">
    <h2 id="api-tokens-title">API tokens</h2>
    <p class="hint">A token lets a script use the API as you, in one company: send it as
      <code>${'Authorization: Bearer <token>'}</code>. It is shown once, when it is made.</p>
    ${made && html`<div class="panel" role="status">
      <p>Your new token <strong>${made.name}</strong> for ${companyName(made.tenant_id)}. Copy it now: it will not be shown again.</p>
      <div class="copy-box"><code data-testid="new-token">${made.token}</code>
        <button type="button" class="secondary small" onClick=${copy}>Copy</button></div>
      <div class="actions"><button type="button" class="secondary small" onClick=${() => setMade(null)}>Done</button></div>
    </div>`}
    <${Async} state=${tokens} label="Loading your tokens…">${(data) =>
      data.tokens.length === 0
        ? html`<${Empty}>You have no API tokens.<//>`
        : html`<div class="table-wrap"><table>
            <caption class="visually-hidden">Your API tokens</caption>
            <thead><tr><th scope="col">Name</th><th scope="col">Company</th><th scope="col">Last used</th><th scope="col">Expires</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
            <tbody>${data.tokens.map((t) => html`<tr key=${t.id} data-testid="token-row">
              <td>${t.name}</td><td>${companyName(t.tenant_id)}</td>
              <td>${t.last_used_at && t.last_used_at !== t.created_at ? formatTime(t.last_used_at) : 'never'}</td>
              <td>${t.expires_at ? formatTime(t.expires_at) : 'never'}</td>
              <td><button type="button" class="secondary small" onClick=${() => setRevoking(t)}>Revoke<span class="visually-hidden"> ${t.name}</span></button></td>
            </tr>`)}</tbody>
          </table></div>`}
    <//>
    ${companies.length > 0 && html`<form onSubmit=${create} novalidate class="token-form">
      <fieldset class="plain" disabled=${me.impersonated}>
        <legend><h3>New token</h3></legend>
        <${Field} label="Token name" value=${name} required placeholder="e.g. nightly export" error=${said(error, 'name', 'The name')} onInput=${(e) => setName(e.target.value)} />
        <${Field} as="select" label="Company" value=${tenant} error=${said(error, 'tenant', 'The company')} onChange=${(e) => setTenant(e.target.value)}>
          ${companies.map((m) => html`<option key=${m.tenant_id} value=${m.tenant_id}>${m.name}</option>`)}
        <//>
        <${Field} as="select" label="Expires" value=${days} error=${said(error, 'expires_in_days', 'The expiry')} onChange=${(e) => setDays(e.target.value)}>
          <option value="7">in 7 days</option>
          <option value="30">in 30 days</option>
          <option value="90">in 90 days</option>
          <option value="365">in a year</option>
          <option value="">never</option>
        <//>
        <${ErrorBox} error=${formError(error, 'name', 'tenant', 'expires_in_days')} />
        <div class="actions"><${Submit} busy=${busy}>Make token<//></div>
      </fieldset>
    </form>`}
    ${revoking && html`<${Confirm} title="Revoke this token?" action="Revoke token" danger
      onConfirm=${async () => {
        await api('DELETE', `/api/tokens/${revoking.id}`);
        toast('Token revoked.');
        tokens.reload();
      }}
      onClose=${() => setRevoking(null)}>
      <p>Scripts using <strong>${revoking.name}</strong> will stop working at once.</p>
    <//>`}
  </section>`;
}

/** The companies a person belongs to, each opening its workspace on this host. */
export function Companies({ me }) {
  const list = me.memberships || [];
  return html`<section data-screen="companies" class="narrow">
    <h1>Your companies</h1>
    ${list.length === 0
      ? html`<div class="empty"><p>You are not a member of any company yet. Ask a company's administrator for an invitation.</p></div>`
      : html`<p class="hint companies-intro">Choose a company to open its workspace.</p>
        <ul class="company-list">
          ${list.map((m) => html`<li key=${m.tenant_id}>
            <a class="company" href=${`/t/${encodeURIComponent(m.slug)}/`}>
              <span class="company-mark" aria-hidden="true">${m.name.charAt(0).toUpperCase()}</span>
              <span class="company-text">
                <span class="company-name">${m.name}</span>
                <span class="company-role">Your role: ${m.role}</span>
              </span>
              <span class="company-open" aria-hidden="true">Open →</span>
            </a>
          </li>`)}
        </ul>`}
  </section>`;
}

export function NoTenant() {
  return html`<${Card} screen="no-tenant" title="No company here">
    <p>There is no company at <strong>${location.host}${location.pathname.startsWith('/t/') ? location.pathname.split('/').slice(0, 3).join('/') : ''}</strong>.
      Check the address, or ask the person who sent it.</p>
    <p><a href="/">Go to the start page</a></p>
  <//>`;
}

export function NoMember({ me }) {
  return html`<${Card} screen="no-member" title="You are not a member of this company" subtitle=${boot.tenant && boot.tenant.slug}>
    <p>You are signed in as <strong>${me.user.email}</strong>, which is not a member of this company.
      Ask one of its administrators for an invitation.</p>
    <div class="actions">
      <button type="button" class="secondary" onClick=${signOut}>Sign in as someone else</button>
    </div>
  <//>`;
}

/** How often a suspended company's page asks whether it is active again. */
const SUSPENDED_CHECK_MS = 10_000;

/** The suspended company's screen: it asks now and then, and opens the workspace once activated. */
export function Suspended({ onActive }) {
  const check = useCallback(() => api('GET', '/api/tenant').then(onActive, () => {}), [onActive]);
  useEvery(SUSPENDED_CHECK_MS, check);
  return html`<${Card} screen="suspended" title="This company is suspended" subtitle=${boot.tenant && boot.tenant.slug}>
    <p>An administrator has suspended this company. Its data is kept, but nobody can use it until it is
      activated again. This page opens the workspace by itself once that happens.</p>
    <div class="actions"><button type="button" onClick=${() => location.reload()}>Reload</button></div>
  <//>`;
}

/** How often the maintenance screen asks whether the company is back. */
const MAINTENANCE_CHECK_MS = 15_000;

/** The screen of a company (or server) down for maintenance: it asks now and then, and reloads once it is up. */
export function Maintenance() {
  const check = useCallback(() => fetch(location.href, { headers: { Accept: 'text/html' } })
    .then((r) => { if (r.status !== 503) location.reload(); }, () => {}), []);
  useEvery(MAINTENANCE_CHECK_MS, check);
  return html`<${Card} screen="maintenance" title="Down for maintenance" subtitle=${boot.tenant && boot.tenant.slug}>
    <p>This company is being worked on and will be back shortly. Your data is safe.
      This page opens the workspace by itself once maintenance is over.</p>
    <div class="actions"><button type="button" onClick=${() => location.reload()}>Reload</button></div>
  <//>`;
}
