// The workspace's chats: the list (unread counts, last message, live), one conversation beside it
// (live messages, typing whispers, older pages, own edits and deletes, read marks, files sent
// as messages), its participants, archiving, and starting a chat. On a phone the list and the
// conversation are two pages (/chats and /chats/:id).
//
// Real time: every chat the list shows is a private channel `private-company.<tenant>.chat.<id>`
// (src/api/broadcasting.rs); the API publishes `message.created|updated|deleted` and
// `participant.added|removed` there (src/api/workspace.rs) to everyone but the socket that wrote,
// so our own writes are applied from their answers. Typing is a client event (a whisper) on the
// same channel: the hub allows client events on private channels only.
import { html, useEffect, useLayoutEffect, useRef, useState } from '../../vendor/htm-preact.module.js';
import { api, describe, upload } from '../lib/api.js';
import { useReconnectCount } from '../lib/realtime.js';
import { Link, navigate } from '../lib/router.js';
import { Async, Confirm, Dialog, Empty, ErrorBox, Field, Loading, Submit, fieldError, formatTime, toast, useAsync } from '../lib/ui.js';
import { FilePicker, MessageFiles, UploadProgress, describeUpload } from './files.js';
import { Avatar, fullName, usePresence } from './presence.js';

/** Messages per page, newest first from the API. */
const PAGE = 30;
/** A whisper at most this often while someone types (the hub allows 10 client events/s). */
const TYPING_EVERY_MS = 2000;
/** How long "X is typing…" stays without a new whisper. */
const TYPING_SHOWN_MS = 4000;
/** Messages by one author closer than this are shown as one group. */
const GROUP_MS = 5 * 60 * 1000;

const CHAT_EVENTS = ['message.created', 'message.updated', 'message.deleted', 'participant.added', 'participant.removed', 'client-typing'];

// Private channels held by this module, counted: the list and the open conversation share the
// open chat's channel, and only the last to let go leaves it.
const held = new Map();

function holdChannel(echo, name) {
  held.set(name, (held.get(name) || 0) + 1);
  return echo.private(name);
}

function releaseChannel(echo, name) {
  const n = (held.get(name) || 1) - 1;
  if (n > 0) {
    held.set(name, n);
  } else {
    held.delete(name);
    echo.leaveChannel('private-' + name);
  }
}

function chatChannel(ctx, id) {
  return `${ctx.channel}.chat.${id}`;
}

/**
 * Calls `on[event](chatId, data)` for the events of every chat in `ids` while mounted. `on` may
 * change at every render: the channel bindings stay, and always call the latest. Returns
 * whether every one of those channels is subscribed (the page's `data-live` says so to tests).
 */
function useChatEvents(ctx, ids, on) {
  const ref = useRef(on);
  ref.current = on;
  const key = [...new Set(ids)].sort((a, b) => a - b).join(',');
  const [live, setLive] = useState('');
  useEffect(() => {
    const echo = ctx.echo;
    if (!echo || !key) return undefined;
    const ready = new Set();
    const bound = key.split(',').map((text) => {
      const id = Number(text);
      const name = chatChannel(ctx, id);
      const channel = holdChannel(echo, name);
      const callbacks = CHAT_EVENTS.map((event) => {
        const cb = (data) => ref.current[event] && ref.current[event](id, data || {});
        channel.listen('.' + event, cb);
        return [event, cb];
      });
      // A channel another component holds is subscribed already: its event has been and gone.
      const subscribed = () => {
        ready.add(id);
        if (ready.size === bound.length) setLive(key);
      };
      const subscription = channel.subscription;
      if (subscription && subscription.subscribed) queueMicrotask(subscribed);
      else if (subscription) subscription.bind('pusher:subscription_succeeded', subscribed);
      return { name, channel, callbacks, subscription, subscribed };
    });
    return () =>
      bound.forEach(({ name, channel, callbacks, subscription, subscribed }) => {
        callbacks.forEach(([event, cb]) => channel.stopListening('.' + event, cb));
        if (subscription) subscription.unbind('pusher:subscription_succeeded', subscribed);
        releaseChannel(echo, name);
      });
  }, [ctx.echo, key]);
  return !!key && live === key;
}

/**
 * The people this member can name: the company's members when their role may list them
 * (members_view), else themselves and whoever is online (the presence channel, open to every
 * member). `listed` says which.
 */
