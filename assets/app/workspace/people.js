// A company's people: its members and their roles, the invitations that bring new ones in, and
// the roles themselves. What each part shows follows the member's permissions as the API checks
// them (src/api/members.rs, src/api/invitations.rs): members_view to see the list,
// members_manage to invite, change and remove, roles_manage for the roles.
import { html, useEffect, useRef, useState } from '../../vendor/htm-preact.module.js';
import { api, describe } from '../lib/api.js';
import { base } from '../lib/boot.js';
import { Link } from '../lib/router.js';
import { Async, Confirm, Dialog, Empty, ErrorBox, Field, Submit, copyText, fieldError, formatTime, toast, useAsync, useSubmit } from '../lib/ui.js';

/** Every permission a role can hold, in the order of the API's list, said in words. */
export const PERMISSIONS = [
  ['chats_view_all', 'Chats', 'See every chat, not only their own'],
  ['chats_create', 'Chats', 'Start new chats'],
  ['orders_view', 'Orders', 'See their own orders'],
  ['orders_view_all', 'Orders', 'See every order'],
  ['orders_simple_view', 'Orders', 'See their own orders, without amounts or customer contact'],
  ['orders_simple_view_all', 'Orders', 'See every order, without amounts or customer contact'],
  ['orders_create', 'Orders', 'Create orders'],
  ['orders_edit', 'Orders', 'Edit orders and move them along the workflow'],
  ['orders_delete', 'Orders', 'Delete orders'],
  ['members_view', 'People', 'See the members and open invitations'],
  ['members_manage', 'People', 'Invite, change and remove members'],
  ['roles_manage', 'People', 'Create, change and delete roles'],
  ['settings_manage', 'Company', "Change the company's settings"],
  ['audit_view', 'Company', 'Read the audit log'],
];

/** The words for a permission (its name when this page does not know it). */
export function permissionLabel(name) {
  const found = PERMISSIONS.find(([p]) => p === name);
  return found ? found[2] : name.replace(/_/g, ' ');
}

/** Permissions in the order of PERMISSIONS (by subject), unknown ones last. */
export function inListOrder(names) {
  const rank = (p) => {
    const i = PERMISSIONS.findIndex(([q]) => q === p);
    return i < 0 ? PERMISSIONS.length : i;
  };
  return [...names].sort((a, b) => rank(a) - rank(b));
}

/** Roles every company has, for a member who may not list the roles themselves. */
const BUILTIN_ROLE_NAMES = ['admin', 'manager', 'agent', 'viewer'];

/** The screen a member sees where their role does not reach. */
export function NoAccess({ screen, title, needs }) {
  return html`<section data-screen="no-access" data-for=${screen} class="no-access">
    <h1>${title}</h1>
    <div class="empty">
      <p><strong>You do not have access to this page.</strong></p>
      <p>It needs ${needs}, which your role does not include. Ask an administrator of this company if you need it.</p>
      <p><${Link} to="/chats">Go to the chats<//></p>
    </div>
  </section>`;
}

function fullName(user) {
  return [user.name, user.surname].filter(Boolean).join(' ') || user.email;
}

function initials(user) {
  const parts = [user.name, user.surname].filter(Boolean);
  const letters = parts.length ? parts.map((p) => p[0]) : [user.email[0]];
  return letters.join('').slice(0, 2).toUpperCase();
}

/** The link an invitee opens: the accept screen reads the token from the fragment. */
export function invitationLink(token) {
  return `${location.origin}${base}/invite#token=${token}`;
}

/** The role names a member may pick from: the company's roles when they may list them. */
function useRoleNames(ctx, members) {
  const roles = useAsync((signal) => (ctx.can('roles_manage') ? api('GET', '/api/roles', undefined, { signal }) : Promise.resolve(null)), []);
  if (roles.data) return roles.data.roles.map((r) => r.name);
  const seen = new Set(BUILTIN_ROLE_NAMES);
  (members || []).forEach((m) => seen.add(m.role));
  return [...seen];
}

export function MembersScreen({ ctx }) {
  const canView = ctx.can('members_view');
  const canManage = ctx.can('members_manage');
  if (!canView && !canManage) return html`<${NoAccess} screen="members" title="People" needs="the permission to see the members" />`;
  return html`<${Members} ctx=${ctx} canView=${canView} canManage=${canManage} />`;
}

