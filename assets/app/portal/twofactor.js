// Two-factor sign-in for the signed-in system admin: start the enrolment (a QR code of the
// otpauth URI and the secret for typing in by hand), confirm it with a first code, and say
// when it is on. The secret is enforced only once confirmed, so a half-done enrolment locks no one out.
import { html, useState } from '../../vendor/htm-preact.module.js';
import { api } from '../lib/api.js';
import { ErrorBox, Field, Submit, fieldError, toast, useSubmit } from '../lib/ui.js';

/** The secret in groups of four, as authenticator apps show it and people type it. */
function grouped(secret) {
  return secret.replace(/(.{4})/g, '$1 ').trim();
}

export function TwoFactorScreen({ admin, onAdmin }) {
  const [enrolment, setEnrolment] = useState(null);
  const [code, setCode] = useState('');
  const on = admin.totp_enabled;
  const enrol = useSubmit(async () => {
    setEnrolment(await api('POST', '/api/admin/totp/enrol', {}, { central: true }));
    setCode('');
  });
  const confirmation = useSubmit(async () => {
    await api('POST', '/api/admin/totp/confirm', { code: code.replace(/\s/g, '') }, { central: true });
    setEnrolment(null);
    toast('Two-factor sign-in is on.');
    if (onAdmin) onAdmin({ ...admin, totp_enabled: true });
  });
  const start = enrol.run;
  const confirm = confirmation.run;
  const busy = enrol.busy || confirmation.busy;
  const error = enrol.error || confirmation.error;
  return html`<section data-screen="portal-2fa" class="portal narrow">
    <h1>Two-factor sign-in</h1>
    ${on
      ? html`<div class="panel twofactor-on" role="status">
          <p class="state-line"><span class="dot on" aria-hidden="true"></span><strong>Two-factor sign-in is on</strong> for ${admin.email}.</p>
          <p class="muted">Each sign-in asks for the six-digit code from your authenticator app after the password.
            If you lose the app, <code>tenantd admin reset-password --email ${admin.email}</code> on the server
            turns it off and gives you a new password.</p>
        </div>`
      : !enrolment
        ? html`<div class="panel">
            <p class="state-line"><span class="dot off" aria-hidden="true"></span><strong>Two-factor sign-in is off</strong> for ${admin.email}.</p>
            <p>With it on, signing in also needs a code from an authenticator app on your phone (any app that
              supports TOTP codes), so a stolen password alone does not open the portal.</p>
            <${ErrorBox} error=${error} />
            <div class="actions start"><button type="button" onClick=${start} disabled=${busy}>${busy ? 'Working…' : 'Set up two-factor sign-in'}</button></div>
          </div>`
        : html`<div class="panel enrol">
            <ol class="steps">
              <li>
                <h2>Scan this code with your authenticator app</h2>
                <img class="qr" src=${enrolment.qr_data_url} alt="QR code for your authenticator app" width="200" height="200" />
                <p>Cannot scan it? Enter this key in the app instead (time-based, 6 digits):</p>
                <p class="copy-box"><span class="visually-hidden">Secret key: </span><code data-testid="totp-secret">${grouped(enrolment.secret)}</code></p>
              </li>
              <li>
                <h2>Enter the code the app shows</h2>
                <form onSubmit=${confirm} novalidate>
                  <${Field} label="Authenticator code" inputmode="numeric" autocomplete="one-time-code" maxlength="8" required
                    value=${code} error=${fieldError(error, 'code') && 'That code does not match. Check the time on your phone and try the next one.'}
                    hint="Six digits; a new one every 30 seconds." onInput=${(e) => setCode(e.target.value)} />
                  <${ErrorBox} error=${error && !fieldError(error, 'code') ? error : null} />
                  <div class="actions start">
                    <${Submit} busy=${busy}>Turn on two-factor sign-in<//>
                    <button type="button" class="secondary" onClick=${start} disabled=${busy}>Start again with a new key</button>
                  </div>
                </form>
              </li>
            </ol>
          </div>`}
  </section>`;
}
