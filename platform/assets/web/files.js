// Files: my files and files shared with me, drag-and-drop upload with a progress bar per file,
// scan and integrity badges, the share dialog (user picker, view/download, expiry), revoke,
// download, delete, and a file's discussion — all kept live over the WebSocket.
import { api, upload, h, on, me, toast, explain, formatSize, formatTime, userPicker, page, nameOf } from './app.js';

const root = page();
const mine = new Map();     // file id → file
const shared = new Map();   // file id → file + {permissions, shared_by}
let discussing = null;      // file id whose discussion is open

const dropZone = h('section', { class: 'drop', id: 'drop', tabindex: '0', 'aria-label': 'Upload files' },
  h('p', {}, 'Drop files here, or '),
  h('label', { class: 'button', for: 'file-input' }, 'choose files'),
  h('input', { id: 'file-input', type: 'file', multiple: true, class: 'sr-only' }));
const uploads = h('ul', { id: 'uploads', class: 'uploads', 'aria-live': 'polite' });
const mineTable = h('tbody', { id: 'my-files' });
const sharedTable = h('tbody', { id: 'shared-files' });
const discussion = h('aside', { id: 'discussion', class: 'card discussion', hidden: true, 'aria-label': 'Discussion' });

root.append(
  dropZone, uploads,
  h('h2', {}, 'My files'),
  h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Size'), h('th', {}, 'Status'), h('th', {}, 'Uploaded'), h('th', {}, 'Actions'))), mineTable),
  h('h2', {}, 'Shared with me'),
  h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Size'), h('th', {}, 'Status'), h('th', {}, 'Permission'), h('th', {}, 'Actions'))), sharedTable),
  discussion,
);

// ---------- badges and rows ----------

function badges(f) {
  const scan = { pending: ['warn', 'Scanning…'], clean: ['ok', 'Clean'], quarantined: ['bad', 'Quarantined'], error: ['bad', 'Scan failed'] }[f.scan_status] || ['warn', f.scan_status];
  const out = [h('span', { class: `badge ${scan[0]} scan`, title: 'Malware scan' }, scan[1])];
  if (f.integrity === 'compromised') out.push(' ', h('span', { class: 'badge bad integrity', title: 'Integrity check' }, 'Compromised'));
  else if (f.integrity === 'ok') out.push(' ', h('span', { class: 'badge ok integrity', title: 'Integrity check' }, 'Verified'));
  return out;
}

const downloadable = (f) => f.scan_status === 'clean' && f.integrity !== 'compromised';

function downloadLink(f) {
  if (!downloadable(f)) return h('span', { class: 'hint' }, f.scan_status === 'pending' ? 'Not yet scanned' : 'Blocked');
  return h('a', { class: 'button download', href: `/api/files/download/${encodeURIComponent(f.id)}`, download: f.name }, 'Download');
}

function mineRow(f) {
  return h('tr', { dataset: { fileId: f.id } },
    h('td', { class: 'name' }, f.name),
    h('td', {}, formatSize(f.size)),
    h('td', {}, badges(f)),
    h('td', {}, formatTime(f.created_at)),
    h('td', { class: 'actions' },
      downloadLink(f), ' ',
      h('button', { type: 'button', class: 'share', onclick: () => shareDialog(f) }, 'Share'), ' ',
      h('button', { type: 'button', class: 'discuss', onclick: () => openDiscussion(f) }, 'Discuss'), ' ',
      h('button', { type: 'button', class: 'danger delete', onclick: () => remove(f) }, 'Delete')));
}

function sharedRow(f) {
  const canDownload = f.permissions === 'download';
  return h('tr', { dataset: { fileId: f.id } },
    h('td', { class: 'name' }, f.name),
    h('td', {}, formatSize(f.size)),
    h('td', {}, badges(f)),
    h('td', {}, canDownload ? 'View and download' : 'View only'),
    h('td', { class: 'actions' },
      canDownload ? downloadLink(f) : h('span', { class: 'hint' }, 'View only'), ' ',
      h('button', { type: 'button', class: 'discuss', onclick: () => openDiscussion(f) }, 'Discuss')));
}

function render() {
  const byNewest = (a, b) => (a.created_at < b.created_at ? 1 : -1);
  mineTable.replaceChildren(...[...mine.values()].sort(byNewest).map(mineRow));
  if (!mine.size) mineTable.append(h('tr', {}, h('td', { colspan: '5', class: 'hint' }, 'No files yet: drop some above.')));
  sharedTable.replaceChildren(...[...shared.values()].sort(byNewest).map(sharedRow));
  if (!shared.size) sharedTable.append(h('tr', {}, h('td', { colspan: '5', class: 'hint' }, 'Nothing is shared with you yet.')));
}