function Members({ ctx, canView, canManage }) {
  // Only members_view lists the members; a manager without it still sees the invitations.
  const state = useAsync(
    (signal) =>
      canView
        ? api('GET', '/api/members', undefined, { signal })
        : api('GET', '/api/invitations', undefined, { signal }).then((a) => ({ members: null, invitations: a.invitations })),
    [],
  );
  const roleNames = useRoleNames(ctx, state.data && state.data.members);
  const [inviting, setInviting] = useState(false);
  const [changing, setChanging] = useState(null);
  const [removing, setRemoving] = useState(null);
  const [revoking, setRevoking] = useState(null);
  const me = ctx.me.user.id;
  return html`<section data-screen="members" class="people">
    <div class="screen-head">
      <h1>People</h1>
      ${canManage && html`<button type="button" onClick=${() => setInviting(true)}>Invite someone</button>`}
    </div>
    <${Async} state=${state} label="Loading the members…">${(data) => html`
      ${data.members && html`
        <h2 class="visually-hidden">Members</h2>
        <p class="hint people-count">${data.members.length === 1 ? '1 member' : `${data.members.length} members`}</p>
        ${data.members.length === 0
          ? html`<${Empty}>Nobody is a member yet.<//>`
          : html`<ul class="people-list" aria-label="Members">
              ${data.members.map((m) => html`<li key=${m.user.id} class="person" data-testid="member-row" data-email=${m.user.email}>
                <span class="avatar" aria-hidden="true">${initials(m.user)}</span>
                <span class="person-who">
                  <span class="person-name">${fullName(m.user)}${m.user.id === me ? html` <span class="you">(you)</span>` : ''}</span>
                  <span class="person-email">${m.user.email}</span>
                </span>
                <span class="person-meta">
                  <span class="role-badge role-name">${m.role}</span>
                  ${m.user.disabled && html`<span class="status suspended">Disabled</span>`}
                  <span class="hint">Joined ${formatTime(m.joined_at)}</span>
                </span>
                ${canManage && html`<span class="person-actions">
                  <button type="button" class="secondary small" aria-label=${`Change role of ${fullName(m.user)}`}
                    onClick=${() => setChanging(m)}>Change role</button>
                  <button type="button" class="secondary small danger-text" aria-label=${`Remove ${fullName(m.user)}`}
                    onClick=${() => setRemoving(m)}>Remove</button>
                </span>`}
              </li>`)}
            </ul>`}`}
      <${Invitations} invitations=${data.invitations || []} canManage=${canManage} onRevoke=${setRevoking} />
    `}<//>
    ${inviting && html`<${InviteDialog} roleNames=${roleNames} onDone=${state.reload} onClose=${() => setInviting(false)} />`}
    ${changing && html`<${RoleDialog} member=${changing} roleNames=${roleNames} onClose=${() => setChanging(null)}
      onChanged=${(role) => state.setData((d) => ({ ...d, members: d.members.map((m) => (m.user.id === changing.user.id ? { ...m, role } : m)) }))} />`}
    ${removing && html`<${Confirm} title="Remove this member?" action="Remove" danger onClose=${() => setRemoving(null)}
      onConfirm=${async () => {
        await api('DELETE', `/api/members/${removing.user.id}`);
        toast(`${fullName(removing.user)} is no longer a member.`);
        state.setData((d) => ({ ...d, members: d.members.filter((m) => m.user.id !== removing.user.id) }));
      }}>
      <p><strong>${fullName(removing.user)}</strong> (${removing.user.email}) will lose access to this company at once.
        Their account stays; they can be invited again.</p>
    <//>`}
    ${revoking && html`<${Confirm} title="Withdraw this invitation?" action="Withdraw invitation" danger onClose=${() => setRevoking(null)}
      onConfirm=${async () => {
        await api('DELETE', `/api/invitations/${revoking.id}`);
        toast(`The invitation for ${revoking.email} was withdrawn.`);
        state.setData((d) => ({ ...d, invitations: d.invitations.filter((i) => i.id !== revoking.id) }));
      }}>
      <p>The link sent to <strong>${revoking.email}</strong> will stop working.</p>
    <//>`}
  </section>`;
}

function Invitations({ invitations, canManage, onRevoke }) {
  return html`<section class="invitations" aria-labelledby="invitations-title">
    <h2 id="invitations-title">Open invitations</h2>
    ${invitations.length === 0
      ? html`<${Empty}>No invitations are waiting.${canManage ? ' Invite someone with the button above.' : ''}<//>`
      : html`<ul class="people-list">
          ${invitations.map((i) => html`<li key=${i.id} class="person invitation" data-testid="invitation-row" data-email=${i.email}>
            <span class="avatar muted" aria-hidden="true">✉</span>
            <span class="person-who">
              <span class="person-name">${i.email}</span>
              <span class="person-email">Invited ${formatTime(i.created_at)} · ${i.status === 'expired' ? 'expired' : 'expires'} ${formatTime(i.expires_at)}</span>
            </span>
            <span class="person-meta">
              <span class="role-badge">${i.role}</span>
              <span class=${`status invitation-${i.status}`}>${i.status === 'pending' ? 'Waiting' : i.status === 'expired' ? 'Expired' : i.status}</span>
            </span>
            ${canManage && html`<span class="person-actions">
              <button type="button" class="secondary small danger-text" aria-label=${`Withdraw the invitation for ${i.email}`}
                onClick=${() => onRevoke(i)}>Withdraw</button>
            </span>`}
          </li>`)}
        </ul>`}
  </section>`;
}

function RoleSelect({ roleNames, value, onChange, error }) {
  return html`<${Field} as="select" label="Role" value=${value} error=${error} onChange=${(e) => onChange(e.target.value)}>
    ${roleNames.map((r) => html`<option key=${r} value=${r}>${r}</option>`)}
  <//>`;
}

