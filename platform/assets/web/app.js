// SecCollab web UI: what every signed-in page shares — the API client (session cookie + CSRF
// header; no token is ever visible to scripts), a DOM builder that only ever sets text (nothing
// from the server is parsed as HTML), the live connection with resume, the notification bell,
// the offline banner and the user picker.

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? '';
export const me = { id: meta('user-id'), name: meta('user-name') };
const csrf = meta('csrf-token');

/** An API error: `status`, `code`, `message` (the server's words), `retryAfter` seconds. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function failure(res) {
  let code = 'http_' + res.status;
  let message = `The server answered ${res.status}.`;
  try {
    const j = await res.json();
    if (j && j.error) ({ code, message } = j.error);
  } catch { /* not JSON */ }
  const ra = Number(res.headers.get('Retry-After')) || undefined;
  if (res.status === 401 && ['session_expired', 'unauthenticated', 'invalid_token'].includes(code)) {
    // The session ended (signed out elsewhere, timed out): back to the sign-in page.
    location.assign('/login');
  } else if (res.status === 403 && code === 'mfa_reverify_required') {
    // An automatic response asks this session to be confirmed again.
    location.assign('/login/reverify?next=' + encodeURIComponent(location.pathname + location.search));
  }
  return new ApiError(res.status, code, message, ra);
}

/** Calls the JSON API; answers the parsed body (null for 204) or throws ApiError. */
export async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (method !== 'GET') init.headers['X-CSRF-Token'] = csrf;
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached; check the connection and try again.');
  }
  if (!res.ok) throw await failure(res);
  return res.status === 204 ? null : res.json();
}

/**
 * Uploads a form with progress (fetch cannot report upload progress): `onProgress(fraction)`.
 * Resolves to the JSON answer or rejects with ApiError.
 */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open('POST', path);
    x.setRequestHeader('X-CSRF-Token', csrf);
    x.setRequestHeader('Accept', 'application/json');
    x.upload.addEventListener('progress', (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); });
    x.addEventListener('load', () => {
      let j = null;
      try { j = JSON.parse(x.responseText); } catch { /* empty */ }
      if (x.status >= 200 && x.status < 300) {
        onProgress(1);
        resolve(j);
      } else {
        const e = (j && j.error) || { code: 'http_' + x.status, message: `The server answered ${x.status}.` };
        reject(new ApiError(x.status, e.code, e.message, Number(x.getResponseHeader('Retry-After')) || undefined));
      }
    });
    x.addEventListener('error', () => reject(new ApiError(0, 'network', 'The upload was interrupted; try again.')));
    x.send(form);
  });
}

/** h('a', {href: '/x', class: 'c', onclick: f}, 'text', child...) — text children only as text. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function formatSize(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = -1;
  do { v /= 1024; i += 1; } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function formatTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleString();
}

/** A short message at the top of the page (role=status, or alert for errors). */
export function toast(text, kind = 'ok') {
  let box = document.getElementById('toasts');
  if (!box) {
    box = h('div', { id: 'toasts', class: 'toasts' });
    document.body.append(box);
  }
  const p = h('p', { class: kind === 'error' ? 'error' : 'notice ok', role: kind === 'error' ? 'alert' : 'status' }, text);
  box.append(p);
  setTimeout(() => p.remove(), kind === 'error' ? 10000 : 4000);
}

/** The words of an error for a person. */
export function explain(e) {
  if (e instanceof ApiError && e.retryAfter) return `${e.message} (try again in ${e.retryAfter} s)`;
  return e && e.message ? e.message : String(e);
}

// ---------- the live connection ----------

const handlers = new Map();
let socket = null;
let lastSeq = Number(meta('event-seq')) || 0;
let retryDelay = 500;

/** Calls `fn(data, frame)` for every frame of event `name` ('open' and 'close' too). */
export function on(name, fn) {
  if (!handlers.has(name)) handlers.set(name, []);
  handlers.get(name).push(fn);
}

function emit(name, data, frame) {
  for (const fn of handlers.get(name) || []) {
    try { fn(data, frame); } catch (e) { console.error(e); }
  }
}

/** Sends a client frame when connected (typing, presence); dropped otherwise. */
export function send(event, data) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ event, data: data || {} }));
}

function setOnline(online) {
  const banner = document.getElementById('offline');
  if (banner) banner.hidden = online;
  document.documentElement.dataset.live = online ? 'connected' : 'offline';
}

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  // `after`: every stored event since the page was rendered (or since the last one seen) is
  // replayed, in order, once; frames with a seq already seen are skipped.
  const ws = new WebSocket(`${scheme}${location.host}/ws?after=${lastSeq}`);
  socket = ws;
  ws.addEventListener('open', () => {
    retryDelay = 500;
    setOnline(true);
    if (document.hidden) send('user_away');
    emit('open');
  });
  ws.addEventListener('message', (m) => {
    let frame;
    try { frame = JSON.parse(m.data); } catch { return; }
    if (!frame || typeof frame.event !== 'string') return;
    if (typeof frame.seq === 'number') {
      if (frame.seq <= lastSeq) return;
      lastSeq = frame.seq;
    }
    emit(frame.event, frame.data || {}, frame);
  });
  ws.addEventListener('close', () => {
    if (socket !== ws) return;
    socket = null;
    setOnline(false);
    emit('close');
    // Why it closed: an ended session or one held for re-verification sends the page to the
    // right sign-in step (failure() above); a network loss just reconnects.
    api('GET', '/api/auth/me').catch(() => {});
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 10000);
  });
}

document.addEventListener('visibilitychange', () => send(document.hidden ? 'user_away' : 'user_active'));
window.addEventListener('online', () => { if (!socket) connect(); });