function usePeople(ctx) {
  const online = usePresence(ctx);
  const canList = ctx.can('members_view');
  const members = useAsync((signal) => (canList ? api('GET', '/api/members', undefined, { signal }) : Promise.resolve(null)), [canList]);
  const byId = new Map();
  const add = (u) => u && u.id !== undefined && byId.set(Number(u.id), { ...u, id: Number(u.id) });
  online.forEach(add);
  if (members.data) members.data.members.forEach((m) => add(m.user));
  add(ctx.me.user);
  const me = ctx.me.user.id;
  // With the whole member list, an author not in it is no longer in the company: a deleted
  // account keeps its messages (DELETE /api/me). Without it we cannot tell.
  const gone = (id) => (members.data ? 'Deleted user' : `Member ${id}`);
  const others = [...byId.values()].filter((u) => u.id !== me && !u.disabled).sort((a, b) => fullName(a).localeCompare(fullName(b)));
  return {
    byId,
    others,
    listed: !!members.data,
    name: (id) => (byId.has(id) ? fullName(byId.get(id)) : gone(id)),
    firstName: (id) => (byId.has(id) ? byId.get(id).name || fullName(byId.get(id)) : gone(id)),
    user: (id) => byId.get(id) || (members.data ? { id, name: 'Deleted', surname: 'user' } : { id, name: 'Member', surname: String(id) }),
  };
}

/** A message from outside the company (an inbound webhook) names its sender itself; it has no member. */
function authorName(message, people) {
  return message.external_author ? `${message.external_author.name} (external)` : people.name(message.user_id);
}

function authorUser(message, people) {
  return message.external_author ? { id: 0, name: message.external_author.name, surname: '' } : people.user(message.user_id);
}

/** Whether this member may rename, archive and change the participants of a chat (src/workspace/chats.rs). */
function canManage(ctx, chat) {
  return ctx.membership.role === 'admin' || (chat.participant && ctx.can('chats_create'));
}

function activity(chat) {
  return chat.last_message ? chat.last_message.created_at : chat.created_at;
}

/** Most recently active first, as the API sorts. */
function sortChats(chats) {
  return [...chats].sort((a, b) => {
    const x = activity(a);
    const y = activity(b);
    if (x !== y) return x < y ? 1 : -1;
    return b.id - a.id;
  });
}

export function ChatsScreen({ ctx, chatId }) {
  const me = ctx.me.user.id;
  const people = usePeople(ctx);
  const resync = useReconnectCount();
  const list = useAsync((signal) => api('GET', '/api/chats', undefined, { signal }), [resync]);
  const [creating, setCreating] = useState(false);
  const openRef = useRef(chatId);
  openRef.current = chatId;
  const chats = list.data ? list.data.chats : [];

  const setChats = (f) => list.setData((d) => (d ? { ...d, chats: sortChats(f(d.chats)) } : d));
  const updateChat = (id, f) => setChats((cs) => cs.map((c) => (c.id === id ? f(c) : c)));
  const putChat = (chat) => setChats((cs) => [chat, ...cs.filter((c) => c.id !== chat.id)]);
  const refreshChat = (id) =>
    api('GET', `/api/chats/${id}`).then(putChat, (err) => {
      if (err.status === 404) setChats((cs) => cs.filter((c) => c.id !== id));
    });

  const listLive = useChatEvents(
    ctx,
    chats.map((c) => c.id),
    {
      'message.created': (id, { message }) => {
        if (!message) return;
        updateChat(id, (c) => ({
          ...c,
          last_message: message,
          unread_count: c.participant && message.user_id !== me && openRef.current !== id ? c.unread_count + 1 : c.unread_count,
        }));
      },
      'message.updated': (id, { message }) =>
        message && updateChat(id, (c) => (c.last_message && c.last_message.id === message.id ? { ...c, last_message: message } : c)),
      // The list shows the newest message that is not deleted, and counts only those unread: ask.
      'message.deleted': (id) => refreshChat(id),
      'participant.added': (id) => refreshChat(id),
      'participant.removed': (id) => refreshChat(id),
    },
  );

  // Being added to a chat arrives on the person's own channel.
  useEffect(() => {
    const echo = ctx.echo;
    if (!echo) return undefined;
    const channel = echo.private(`App.Models.User.${me}`);
    const cb = (n) => {
      if (n && n.type === 'chat.added' && n.tenant_id === ctx.tenant.id) refreshChat(Number(n.chat_id));
    };
    channel.listen('.notification', cb);
    // Other screens may listen here too: stop our listener, never leave the channel.
    return () => channel.stopListening('.notification', cb);
  }, [ctx.echo]);

  const active = chats.filter((c) => !c.archived_at);
  const archived = chats.filter((c) => c.archived_at);
  const open = chats.find((c) => c.id === chatId) || null;
  const row = (c) => html`<${ChatRow} key=${c.id} chat=${c} current=${c.id === chatId} people=${people} me=${me} />`;

  return html`<section data-screen="chats" class=${`chats${chatId ? ' has-open' : ''}`}>
    <div class="chat-list-pane" data-live=${listLive ? 'true' : undefined}>
      <div class="pane-head">
        <h1>Chats</h1>
        ${ctx.can('chats_create') && html`<button type="button" class="small" disabled=${ctx.readOnly} title=${ctx.readOnly ? 'The company is read-only' : undefined} onClick=${() => setCreating(true)}>New chat</button>`}
      </div>
      <${Async} state=${list} label="Loading chats…">
        ${() =>
          chats.length === 0
            ? html`<${Empty}>No chats yet.${ctx.can('chats_create') ? ' Start one with “New chat”.' : ' When someone adds you to a chat, it shows here.'}<//>`
            : html`<ul class="chat-list" aria-label="Chats">${active.map(row)}</ul>
                ${active.length === 0 && html`<${Empty}>Every chat is archived.<//>`}
                ${archived.length > 0 &&
                html`<details class="archived-chats" open=${archived.some((c) => c.id === chatId)}>
                  <summary>Archived chats (${archived.length})</summary>
                  <ul class="chat-list" aria-label="Archived chats">${archived.map(row)}</ul>
                </details>`}`}
      <//>
    </div>
    <div class="conversation-pane">
      ${chatId
        ? html`<${Conversation}
            key=${chatId}
            ctx=${ctx}
            chatId=${chatId}
            listed=${open}
            people=${people}
            resync=${resync}
            onSummary=${putChat}
            onRead=${(id) => updateChat(id, (c) => ({ ...c, unread_count: 0 }))}
            onSent=${(id, message) => updateChat(id, (c) => ({ ...c, last_message: message }))}
            onMessageChanged=${(id) => refreshChat(id)}
            onLeft=${(id) => {
              setChats((cs) => cs.filter((c) => c.id !== id));
              navigate('/chats');
            }}
          />`
        : html`<div class="no-chat"><p>Choose a chat to read it${ctx.can('chats_create') ? ', or start a new one' : ''}.</p></div>`}
    </div>
    ${creating &&
    html`<${NewChatDialog}
      ctx=${ctx}
      people=${people}
      onClose=${() => setCreating(false)}
      onCreated=${(chat) => {
        putChat(chat);
        setCreating(false);
        navigate(`/chats/${chat.id}`);
      }}
    />`}
  </section>`;
}

