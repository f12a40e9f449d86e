// The company's settings: applied to the page (dates and money in its locale, time zone and
// date format; its colour as the --primary custom property; its logo in the header), and the
// screen where members with `settings_manage` change them.
import { html, useState } from '../../vendor/htm-preact.module.js';
import { api } from '../lib/api.js';
import { base } from '../lib/boot.js';
import { Async, ErrorBox, Field, Submit, fieldError, formatTime, setFormatting, toast, useAsync, useSubmit } from '../lib/ui.js';
import { NoAccess } from './people.js';
import { SettingsTabs } from './webhooks.js';

const PERMISSION = 'settings_manage';
const DATE_FORMATS = [
  ['iso', 'Year-month-day (2026-03-31)'],
  ['dmy', 'Day/month/year (31/03/2026)'],
  ['mdy', 'Month/day/year (03/31/2026)'],
];
/** The largest logo the server takes, decoded. */
const MAX_LOGO_BYTES = 64 * 1024;

/** The settings as the page applies them. The colour is set through the CSSOM: the CSP
 * (`style-src 'self'`) forbids style attributes, not this. */
export function applySettings(settings) {
  if (!settings) return;
  setFormatting(settings);
  const root = document.documentElement.style;
  if (settings.theme_color) {
    root.setProperty('--primary', settings.theme_color);
    root.setProperty('--primary-hover', settings.theme_color);
  } else {
    root.removeProperty('--primary');
    root.removeProperty('--primary-hover');
  }
}

/** The company's logo for the header, if it has one. */
export function Logo({ settings }) {
  if (!settings || !settings.logo) return null;
  return html`<img class="company-logo" src=${base + settings.logo} alt="" data-testid="company-logo" />`;
}

const readFile = (file) =>
  new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });

export function SettingsScreen({ ctx, onSettings }) {
  if (!ctx.can(PERMISSION)) return html`<${NoAccess} screen="company-settings" title="Company settings" needs="the permission to manage the company's settings" />`;
  const state = useAsync((signal) => api('GET', '/api/settings', undefined, { signal }), []);
  return html`<section data-screen="company-settings" class="settings">
    <div class="page-head"><div><h1>Company settings</h1><p class="page-sub">How ${ctx.tenant.name} shows dates, money and itself to every member.</p></div></div>
    <${SettingsTabs} current="/settings/company" />
    <${Async} state=${state} label="Loading the settings…">${(settings) =>
      html`<${SettingsForm} settings=${settings} onSaved=${(s) => {
        state.setData(s);
        onSettings(s);
      }} />`}<//>
  </section>`;
}

function SettingsForm({ settings, onSaved }) {
  const [form, setForm] = useState({ ...settings, theme_color: settings.theme_color || '#1d4ed8' });
  const [logo, setLogo] = useState(undefined);
  const [logoError, setLogoError] = useState(null);
  const set = (key) => (e) => setForm({ ...form, [key]: e.target.value });
  const { busy, error, run } = useSubmit(async () => {
    const body = {
      locale: form.locale,
      timezone: form.timezone,
      date_format: form.date_format,
      currency: form.currency,
      theme_color: form.theme_color,
    };
    if (logo !== undefined) body.logo = logo;
    const saved = await api('PATCH', '/api/settings', body);
    setLogo(undefined);
    onSaved(saved);
    toast('Settings saved.');
  });
  const pickLogo = async (e) => {
    const file = e.target.files[0];
    setLogoError(null);
    if (!file) return;
    if (!['image/png', 'image/jpeg'].includes(file.type)) return setLogoError('Choose a PNG or JPEG image.');
    if (file.size > MAX_LOGO_BYTES) return setLogoError('The logo may be at most 64 kB.');
    setLogo(await readFile(file));
  };
  const known = new Set(['locale', 'timezone', 'date_format', 'currency', 'theme_color', 'logo']);
  const other = error && !(error.fields && Object.keys(error.fields).every((f) => known.has(f))) ? error : null;
  return html`<form onSubmit=${run} class="stack">
    <${Field} label="Language and region" hint="A BCP 47 tag, such as en-GB or de-CH." required value=${form.locale} onInput=${set('locale')} error=${fieldError(error, 'locale')} />
    <${Field} label="Time zone" hint="An IANA name, such as Europe/London or America/New_York." required value=${form.timezone} onInput=${set('timezone')} error=${fieldError(error, 'timezone')} />
    <${Field} as="select" label="Date format" value=${form.date_format} onChange=${set('date_format')} error=${fieldError(error, 'date_format')}>
      ${DATE_FORMATS.map(([v, label]) => html`<option key=${v} value=${v}>${label}</option>`)}
    <//>
    <p class="hint" data-testid="date-sample">Now: ${formatTime(Date.now() / 1000)}</p>
    <${Field} label="Default currency" hint="For new orders that name none (ISO 4217, such as EUR)." required maxlength="3" value=${form.currency} onInput=${set('currency')} error=${fieldError(error, 'currency')} />
    <${Field} label="Colour" type="color" value=${form.theme_color} onInput=${set('theme_color')} error=${fieldError(error, 'theme_color')} />
    <${Field} label="Logo" type="file" accept="image/png,image/jpeg" hint="PNG or JPEG, at most 64 kB." onChange=${pickLogo} error=${logoError || fieldError(error, 'logo')} />
    ${settings.logo && html`<p><button type="button" class="secondary small" onClick=${() => setLogo(null)}>Remove the logo</button>${logo === null ? ' (removed when you save)' : ''}</p>`}
    <${ErrorBox} error=${other} />
    <${Submit} busy=${busy}>Save settings<//>
  </form>`;
}
