// Chat: the conversation list (presence dots, unread counts), the open conversation with live
// messages, the typing indicator, image/video previews of media messages, older history loaded
// on scroll, and resume after a reconnect (events are replayed by seq; messages are keyed by id,
// so none is lost or shown twice).
import { api, upload, h, on, me, send, toast, explain, formatTime, formatSize, userPicker, page, focus,
  setUnreadMessages, unreadMessageCount, rememberName, nameOf } from './app.js';

const root = page();
const convs = new Map(); // peer id → {user, last_message, unread, presence}
const presence = new Map(); // user id → online | away | offline, from presence_update (newer than the list)
let peer = null;         // {id, display_name, email}
let olderCursor = null;
let loadingOlder = false;
let typingTimer = null;  // hides the indicator when the peer stops refreshing it
let lastTypingSent = 0;
let typingIdle = null;

const list = h('ul', { id: 'conversations', class: 'conversations', 'aria-label': 'Conversations' });
const header = h('header', { class: 'row conv-head' }, h('h2', { id: 'peer-name' }, 'Pick a conversation'));
const typing = h('p', { id: 'typing', class: 'hint typing', 'aria-live': 'polite' }, '');
const messages = h('ol', { id: 'messages', class: 'messages', 'aria-live': 'polite', 'aria-label': 'Messages' });
const text = h('textarea', { id: 'message-input', rows: '2', maxlength: '10000', 'aria-label': 'Message', disabled: true });
const attach = h('input', { type: 'file', id: 'attach', class: 'sr-only', accept: 'image/*,video/*,*/*' });
const compose = h('form', { class: 'compose', id: 'compose' },
  text,
  h('label', { class: 'button', for: 'attach', title: 'Send a file, image or video' }, 'Attach'), attach,
  h('button', { type: 'submit', id: 'send', disabled: true }, 'Send'));
const sendProgress = h('p', { id: 'send-progress', class: 'hint' });

root.append(h('div', { class: 'chat' },
  h('nav', { class: 'card conv-list', 'aria-label': 'Conversation list' },
    userPicker('New conversation with', (u) => openConversation(u)), list),
  h('section', { class: 'card conv', 'aria-labelledby': 'peer-name' }, header, messages, typing, sendProgress, compose)));

// ---------- the conversation list ----------

function dot(status) {
  return h('span', { class: `presence ${status || 'offline'}`, title: status || 'offline', role: 'img', 'aria-label': status || 'offline' });
}

function drawList() {
  const sorted = [...convs.values()].sort((a, b) => (a.last_message.id < b.last_message.id ? 1 : -1));
  list.replaceChildren(...sorted.map((c) => {
    const snippet = c.last_message.type === 'text' ? c.last_message.content : `[${c.last_message.type}] ${c.last_message.media?.name || c.last_message.content || ''}`;
    return h('li', { dataset: { userId: c.user.id }, class: peer && peer.id === c.user.id ? 'current' : '' },
      h('button', { type: 'button', onclick: () => openConversation(c.user) },
        dot(presence.get(c.user.id) || c.presence), ' ', h('strong', { class: 'name' }, c.user.display_name),
        c.unread ? h('span', { class: 'count unread' }, String(c.unread)) : '',
        h('br'), h('span', { class: 'hint snippet' }, snippet.slice(0, 80))));
  }));
  if (!convs.size) list.append(h('li', { class: 'hint' }, 'No conversations yet: start one above.'));
  setUnreadMessages([...convs.values()].reduce((n, c) => n + c.unread, 0));
}

async function loadList() {
  try {
    const r = await api('GET', '/api/messages/conversations?limit=200');
    convs.clear();
    for (const c of r.conversations) {
      convs.set(c.user.id, c);
      presence.set(c.user.id, c.presence);
      rememberName(c.user.id, c.user.display_name);
    }
    if (peer && convs.has(peer.id)) convs.get(peer.id).unread = 0;
    drawList();
  } catch (e) { toast(explain(e), 'error'); }
}