// ---------- notifications bell ----------

const bell = document.getElementById('bell');
const bellCount = document.getElementById('bell-count');
const panel = document.getElementById('notifications');
const list = document.getElementById('notification-list');
let unreadNotes = 0;

function setBell(n) {
  unreadNotes = Math.max(0, n);
  if (!bellCount) return;
  bellCount.hidden = unreadNotes === 0;
  bellCount.textContent = String(unreadNotes);
}

function noteItem(n) {
  const li = h('li', { class: n.read ? 'read' : 'unread', dataset: { id: n.id } },
    h('strong', {}, n.title), h('br'), h('span', { class: 'hint' }, n.body || ''), ' ',
    h('time', { class: 'hint' }, formatTime(n.created_at)));
  if (!n.read) {
    li.append(' ', h('button', {
      type: 'button',
      onclick: async (ev) => {
        ev.stopPropagation();
        try {
          await api('POST', `/api/notifications/${encodeURIComponent(n.id)}/read`);
          li.className = 'read';
          ev.target.remove();
          setBell(unreadNotes - 1);
        } catch (e) { toast(explain(e), 'error'); }
      },
    }, 'Mark read'));
  }
  return li;
}

async function loadNotifications() {
  try {
    const r = await api('GET', '/api/notifications?limit=20');
    list.replaceChildren(...r.notifications.map(noteItem));
    if (!r.notifications.length) list.append(h('li', { class: 'hint' }, 'Nothing yet.'));
    setBell(r.unread_count);
  } catch (e) { /* shown on the next try */ }
}

if (bell) {
  bell.addEventListener('click', () => {
    panel.hidden = !panel.hidden;
    bell.setAttribute('aria-expanded', String(!panel.hidden));
    if (!panel.hidden) loadNotifications();
  });
  document.getElementById('read-all')?.addEventListener('click', async () => {
    try {
      await api('POST', '/api/notifications/read-all');
      setBell(0);
      loadNotifications();
    } catch (e) { toast(explain(e), 'error'); }
  });
  on('notification', (d) => {
    if (!d.notification) return;
    setBell(unreadNotes + 1);
    list.prepend(noteItem(d.notification));
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !panel.hidden) { panel.hidden = true; bell.setAttribute('aria-expanded', 'false'); bell.focus(); }
  });
}

// ---------- unread messages in the navigation ----------

const unreadTotal = document.getElementById('unread-total');
let unreadMessages = 0;
export function setUnreadMessages(n) {
  unreadMessages = Math.max(0, n);
  if (!unreadTotal) return;
  unreadTotal.hidden = unreadMessages === 0;
  unreadTotal.textContent = String(unreadMessages);
}
export function unreadMessageCount() { return unreadMessages; }

/** Whether the chat page shows the conversation with `userId` (set by chat.js). */
export const focus = { peer: null };

on('new_message', (d) => {
  const m = d.message;
  if (m && m.sender_id !== me.id && focus.peer !== m.sender_id) setUnreadMessages(unreadMessages + 1);
});

// ---------- the user picker ----------

/**
 * A search box that lists matching users (`GET /api/auth/users?q=`) and calls `onPick(user)`.
 * Returns the element.
 */
export function userPicker(label, onPick) {
  const id = 'pick-' + Math.random().toString(36).slice(2);
  const input = h('input', { id, type: 'search', autocomplete: 'off', placeholder: 'Name or e-mail', role: 'combobox', 'aria-expanded': 'false', 'aria-controls': id + '-list' });
  const results = h('ul', { id: id + '-list', class: 'picker-results', role: 'listbox' });
  let timer = null;
  let seq = 0;
  input.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const q = input.value.trim();
      const mine = ++seq;
      if (!q) { results.replaceChildren(); input.setAttribute('aria-expanded', 'false'); return; }
      try {
        const r = await api('GET', `/api/auth/users?q=${encodeURIComponent(q)}&limit=8`);
        if (mine !== seq) return;
        const users = r.users.filter((u) => u.id !== me.id);
        results.replaceChildren(...users.map((u) => h('li', { role: 'option' },
          h('button', { type: 'button', class: 'pick', dataset: { userId: u.id, email: u.email }, onclick: () => {
            onPick(u);
            input.value = '';
            results.replaceChildren();
            input.focus();
          } }, `${u.display_name} <${u.email}>`))));
        if (!users.length) results.append(h('li', { class: 'hint' }, 'No one found.'));
        input.setAttribute('aria-expanded', 'true');
      } catch (e) { toast(explain(e), 'error'); }
    }, 200);
  });
  return h('div', { class: 'picker' }, h('label', { for: id }, label), input, results);
}

/** The page's container, emptied. */
export function page() {
  const el = document.getElementById('page');
  el.replaceChildren();
  return el;
}

// Start: live connection and the counters in the header.
connect();
api('GET', '/api/messages/conversations?limit=200')
  .then((r) => setUnreadMessages(r.conversations.reduce((n, c) => n + c.unread, 0)))
  .catch(() => {});
api('GET', '/api/notifications?limit=1').then((r) => setBell(r.unread_count)).catch(() => {});

// ---------- names of users, by id ----------

const names = new Map([[me.id, me.name]]);
/** Remembers a user's display name (from any list that carries it). */
export function rememberName(id, name) { if (id && name) names.set(id, name); }
/** A user's display name: cached, else fetched once (`GET /api/auth/users/{id}`). */
export async function nameOf(id) {
  if (names.has(id)) return names.get(id);
  try {
    const r = await api('GET', `/api/auth/users/${encodeURIComponent(id)}`);
    names.set(id, r.user.display_name);
    return r.user.display_name;
  } catch { return 'Unknown user'; }
}