function ChatRow({ chat, current, people, me }) {
  const last = chat.last_message;
  const who = last ? (last.user_id === me ? 'You' : last.external_author ? last.external_author.name : people.firstName(last.user_id)) : '';
  const unread = chat.unread_count > 0 && !current;
  return html`<li data-testid="chat-row" data-chat-id=${chat.id} class=${unread ? 'unread' : ''}>
    <${Link} to=${`/chats/${chat.id}`} aria-current=${current ? 'page' : undefined}>
      <span class="chat-title">${chat.title}${chat.kind === 'direct' ? html`<span class="chat-kind"> · direct</span>` : ''}</span>
      <span class="chat-time">${last ? html`<time datetime=${last.created_at} title=${formatTime(last.created_at)}>${listTime(last.created_at)}</time>` : ''}</span>
      <span class=${unread ? 'chat-last' : 'chat-last wide'}>${last ? `${who}: ${last.body}` : 'No messages yet'}</span>
      ${unread
        ? html`<span class="badge count" data-testid="unread"><span class="visually-hidden">, </span>${chat.unread_count}<span class="visually-hidden"> unread</span></span>`
        : ''}
    <//>
  </li>`;
}

const dayMonth = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const dayMonthYear = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });

/** A list row's time: the hour today, the day this year, else the date. */
function listTime(value) {
  const d = new Date(value);
  if (isNaN(d)) return formatTime(value, { short: true });
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return formatTime(value, { short: true });
  return (d.getFullYear() === now.getFullYear() ? dayMonth : dayMonthYear).format(d);
}