function InviteDialog({ roleNames, onDone, onClose }) {
  const [email, setEmail] = useState('');
  const [role, setRole] = useState(roleNames.includes('agent') ? 'agent' : roleNames[0] || '');
  const [made, setMade] = useState(null);
  const { busy, error, run: submit } = useSubmit(async () => {
    const answer = await api('POST', '/api/invitations', { email: email.trim(), role });
    setMade(answer.invitation);
    onDone();
  });
  if (made) return html`<${Dialog} title="Invitation ready" onClose=${onClose}>
    <${InvitationLink} invitation=${made} />
    <div class="actions"><button type="button" onClick=${onClose}>Done</button></div>
  <//>`;
  return html`<${Dialog} title="Invite someone" onClose=${onClose}>
    <form onSubmit=${submit} novalidate>
      <${Field} label="Email" type="email" autocomplete="off" required value=${email} error=${fieldError(error, 'email')}
        onInput=${(e) => setEmail(e.target.value)} />
      <${RoleSelect} roleNames=${roleNames} value=${role} onChange=${setRole} error=${fieldError(error, 'role')} />
      <p class="hint">You get a link to send them. They choose their password when they open it, or use the one of their account if they have one.</p>
      <${ErrorBox} error=${error && !fieldError(error, 'email') && !fieldError(error, 'role') ? error : null} />
      <div class="actions">
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
        <${Submit} busy=${busy}>Create invitation<//>
      </div>
    </form>
  <//>`;
}

/** The one-time link: shown once (only its digest is kept), with a button to copy it. */
function InvitationLink({ invitation }) {
  const link = invitationLink(invitation.token);
  const input = useRef(null);
  const [copied, setCopied] = useState(false);
  useEffect(() => input.current && input.current.select(), []);
  const copy = async () => {
    if (await copyText(link, 'Link')) setCopied(true);
    else input.current.select();
  };
  return html`<div class="invite-ready">
    <p>Send this link to <strong>${invitation.email}</strong>. It makes them <strong>${invitation.role}</strong> and
      works once, until ${formatTime(invitation.expires_at)}.</p>
    <div class="field">
      <label for="invitation-link">Invitation link</label>
      <div class="copy-box">
        <input id="invitation-link" ref=${input} class="mono" readonly value=${link} onFocus=${(e) => e.target.select()} />
        <button type="button" onClick=${copy}>${copied ? 'Copied' : 'Copy link'}</button>
      </div>
    </div>
    <p class="hint">This is the only time the link is shown. If it gets lost, invite the same email again: the old link stops working.</p>
  </div>`;
}

function RoleDialog({ member, roleNames, onChanged, onClose }) {
  const [role, setRole] = useState(member.role);
  const { busy, error, run: submit } = useSubmit(async () => {
    const answer = await api('PATCH', `/api/members/${member.user.id}`, { role });
    onChanged(answer.role);
    toast(`${fullName(member.user)} is now ${answer.role}.`);
    onClose();
  });
  return html`<${Dialog} title=${`Change the role of ${fullName(member.user)}`} onClose=${onClose}>
    <form onSubmit=${submit}>
      <${RoleSelect} roleNames=${roleNames} value=${role} onChange=${setRole} error=${fieldError(error, 'role')} />
      <${ErrorBox} error=${error && !fieldError(error, 'role') ? error : null} />
      <div class="actions">
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
        <${Submit} busy=${busy} disabled=${busy || role === member.role}>Save role<//>
      </div>
    </form>
  <//>`;
}

export function RolesScreen({ ctx }) {
  if (!ctx.can('roles_manage')) return html`<${NoAccess} screen="roles" title="Roles" needs="the permission to manage roles" />`;
  return html`<${Roles} />`;
}