// ---------- messages ----------

function mediaOf(m) {
  if (!m.media) return '';
  const url = `/api/files/download/${encodeURIComponent(m.media.file_id)}`;
  const link = h('a', { href: url, download: m.media.name }, `${m.media.name} (${formatSize(m.media.size)})`);
  if (m.type !== 'image' && m.type !== 'video') return h('p', { class: 'media' }, link);
  // The file is scanned before anyone may fetch it: retry the preview while it is pending.
  const el = m.type === 'image'
    ? h('img', { alt: m.media.name, class: 'preview', loading: 'lazy' })
    : h('video', { controls: true, preload: 'metadata', class: 'preview' });
  let tries = 0;
  el.addEventListener('error', () => {
    if (tries++ < 10) setTimeout(() => { el.src = `${url}?retry=${tries}`; }, 2000);
  });
  el.src = url;
  return h('figure', { class: 'media' }, el, h('figcaption', {}, link));
}

function item(m) {
  const mine = m.sender_id === me.id;
  return h('li', { class: mine ? 'mine' : 'theirs', dataset: { id: m.id } },
    h('span', { class: 'sender' }, mine ? 'You' : (peer ? peer.display_name : '')), ' ',
    h('time', { class: 'hint', datetime: m.created_at }, formatTime(m.created_at)),
    m.content ? h('p', { class: 'content' }, m.content) : '',
    mediaOf(m));
}

function has(id) { return !!messages.querySelector(`li[data-id="${CSS.escape(id)}"]`); }

/** Adds messages in id order (ids are time-ordered), skipping ones already shown. */
function addMessages(ms, { scroll = true } = {}) {
  for (const m of ms) {
    if (has(m.id)) continue;
    const el = item(m);
    const after = [...messages.children].find((li) => li.dataset.id > m.id);
    messages.insertBefore(el, after || null);
  }
  if (scroll) messages.scrollTop = messages.scrollHeight;
}

async function loadOlder() {
  if (!peer || !olderCursor || loadingOlder) return;
  loadingOlder = true;
  const before = messages.scrollHeight;
  try {
    const r = await api('GET', `/api/messages/${encodeURIComponent(peer.id)}?limit=50&before=${encodeURIComponent(olderCursor)}`);
    olderCursor = r.next_cursor;
    addMessages(r.messages, { scroll: false });
    messages.scrollTop = messages.scrollHeight - before;
  } catch (e) { toast(explain(e), 'error'); }
  loadingOlder = false;
}
messages.addEventListener('scroll', () => { if (messages.scrollTop < 40) loadOlder(); });

async function markRead() {
  if (!peer) return;
  const c = convs.get(peer.id);
  if (c) { c.unread = 0; drawList(); }
  try { await api('POST', `/api/messages/${encodeURIComponent(peer.id)}/read`); } catch { /* next time */ }
}

async function openConversation(u) {
  peer = { id: u.id, display_name: u.display_name, email: u.email };
  focus.peer = u.id;
  rememberName(u.id, u.display_name);
  history.replaceState(null, '', `/chat?with=${encodeURIComponent(u.id)}`);
  const c = convs.get(u.id);
  header.replaceChildren(dot(presence.get(u.id) || (c ? c.presence : 'offline')), ' ', h('h2', { id: 'peer-name' }, u.display_name), ' ', h('span', { class: 'hint' }, u.email || ''));
  typing.textContent = '';
  messages.replaceChildren();
  text.disabled = false;
  compose.querySelector('#send').disabled = false;
  drawList();
  try {
    const r = await api('GET', `/api/messages/${encodeURIComponent(u.id)}?limit=50`);
    olderCursor = r.next_cursor;
    addMessages(r.messages);
    if (!r.messages.length) messages.append(h('li', { class: 'hint empty' }, 'No messages yet. Say hello!'));
  } catch (e) { toast(explain(e), 'error'); }
  markRead();
  text.focus();
}

// ---------- sending ----------