function Conversation({ ctx, chatId, listed, people, resync, onSummary, onRead, onSent, onMessageChanged, onLeft }) {
  const me = ctx.me.user.id;
  const state = useAsync(
    async (signal) => {
      const [chat, page] = await Promise.all([
        api('GET', `/api/chats/${chatId}`, undefined, { signal }),
        api('GET', `/api/chats/${chatId}/messages?limit=${PAGE}`, undefined, { signal }),
      ]);
      return { chat, messages: page.messages.reverse(), next: page.next };
    },
    [chatId, resync],
  );
  const { data, setData } = state;
  const chat = data ? { ...data.chat, ...(listed || {}) } : null;
  const [typing, setTyping] = useState({});
  const [announce, setAnnounce] = useState('');
  const [showParticipants, setShowParticipants] = useState(false);
  const [loadingEarlier, setLoadingEarlier] = useState(false);
  const [earlierError, setEarlierError] = useState(null);
  const scroller = useRef(null);
  const composer = useRef(null);
  // What the next render does to the scroll position: 'bottom', 'stay' (near the bottom:
  // follow), or a height to keep the view still after older messages went in above.
  const scrollPlan = useRef('bottom');
  const marked = useRef(0);
  const timers = useRef({});

  const setMessages = (f) => setData((d) => (d ? { ...d, messages: f(d.messages) } : d));
  const nearBottom = () => {
    const el = scroller.current;
    return !el || el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  };

  const stopTyping = (userId) => {
    clearTimeout(timers.current[userId]);
    delete timers.current[userId];
    setTyping((t) => {
      if (!(userId in t)) return t;
      const next = { ...t };
      delete next[userId];
      return next;
    });
  };
  useEffect(() => () => Object.values(timers.current).forEach(clearTimeout), []);

  const live = useChatEvents(ctx, [chatId], {
    'message.created': (_, { message }) => {
      if (!message) return;
      scrollPlan.current = nearBottom() ? 'bottom' : 'stay';
      setMessages((ms) => (ms.some((m) => m.id === message.id) ? ms : [...ms, message]));
      stopTyping(message.user_id);
      if (message.user_id !== me) setAnnounce(announcement(message, people));
    },
    'message.updated': (_, { message }) => message && setMessages((ms) => ms.map((m) => (m.id === message.id ? keepFiles(m, message) : m))),
    // A deleted message's files are deleted with it.
    'message.deleted': (_, { id }) => setMessages((ms) => ms.map((m) => (m.id === id ? { ...m, body: '', files: undefined, deleted_at: m.deleted_at || new Date().toISOString() } : m))),
    'participant.removed': (_, { user_id }) => {
      if (user_id === me) state.reload();
    },
    'client-typing': (_, whisper) => {
      const id = Number(whisper.user_id);
      if (!id || id === me) return;
      if (whisper.typing === false) {
        stopTyping(id);
        return;
      }
      clearTimeout(timers.current[id]);
      timers.current[id] = setTimeout(() => stopTyping(id), TYPING_SHOWN_MS);
      // The whisper's name is the sender's word; a name we know is ours.
      const name = people.byId.has(id) ? people.firstName(id) : String(whisper.name || `Member ${id}`).slice(0, 60);
      setTyping((t) => (t[id] === name ? t : { ...t, [id]: name }));
    },
  });

  // Follow the conversation: to the bottom when it opens and when a message comes while the
  // reader is at the bottom; still when older messages go in above.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el || !data) return;
    const plan = scrollPlan.current;
    if (plan === 'bottom') el.scrollTop = el.scrollHeight;
    else if (typeof plan === 'number') el.scrollTop += el.scrollHeight - plan;
    scrollPlan.current = 'stay';
  }, [data && data.messages]);

  // A reader at the bottom stays there when the pane changes size (a phone's keyboard, a
  // rotated screen).
  const atBottom = useRef(true);
  const hasData = !!data;
  useEffect(() => {
    const el = scroller.current;
    if (!el || typeof ResizeObserver === 'undefined') return undefined;
    const onScroll = () => {
      atBottom.current = nearBottom();
    };
    const observer = new ResizeObserver(() => {
      if (atBottom.current) el.scrollTop = el.scrollHeight;
    });
    el.addEventListener('scroll', onScroll, { passive: true });
    observer.observe(el);
    return () => {
      el.removeEventListener('scroll', onScroll);
      observer.disconnect();
    };
  }, [hasData]);

  // Opening a chat from the list puts the reader in its composer.
  const focusedOnce = useRef(false);
  useEffect(() => {
    if (!data || focusedOnce.current) return;
    focusedOnce.current = true;
    const active = document.activeElement;
    const fromList = !active || active === document.body || !!active.closest('.chat-list, .chat-list-pane, main');
    if (fromList && composer.current) composer.current.focus();
  }, [data]);

  // Read marks: everything shown is read once the page is visible.
  const lastId = data && data.messages.length ? data.messages[data.messages.length - 1].id : 0;
  const participant = !!(chat && chat.participant);
  useEffect(() => {
    if (!participant || !lastId) return undefined;
    const mark = () => {
      if (document.visibilityState !== 'visible' || lastId <= marked.current) return;
      marked.current = lastId;
      api('POST', `/api/chats/${chatId}/read`, { message_id: lastId }).then(
        () => onRead(chatId),
        () => {
          marked.current = 0;
        },
      );
    };
    mark();
    document.addEventListener('visibilitychange', mark);
    return () => document.removeEventListener('visibilitychange', mark);
  }, [participant, lastId, chatId]);

  // Typing: a whisper when typing starts and every TYPING_EVERY_MS while it goes on.
  const lastWhisper = useRef(0);
  const whisper = (data) => {
    if (!ctx.echo) return;
    try {
      ctx.echo.private(chatChannel(ctx, chatId)).whisper('typing', data);
    } catch {
      // Not subscribed yet: typing is a courtesy, never worth an error.
    }
  };
  const onTyping = (text) => {
    const now = Date.now();
    if (!text.trim()) {
      if (lastWhisper.current) whisper({ user_id: me, typing: false });
      lastWhisper.current = 0;
      return;
    }
    if (now - lastWhisper.current < TYPING_EVERY_MS) return;
    lastWhisper.current = now;
    whisper({ user_id: me, name: ctx.me.user.name || fullName(ctx.me.user), typing: true });
  };

  const send = async (body) => {
    const message = await api('POST', `/api/chats/${chatId}/messages`, { body });
    lastWhisper.current = 0;
    whisper({ user_id: me, typing: false });
    scrollPlan.current = 'bottom';
    setMessages((ms) => (ms.some((m) => m.id === message.id) ? ms : [...ms, message]));
    onSent(chatId, message);
  };

  // A file is a message of its own: its text is the caption, or the file's name.
  const attach = async (file, caption, onProgress) => {
    const query = { name: file.name };
    if (caption.trim()) query.caption = caption;
    const message = await upload(`/api/chats/${chatId}/files`, file, { query, onProgress });
    lastWhisper.current = 0;
    whisper({ user_id: me, typing: false });
    scrollPlan.current = 'bottom';
    setMessages((ms) => (ms.some((m) => m.id === message.id) ? ms : [...ms, message]));
    onSent(chatId, message);
  };

  const loadEarlier = async () => {
    setLoadingEarlier(true);
    setEarlierError(null);
    try {
      const page = await api('GET', `/api/chats/${chatId}/messages?limit=${PAGE}&before=${data.next}`);
      scrollPlan.current = scroller.current ? scroller.current.scrollHeight : 'stay';
      setData((d) => {
        const known = new Set(d.messages.map((m) => m.id));
        return { ...d, next: page.next, messages: [...page.messages.reverse().filter((m) => !known.has(m.id)), ...d.messages] };
      });
    } catch (err) {
      setEarlierError(err);
    } finally {
      setLoadingEarlier(false);
    }
  };

  const replace = (message) => {
    setMessages((ms) => ms.map((m) => (m.id === message.id ? keepFiles(m, message) : m)));
    onMessageChanged(chatId);
  };
  const focusComposer = () => setTimeout(() => composer.current && composer.current.focus(), 0);

  const archive = async (archived) => {
    try {
      const summary = await api('PATCH', `/api/chats/${chatId}`, { archived });
      setData((d) => ({ ...d, chat: summary }));
      onSummary(summary);
      toast(archived ? `“${summary.title}” is archived.` : `“${summary.title}” is active again.`);
    } catch (err) {
      toast(describe(err), 'error');
    }
  };

  const back = html`<${Link} to="/chats" class="chat-back-link"><span aria-hidden="true">←</span>All chats<//>`;
  if (state.error && !data) {
    return html`<div class="conversation" data-screen="chat">${back}<${ErrorBox} error=${state.error} retry=${state.reload} /></div>`;
  }
  if (!data) return html`<div class="conversation" data-screen="chat">${back}<${Loading} label="Loading the conversation…" /></div>`;

  const manage = canManage(ctx, chat);
  const typers = Object.values(typing);
  return html`<section class="conversation" data-screen="chat" data-live=${live ? 'true' : undefined} aria-labelledby="conversation-title">
    <div class="conversation-head">
      ${back}
      <div class="conversation-title">
        <h2 id="conversation-title">${chat.title}</h2>
        <span class="conversation-sub">
          ${chat.kind === 'direct' ? 'Direct chat' : 'Group'} ·
          <button type="button" class="link" onClick=${() => setShowParticipants(true)}>
            ${chat.participant_count} ${chat.participant_count === 1 ? 'participant' : 'participants'}
          </button>
          ${chat.archived_at && html` · <span class="badge">Archived</span>`}
        </span>
      </div>
      ${manage &&
      html`<button type="button" class="secondary small" onClick=${() => archive(!chat.archived_at)}>${chat.archived_at ? 'Unarchive' : 'Archive'}</button>`}
    </div>
    <div class="messages" ref=${scroller} tabindex="0" role="region" aria-label=${`Messages in ${chat.title}`}>
      ${data.next &&
      html`<div class="earlier">
        <button type="button" class="secondary small" disabled=${loadingEarlier} onClick=${loadEarlier}>${loadingEarlier ? 'Loading…' : 'Load earlier messages'}</button>
        <${ErrorBox} error=${earlierError} />
      </div>`}
      ${data.messages.length === 0
        ? html`<p class="no-messages">No messages yet.${participant && !chat.archived_at ? ' Say hello!' : ''}</p>`
        : html`<ol class="message-list">
            ${data.messages.map((m, i) => html`<${MessageItem}
              key=${m.id}
              message=${m}
              previous=${data.messages[i - 1]}
              mine=${m.user_id === me}
              editable=${m.user_id === me && !chat.archived_at}
              people=${people}
              chatId=${chatId}
              onChanged=${replace}
              onDone=${focusComposer}
            />`)}
          </ol>`}
    </div>
    <p class="typing" aria-live="polite" data-testid="typing">${typingText(typers)}</p>
    <p class="visually-hidden" aria-live="polite">${announce}</p>
    ${!participant
      ? html`<p class="composer-note">You can read this chat but not write in it: only its participants can.</p>`
      : chat.archived_at
        ? html`<p class="composer-note">This chat is archived.${manage ? ' Unarchive it to write again.' : ''}</p>`
        : html`<${Composer} inputRef=${composer} title=${chat.title} onSend=${send} onAttach=${attach} onTyping=${onTyping} />`}
    ${showParticipants &&
    html`<${ParticipantsDialog}
      ctx=${ctx}
      chat=${chat}
      people=${people}
      manage=${manage}
      onClose=${() => setShowParticipants(false)}
      onChanged=${(summary) => {
        setData((d) => ({ ...d, chat: summary }));
        onSummary(summary);
      }}
      onLeft=${() => onLeft(chatId)}
    />`}
  </section>`;
}