function Roles() {
  const state = useAsync((signal) => api('GET', '/api/roles', undefined, { signal }), []);
  const [editing, setEditing] = useState(null);
  const [deleting, setDeleting] = useState(null);
  return html`<section data-screen="roles" class="roles">
    <div class="screen-head">
      <h1>Roles</h1>
      <button type="button" onClick=${() => setEditing({})}>New role</button>
    </div>
    <p class="hint screen-intro">A member's role decides what they may see and do. The four built-in roles cannot be changed;
      make a custom role for anything else.</p>
    <${Async} state=${state} label="Loading the roles…">${(data) => html`
      <ul class="role-list">
        ${data.roles.map((r) => html`<li key=${r.id} class="role-card" data-testid="role-row" data-role=${r.name} aria-labelledby=${`role-${r.id}`}>
          <div class="role-head">
            <h2 id=${`role-${r.id}`}>${r.name}</h2>
            <span class="badge">${r.builtin ? 'Built-in' : 'Custom'}</span>
            <span class="hint">${r.member_count === 1 ? '1 member' : `${r.member_count} members`}</span>
            ${!r.builtin && html`<span class="role-actions">
              <button type="button" class="secondary small" aria-label=${`Edit the role ${r.name}`} onClick=${() => setEditing(r)}>Edit</button>
              <button type="button" class="secondary small danger-text" aria-label=${`Delete the role ${r.name}`} onClick=${() => setDeleting(r)}>Delete</button>
            </span>`}
          </div>
          ${r.name === 'admin' && r.builtin
            ? html`<p class="role-all">Every permission, now and in future versions.</p>`
            : r.permissions.length === 0
              ? html`<p class="hint">No permissions: can only sign in and chat where invited.</p>`
              : html`<ul class="permission-chips" aria-label=${`Permissions of ${r.name}`}>
                  ${inListOrder(r.permissions).map((p) => html`<li key=${p}>${permissionLabel(p)}</li>`)}
                </ul>`}
        </li>`)}
      </ul>`}<//>
    ${editing && html`<${RoleEditor} role=${editing.id ? editing : null} onClose=${() => setEditing(null)}
      onSaved=${(role, isNew) => {
        state.setData((d) => ({ ...d, roles: isNew ? [...d.roles, role] : d.roles.map((r) => (r.id === role.id ? role : r)) }));
        toast(isNew ? `Role ${role.name} created.` : `Role ${role.name} saved.`);
      }} />`}
    ${deleting && html`<${Confirm} title=${`Delete the role ${deleting.name}?`} action="Delete role" danger onClose=${() => setDeleting(null)}
      onConfirm=${async () => {
        await api('DELETE', `/api/roles/${deleting.id}`);
        toast(`Role ${deleting.name} deleted.`);
        state.setData((d) => ({ ...d, roles: d.roles.filter((r) => r.id !== deleting.id) }));
      }}>
      <p>${deleting.member_count > 0
        ? html`<strong>${deleting.member_count === 1 ? '1 member holds' : `${deleting.member_count} members hold`}</strong> this role: give them another role first.`
        : 'Nobody holds this role. It cannot be brought back once deleted.'}</p>
    <//>`}
  </section>`;
}

function RoleEditor({ role, onSaved, onClose }) {
  const [name, setName] = useState(role ? role.name : '');
  const [chosen, setChosen] = useState(new Set(role ? role.permissions : []));
  const toggle = (p) =>
    setChosen((s) => {
      const next = new Set(s);
      if (next.has(p)) next.delete(p);
      else next.add(p);
      return next;
    });
  const { busy, error, run: submit } = useSubmit(async () => {
    const body = { name: name.trim(), permissions: PERMISSIONS.map(([p]) => p).filter((p) => chosen.has(p)) };
    const saved = role ? await api('PATCH', `/api/roles/${role.id}`, body) : await api('POST', '/api/roles', body);
    onSaved(saved, !role);
    onClose();
  });
  const groups = [...new Set(PERMISSIONS.map(([, g]) => g))];
  const permError = fieldError(error, 'permissions');
  return html`<${Dialog} title=${role ? `Edit the role ${role.name}` : 'New role'} onClose=${onClose} wide>
    <form onSubmit=${submit} novalidate>
      <${Field} label="Name" value=${name} required maxlength="50" autocomplete="off" error=${fieldError(error, 'name') && `The name ${fieldError(error, 'name')}.`}
        hint="Lower-case letters, digits, - and _ (for example: support-lead)." onInput=${(e) => setName(e.target.value)} />
      <div class="permission-groups">
        ${groups.map((g) => html`<fieldset key=${g} class="permission-group">
          <legend>${g}</legend>
          ${PERMISSIONS.filter(([, group]) => group === g).map(([p, , label]) => html`<label key=${p} class="check">
            <input type="checkbox" name="permissions" value=${p} checked=${chosen.has(p)} onChange=${() => toggle(p)} />
            <span>${label}</span>
          </label>`)}
        </fieldset>`)}
      </div>
      ${permError && html`<p class="field-error">${describe(error)}</p>`}
      <${ErrorBox} error=${error && !fieldError(error, 'name') && !permError ? error : null} />
      <div class="actions">
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
        <${Submit} busy=${busy}>${role ? 'Save role' : 'Create role'}<//>
      </div>
    </form>
  <//>`;
}
