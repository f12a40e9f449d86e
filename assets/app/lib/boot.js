// What the server told this page about itself (the <meta name="tenantd-boot"> it filled in):
// which area it is (workspace, portal, no_tenant), the tenant and its path prefix, the real-time key.
const meta = document.querySelector('meta[name="tenantd-boot"]');

function read() {
  try {
    return JSON.parse(meta ? meta.content : '{}');
  } catch {
    return {};
  }
}

export const boot = Object.freeze({ area: 'portal', tenant: null, realtime: {}, ...read() });

/** The path prefix of this tenant's API and pages: "/t/acme" in path mode, "" on its own host. */
export const base = boot.tenant ? boot.tenant.base || '' : '';

/** The path prefix of this page's own links: the tenant's, or "/admin" for the portal when the
 * central host's other pages are a default tenant's workspace. The portal's API stays at "/api". */
export const pageBase = boot.tenant ? base : boot.base || '';