/** A new message in words for a screen reader, a file's name included. */
function announcement(message, people) {
  const author = authorName(message, people);
  if (!message.files || !message.files.length) return `${author}: ${message.body}`;
  const names = message.files.map((f) => f.name).join(', ');
  return fileNameOnly(message) ? `${author} sent a file: ${names}` : `${author} sent a file, ${names}: ${message.body}`;
}

/** A message as an edit left it: the answer and the event of an edit carry no files, which stay. */
function keepFiles(old, message) {
  return message.deleted_at || message.files ? message : { ...message, files: old.files };
}

function typingText(names) {
  if (names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return 'Several people are typing…';
}

function MessageItem({ message, previous, mine, editable, people, chatId, onChanged, onDone }) {
  const [editing, setEditing] = useState(false);
  const [deleting, setDeleting] = useState(false);
  const deleted = !!message.deleted_at;
  const continued =
    previous &&
    previous.user_id === message.user_id &&
    (previous.external_author && previous.external_author.name) === (message.external_author && message.external_author.name) &&
    !previous.deleted_at &&
    Date.parse(message.created_at) - Date.parse(previous.created_at) < GROUP_MS;
  const author = mine ? 'You' : authorName(message, people);
  const classes = ['message', mine && 'mine', deleted && 'deleted', continued && 'continued'].filter(Boolean).join(' ');
  return html`<li data-testid="message" data-message-id=${message.id} class=${classes}>
    ${!mine && !continued ? html`<${Avatar} user=${authorUser(message, people)} small />` : html`<span class="avatar-space" aria-hidden="true"></span>`}
    <div class="bubble">
      <p class=${continued && !message.edited_at ? 'message-meta visually-hidden' : 'message-meta'}>
        <span class="author">${author}</span>
        <time datetime=${message.created_at}>${formatTime(message.created_at, { short: true })}</time>
        ${message.edited_at && !deleted && html`<span class="edited" title=${`Edited ${formatTime(message.edited_at)}`}>edited</span>`}
      </p>
      ${deleted
        ? html`<p class="message-body">message deleted</p>`
        : editing
          ? html`<${EditMessage}
              message=${message}
              chatId=${chatId}
              onSaved=${(m) => {
                setEditing(false);
                onChanged(m);
                onDone();
              }}
              onCancel=${() => {
                setEditing(false);
                onDone();
              }}
            />`
          : html`${!fileNameOnly(message) && html`<p class="message-body">${message.body}</p>`}<${MessageFiles} files=${message.files} />`}
    </div>
    ${editable && !deleted && !editing
      ? html`<div class="message-actions">
          <button type="button" class="link" onClick=${() => setEditing(true)}>Edit<span class="visually-hidden"> message</span></button>
          <button type="button" class="link danger-link" onClick=${() => setDeleting(true)}>Delete<span class="visually-hidden"> message</span></button>
        </div>`
      : ''}
    ${deleting &&
    html`<${Confirm}
      title="Delete this message?"
      action="Delete"
      danger
      onConfirm=${async () => {
        await api('DELETE', `/api/chats/${chatId}/messages/${message.id}`);
        onChanged({ ...message, body: '', deleted_at: new Date().toISOString() });
      }}
      onClose=${() => {
        setDeleting(false);
        onDone();
      }}
    >
      <p>Everyone in the chat will see “message deleted” in its place.</p>
      <blockquote class="quote">${message.body}</blockquote>
    <//>`}
  </li>`;
}

/** A file sent without a caption: its text is the file's name, which the link shows already. */
function fileNameOnly(message) {
  return !!message.files && message.files.length === 1 && message.body === message.files[0].name && !message.edited_at;
}

function EditMessage({ message, chatId, onSaved, onCancel }) {
  const [body, setBody] = useState(message.body);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const ref = useRef(null);
  useEffect(() => {
    const el = ref.current && ref.current.querySelector('textarea');
    if (el) {
      el.focus();
      el.setSelectionRange(el.value.length, el.value.length);
    }
  }, []);
  const save = async (e) => {
    if (e) e.preventDefault();
    if (busy) return;
    setBusy(true);
    setError(null);
    try {
      onSaved(await api('PATCH', `/api/chats/${chatId}/messages/${message.id}`, { body }));
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  const onKeyDown = (e) => {
    if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      onCancel();
    } else if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      save();
    }
  };
  return html`<form class="edit-message" ref=${ref} onSubmit=${save}>
    <${Field} as="textarea" label="Edit message" value=${body} rows="2" error=${fieldError(error, 'body')}
      onInput=${(e) => setBody(e.target.value)} onKeyDown=${onKeyDown} />
    ${error && !fieldError(error, 'body') && html`<${ErrorBox} error=${error} />`}
    <div class="actions">
      <button type="button" class="secondary small" onClick=${onCancel}>Cancel</button>
      <${Submit} busy=${busy} class="small">Save<//>
    </div>
  </form>`;
}

function Composer({ inputRef, title, onSend, onAttach, onTyping }) {
  const [text, setText] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  // An upload's error, in words (describeUpload): not the text's, which stays valid.
  const [fileError, setFileError] = useState(null);
  const [progress, setProgress] = useState(null);
  const sending = useRef(false);
  const send = async (e) => {
    if (e) e.preventDefault();
    const body = text;
    if (!body.trim() || sending.current) return;
    sending.current = true;
    setBusy(true);
    setError(null);
    setFileError(null);
    try {
      await onSend(body);
      setText('');
    } catch (err) {
      setError(err);
    } finally {
      sending.current = false;
      setBusy(false);
    }
  };
  // The text typed so far goes with the file as its caption.
  const attach = async (file) => {
    if (sending.current) return;
    sending.current = true;
    setBusy(true);
    setError(null);
    setFileError(null);
    setProgress({ name: file.name, sent: 0, total: file.size });
    try {
      await onAttach(file, text, (sent, total) => setProgress({ name: file.name, sent, total }));
      setText('');
    } catch (err) {
      setFileError(describeUpload(err, file));
    } finally {
      sending.current = false;
      setBusy(false);
      setProgress(null);
    }
  };
  // Enter sends, Shift+Enter starts a new line; an input method composing a word keeps Enter.
  const onKeyDown = (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  };
  return html`<form class="composer" onSubmit=${send}>
    <div class="field">
      <label for="composer-text" class="visually-hidden">Message</label>
      <textarea
        id="composer-text"
        ref=${inputRef}
        rows="1"
        placeholder=${`Message ${title}`}
        aria-describedby="composer-hint${error || fileError ? ' composer-err' : ''}"
        aria-invalid=${error ? 'true' : undefined}
        value=${text}
        onInput=${(e) => {
          setText(e.target.value);
          onTyping(e.target.value);
        }}
        onKeyDown=${onKeyDown}
      ></textarea>
      <p class="hint composer-hint" id="composer-hint">Enter sends, Shift+Enter starts a new line. A file you attach takes this text as its caption.</p>
      ${progress && html`<${UploadProgress} ...${progress} />`}
      ${(error || fileError) && html`<p class="field-error" id="composer-err" role="alert">${error ? describe(error) : fileError}</p>`}
    </div>
    <${FilePicker} id="composer-file" busy=${busy} onPick=${attach} className="button secondary composer-attach">
      Attach<span class="visually-hidden"> a file</span>
    <//>
    <button type="submit" disabled=${busy || !text.trim()} aria-busy=${busy ? 'true' : undefined}>Send</button>
  </form>`;
}

function ParticipantsDialog({ ctx, chat, people, manage, onClose, onChanged, onLeft }) {
  const me = ctx.me.user.id;
  const list = useAsync((signal) => api('GET', `/api/chats/${chat.id}/participants`, undefined, { signal }), [chat.id]);
  const [adding, setAdding] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const [leaving, setLeaving] = useState(false);
  const ids = list.data ? list.data.participants.map((p) => p.user_id) : [];
  const candidates = people.others.filter((u) => !ids.includes(u.id));
  const act = async (f) => {
    setBusy(true);
    setError(null);
    try {
      await f();
      list.reload();
      onChanged(await api('GET', `/api/chats/${chat.id}`));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const add = (e) => {
    e.preventDefault();
    if (!adding) return;
    act(async () => {
      await api('POST', `/api/chats/${chat.id}/participants`, { user_id: Number(adding) });
      setAdding('');
    });
  };
  const remove = (id) => act(() => api('DELETE', `/api/chats/${chat.id}/participants/${id}`));
  return html`<${Dialog} title=${`Participants of ${chat.title}`} onClose=${onClose}>
    <${Async} state=${list} label="Loading participants…">
      ${() => html`<ul class="participants">
        ${list.data.participants.map(
          (p) => html`<li key=${p.user_id}>
            <${Avatar} user=${people.user(p.user_id)} small />
            <span class="participant-name">${people.name(p.user_id)}${p.user_id === me ? ' (you)' : ''}</span>
            ${p.user_id === me
              ? html`<button type="button" class="secondary small" disabled=${busy} onClick=${() => setLeaving(true)}>Leave chat</button>`
              : manage && chat.kind === 'group'
                ? html`<button type="button" class="secondary small" disabled=${busy} onClick=${() => remove(p.user_id)}>Remove<span class="visually-hidden"> ${people.name(p.user_id)}</span></button>`
                : ''}
          </li>`,
        )}
      </ul>`}
    <//>
    <${ErrorBox} error=${error} />
    ${manage && chat.kind === 'group' && list.data
      ? html`<form class="add-participant" onSubmit=${add}>
          <${Field} as="select" label="Add a participant" value=${adding} onChange=${(e) => setAdding(e.target.value)}
            hint=${people.listed ? undefined : 'Your role cannot list the company’s members: only people online now are offered.'}>
            <option value="">${candidates.length ? 'Choose a person…' : 'No one else to add'}</option>
            ${candidates.map((u) => html`<option key=${u.id} value=${u.id}>${fullName(u)}${u.email ? ` (${u.email})` : ''}</option>`)}
          <//>
          <div class="actions"><${Submit} busy=${busy} disabled=${busy || !adding}>Add<//></div>
        </form>`
      : chat.kind === 'direct'
        ? html`<p class="hint">A direct chat is between two people: no one can be added.</p>`
        : ''}
    ${leaving &&
    html`<${Confirm}
      title="Leave this chat?"
      action="Leave"
      danger
      onConfirm=${async () => {
        await api('DELETE', `/api/chats/${chat.id}/participants/${me}`);
        onLeft();
      }}
      onClose=${() => setLeaving(false)}
    ><p>You will no longer see “${chat.title}” unless someone adds you again.</p><//>`}
  <//>`;
}

function NewChatDialog({ ctx, people, onClose, onCreated }) {
  const [title, setTitle] = useState('');
  const [kind, setKind] = useState('group');
  const [chosen, setChosen] = useState([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const direct = kind === 'direct';
  const toggle = (id, on) => setChosen((c) => (direct ? (on ? [id] : []) : on ? [...c, id] : c.filter((x) => x !== id)));
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    let name = title.trim();
    // A direct chat is named after the two people unless the creator names it.
    if (!name && direct && chosen.length === 1) name = `${people.firstName(ctx.me.user.id)} and ${people.firstName(chosen[0])}`;
    try {
      onCreated(await api('POST', '/api/chats', { title: name, kind, participant_ids: chosen }));
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  const participantsError = fieldError(error, 'participant_ids');
  return html`<${Dialog} title="New chat" onClose=${onClose} wide>
    <form onSubmit=${submit} class="new-chat">
      <${Field} label="Title" value=${title} maxlength="200" error=${fieldError(error, 'title')}
        hint=${direct ? 'Optional for a direct chat: it is named after the two of you.' : undefined}
        onInput=${(e) => setTitle(e.target.value)} />
      <fieldset class="choice">
        <legend>Kind</legend>
        <label><input type="radio" name="kind" value="group" checked=${!direct} onChange=${() => setKind('group')} /> Group: any number of people, who can be added later</label>
        <label><input type="radio" name="kind" value="direct" checked=${direct} onChange=${() => { setKind('direct'); setChosen((c) => c.slice(0, 1)); }} /> Direct: you and one other person</label>
      </fieldset>
      <fieldset class="choice people-choice" aria-describedby=${participantsError ? 'new-chat-people-err' : undefined}>
        <legend>${direct ? 'With' : 'Participants'}</legend>
        ${!people.listed && html`<p class="hint">Your role cannot list the company’s members: only people online now are offered. You are added anyway.</p>`}
        ${people.others.length === 0
          ? html`<p class="hint">No one else to choose${people.listed ? '' : ' right now'}.</p>`
          : html`<div class="people-grid">${people.others.map(
              (u) => html`<label key=${u.id} class="person-option">
                <input type=${direct ? 'radio' : 'checkbox'} name="participants" value=${u.id} checked=${chosen.includes(u.id)}
                  onChange=${(e) => toggle(u.id, e.target.checked)} />
                <${Avatar} user=${u} small />
                <span>${fullName(u)}</span>
              </label>`,
            )}</div>`}
        ${participantsError && html`<p class="field-error" id="new-chat-people-err">${participantsError}</p>`}
      </fieldset>
      ${error && !error.fields && html`<${ErrorBox} error=${error} />`}
      <div class="actions">
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
        <${Submit} busy=${busy}>Start chat<//>
      </div>
    </form>
  <//>`;
}