async function loadAll(path, into) {
  into.clear();
  let cursor = null;
  do {
    const r = await api('GET', `${path}?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    for (const f of r.files) into.set(f.id, f);
    cursor = r.next_cursor;
  } while (cursor);
}

async function load() {
  try {
    await Promise.all([loadAll('/api/files', mine), loadAll('/api/files/shared', shared)]);
  } catch (e) { toast(explain(e), 'error'); }
  render();
}

// ---------- upload ----------

function uploadOne(file) {
  const bar = h('progress', { max: '100', value: '0', 'aria-label': `Upload of ${file.name}` });
  const pct = h('span', { class: 'pct' }, '0%');
  const status = h('span', { class: 'status' }, '');
  const item = h('li', { class: 'upload', dataset: { name: file.name } }, h('span', { class: 'name' }, file.name), ' ', bar, ' ', pct, ' ', status);
  uploads.prepend(item);
  const form = new FormData();
  form.append('file', file, file.name);
  upload('/api/files/upload', form, (f) => {
    const v = Math.round(f * 100);
    bar.value = v;
    pct.textContent = `${v}%`;
  }).then((r) => {
    item.classList.add('done');
    status.textContent = 'Uploaded — scanning for malware…';
    mine.set(r.file.id, r.file);
    render();
  }).catch((e) => {
    item.classList.add('failed');
    const why = {
      413: 'Too large: ',
      415: 'This type of file is not allowed: ',
      423: 'Refused: ',
      429: 'Slow down: ',
    }[e.status] || 'Failed: ';
    status.textContent = why + explain(e);
    status.setAttribute('role', 'alert');
  });
}

function uploadAll(files) {
  for (const f of files) uploadOne(f);
}

const input = dropZone.querySelector('input');
input.addEventListener('change', () => { uploadAll([...input.files]); input.value = ''; });
for (const ev of ['dragenter', 'dragover']) dropZone.addEventListener(ev, (e) => { e.preventDefault(); dropZone.classList.add('over'); });
for (const ev of ['dragleave', 'drop']) dropZone.addEventListener(ev, () => dropZone.classList.remove('over'));
dropZone.addEventListener('drop', (e) => { e.preventDefault(); uploadAll([...e.dataTransfer.files]); });
dropZone.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); input.click(); } });

// ---------- delete ----------

async function remove(f) {
  if (!confirm(`Delete “${f.name}” for everyone it is shared with?`)) return;
  try {
    await api('DELETE', `/api/files/${encodeURIComponent(f.id)}`);
    mine.delete(f.id);
    render();
    toast(`Deleted ${f.name}.`);
  } catch (e) { toast(explain(e), 'error'); }
}

// ---------- sharing ----------

function shareDialog(f) {
  const picked = new Map();
  const chips = h('ul', { class: 'chips', id: 'share-picked' });
  const current = h('ul', { class: 'shares', id: 'share-current' });
  const err = h('p', { class: 'error', role: 'alert', hidden: true });
  const drawChips = () => chips.replaceChildren(...[...picked.values()].map((u) => h('li', {},
    `${u.display_name} `, h('button', { type: 'button', 'aria-label': `Remove ${u.display_name}`, onclick: () => { picked.delete(u.id); drawChips(); } }, '×'))));
  const perm = (value, label, checked) => h('label', { class: 'inline' }, h('input', { type: 'radio', name: 'permissions', value, checked }), ' ', label);
  const expires = h('input', { type: 'datetime-local', id: 'share-expires' });
  const dlg = h('dialog', { id: 'share-dialog', 'aria-labelledby': 'share-title' },
    h('h2', { id: 'share-title' }, `Share “${f.name}”`),
    userPicker('Add people', (u) => { picked.set(u.id, u); drawChips(); }),
    chips,
    h('fieldset', {}, h('legend', {}, 'They may'), perm('view', 'view it', false), perm('download', 'view and download it', true)),
    h('label', { for: 'share-expires' }, 'Expires (optional, your local time)'), expires,
    err,
    h('div', { class: 'row' },
      h('button', { type: 'button', id: 'share-submit', class: 'primary', onclick: async () => {
        err.hidden = true;
        if (!picked.size) { err.textContent = 'Pick at least one person.'; err.hidden = false; return; }
        const body = { file_id: f.id, user_ids: [...picked.keys()], permissions: dlg.querySelector('input[name=permissions]:checked').value };
        if (expires.value) {
          const at = new Date(expires.value);
          if (Number.isNaN(at.getTime()) || at <= new Date()) { err.textContent = 'The expiry must be in the future.'; err.hidden = false; return; }
          body.expires_at = at.toISOString();
        }
        try {
          await api('POST', '/api/files/share', body);
          toast(`Shared ${f.name} with ${picked.size} ${picked.size === 1 ? 'person' : 'people'}.`);
          picked.clear();
          drawChips();
          loadShares();
        } catch (e) { err.textContent = explain(e); err.hidden = false; }
      } }, 'Share'), ' ',
      h('button', { type: 'button', onclick: () => dlg.close() }, 'Close')),
    h('h3', {}, 'Shared with'), current);
  async function loadShares() {
    try {
      const r = await api('GET', `/api/files/${encodeURIComponent(f.id)}/shares`);
      current.replaceChildren(...r.shares.map((s) => h('li', { dataset: { userId: s.user_id } },
        `${s.display_name} <${s.email}> — ${s.permissions === 'download' ? 'download' : 'view only'}`,
        s.expires_at ? ` until ${formatTime(s.expires_at)}` : '', ' ',
        h('button', { type: 'button', class: 'danger revoke', onclick: async () => {
          try {
            await api('DELETE', `/api/files/${encodeURIComponent(f.id)}/shares/${encodeURIComponent(s.user_id)}`);
            toast(`${s.display_name} no longer has access.`);
            loadShares();
          } catch (e) { toast(explain(e), 'error'); }
        } }, 'Revoke'))));
      if (!r.shares.length) current.append(h('li', { class: 'hint' }, 'No one yet.'));
    } catch (e) { toast(explain(e), 'error'); }
  }
  dlg.addEventListener('close', () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  loadShares();
}

// ---------- discussion ----------

function messageItem(m) {
  const who = h('strong', { class: 'sender' }, m.sender_id === me.id ? 'You' : '…');
  if (m.sender_id !== me.id) nameOf(m.sender_id).then((n) => { who.textContent = n; });
  return h('li', { dataset: { id: m.id } }, who, ' ', h('time', { class: 'hint' }, formatTime(m.created_at)), h('p', {}, m.content));
}

async function openDiscussion(f) {
  discussing = f.id;
  const list = h('ul', { class: 'messages', id: 'discussion-messages' });
  const text = h('textarea', { id: 'discussion-input', rows: '2', maxlength: '10000', 'aria-label': 'Message' });
  discussion.replaceChildren(
    h('header', { class: 'row' }, h('h2', {}, `Discussion: ${f.name}`), h('button', { type: 'button', onclick: () => { discussion.hidden = true; discussing = null; } }, 'Close')),
    list,
    h('form', { class: 'compose', onsubmit: async (e) => {
      e.preventDefault();
      const content = text.value.trim();
      if (!content) return;
      try {
        const r = await api('POST', `/api/files/${encodeURIComponent(f.id)}/messages`, { content });
        text.value = '';
        addMessage(list, r.message);
      } catch (err) { toast(explain(err), 'error'); }
    } }, text, h('button', { type: 'submit', id: 'discussion-send' }, 'Send')));
  discussion.hidden = false;
  try {
    const r = await api('GET', `/api/files/${encodeURIComponent(f.id)}/messages?limit=200`);
    for (const m of r.messages) addMessage(list, m);
    if (!r.messages.length) list.append(h('li', { class: 'hint empty' }, 'No messages yet.'));
  } catch (e) { toast(explain(e), 'error'); }
  text.focus();
}

function addMessage(list, m) {
  if (list.querySelector(`li[data-id="${CSS.escape(m.id)}"]`)) return;
  list.querySelector('.empty')?.remove();
  list.append(messageItem(m));
  list.scrollTop = list.scrollHeight;
}

// ---------- live updates ----------

on('file_update', (d) => {
  if (d.change === 'deleted') {
    mine.delete(d.file_id);
    shared.delete(d.file_id);
  } else if (d.file) {
    if (d.file.owner_id === me.id) mine.set(d.file.id, d.file);
  } else if (d.change === 'scanned') {
    for (const m of [mine, shared]) {
      const f = m.get(d.file_id);
      if (f) f.scan_status = d.scan_status;
    }
  }
  render();
});

on('file_share', (d) => {
  if (d.revoked) {
    shared.delete(d.file_id);
    render();
    return;
  }
  if (d.file) {
    shared.set(d.file.id, { ...d.file, permissions: d.permissions, shared_by: d.shared_by });
    render();
    toast(`New file shared with you: ${d.file.name}`);
  }
});

on('file_message_update', (d) => {
  if (d.file_id !== discussing || !d.message) return;
  const list = document.getElementById('discussion-messages');
  if (list) addMessage(list, d.message);
});

// After a reconnect, refresh: an event may have been missed beyond the replay window.
on('open', () => load());
load();