compose.addEventListener('submit', async (e) => {
  e.preventDefault();
  const content = text.value.trim();
  if (!peer || !content) return;
  try {
    const r = await api('POST', '/api/messages/send', { receiver_id: peer.id, content, type: 'text' });
    text.value = '';
    stopTyping();
    messages.querySelector('.empty')?.remove();
    addMessages([r.message]);
    bump(peer, r.message, false);
  } catch (err) { toast(explain(err), 'error'); }
});

text.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); compose.requestSubmit(); }
});

attach.addEventListener('change', async () => {
  const file = attach.files[0];
  attach.value = '';
  if (!peer || !file) return;
  const form = new FormData();
  form.append('receiver_id', peer.id);
  if (text.value.trim()) form.append('content', text.value.trim());
  form.append('file', file, file.name);
  const bar = h('progress', { max: '100', value: '0' });
  sendProgress.replaceChildren(`Sending ${file.name} `, bar);
  try {
    const r = await upload('/api/messages/upload', form, (f) => { bar.value = Math.round(f * 100); });
    text.value = '';
    sendProgress.replaceChildren();
    messages.querySelector('.empty')?.remove();
    addMessages([r.message]);
    bump(peer, r.message, false);
  } catch (err) {
    sendProgress.replaceChildren(h('span', { class: 'error', role: 'alert' }, `${file.name}: ${explain(err)}`));
  }
});

// ---------- typing ----------

function stopTyping() {
  clearTimeout(typingIdle);
  if (lastTypingSent && peer) send('typing_stop', { to: peer.id });
  lastTypingSent = 0;
}

text.addEventListener('input', () => {
  if (!peer) return;
  const now = Date.now();
  if (now - lastTypingSent > 3000) {
    send('typing_start', { to: peer.id });
    lastTypingSent = now;
  }
  clearTimeout(typingIdle);
  typingIdle = setTimeout(stopTyping, 4000);
});
text.addEventListener('blur', stopTyping);

on('typing_start', (d) => {
  if (!peer || d.user_id !== peer.id) return;
  typing.textContent = `${peer.display_name} is typing…`;
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => { typing.textContent = ''; }, 6000);
});
on('typing_stop', (d) => {
  if (peer && d.user_id === peer.id) typing.textContent = '';
});

// ---------- live ----------

/** Moves a conversation to the top with its new last message. */
function bump(user, m, unread) {
  const c = convs.get(user.id) || { user, presence: presence.get(user.id) || 'offline', unread: 0 };
  c.last_message = m;
  if (unread) c.unread += 1;
  convs.set(user.id, c);
  drawList();
}

on('new_message', async (d) => {
  const m = d.message;
  if (!m) return;
  const other = m.sender_id === me.id ? m.receiver_id : m.sender_id;
  if (peer && other === peer.id) {
    messages.querySelector('.empty')?.remove();
    addMessages([m]);
    if (m.sender_id === peer.id) { typing.textContent = ''; markRead(); }
    bump(peer, m, false);
    return;
  }
  const known = convs.get(other);
  const user = known ? known.user : { id: other, display_name: await nameOf(other), email: '' };
  bump(user, m, m.sender_id !== me.id);
});

on('presence_update', (d) => {
  presence.set(d.user_id, d.status);
  const c = convs.get(d.user_id);
  if (c) { c.presence = d.status; drawList(); }
  if (peer && d.user_id === peer.id) {
    const old = header.querySelector('.presence');
    if (old) old.replaceWith(dot(d.status));
  }
});

on('open', () => loadList());

// Start: the list, then the conversation named in the address (?with=USER_ID), if any.
(async () => {
  await loadList();
  const want = new URLSearchParams(location.search).get('with');
  if (want) {
    const c = convs.get(want);
    if (c) openConversation(c.user);
    else {
      try {
        const r = await api('GET', `/api/auth/users/${encodeURIComponent(want)}`);
        openConversation(r.user);
      } catch (e) { toast(explain(e), 'error'); }
    }
  }
})();
export { unreadMessageCount };
