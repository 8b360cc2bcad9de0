// Meetings: create one with a participant picker (times entered and shown in the browser's own
// time zone, sent as UTC), the upcoming list and a week view, accept/decline, cancel for the
// creator, the .ics download, and live updates as others answer.
import { api, h, on, toast, explain, formatTime, userPicker, page } from './app.js';

const root = page();
const meetings = new Map(); // id → schedule
let weekStart = startOfWeek(new Date());
const wanted = location.pathname.match(/^\/meetings\/([^/]+)$/)?.[1];

function startOfWeek(d) {
  const x = new Date(d.getFullYear(), d.getMonth(), d.getDate());
  x.setDate(x.getDate() - ((x.getDay() + 6) % 7)); // Monday
  return x;
}
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short' });
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;

// ---------- the form ----------

const picked = new Map();
const chips = h('ul', { class: 'chips', id: 'meeting-participants' });
const drawChips = () => chips.replaceChildren(...[...picked.values()].map((u) => h('li', {}, `${u.display_name} `,
  h('button', { type: 'button', 'aria-label': `Remove ${u.display_name}`, onclick: () => { picked.delete(u.id); drawChips(); } }, '×'))));
const err = h('p', { class: 'error', role: 'alert', hidden: true, id: 'meeting-error' });
const field = (id, label, input) => [h('label', { for: id }, label), input];
const title = h('input', { id: 'meeting-title', required: true, maxlength: '200' });
const description = h('textarea', { id: 'meeting-description', rows: '2', maxlength: '5000' });
const start = h('input', { id: 'meeting-start', type: 'datetime-local', required: true });
const end = h('input', { id: 'meeting-end', type: 'datetime-local', required: true });
const viaMail = h('input', { type: 'checkbox', id: 'via-email', checked: true });
const viaApp = h('input', { type: 'checkbox', id: 'via-app', checked: true });

const form = h('form', { class: 'card', id: 'meeting-form' },
  h('h2', {}, 'New meeting'),
  ...field('meeting-title', 'Title', title),
  ...field('meeting-description', 'Description', description),
  ...field('meeting-start', 'Starts', start),
  ...field('meeting-end', 'Ends', end),
  h('p', { class: 'hint' }, `Times are in your time zone (${zone}).`),
  userPicker('Invite', (u) => { picked.set(u.id, u); drawChips(); }),
  chips,
  h('fieldset', {}, h('legend', {}, 'Notify by'),
    h('label', { class: 'inline' }, viaMail, ' e-mail'), ' ', h('label', { class: 'inline' }, viaApp, ' in the app')),
  err,
  h('button', { type: 'submit', id: 'meeting-create' }, 'Schedule'));

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  err.hidden = true;
  const fail = (m) => { err.textContent = m; err.hidden = false; };
  const s = new Date(start.value);
  const en = new Date(end.value);
  if (Number.isNaN(s.getTime()) || Number.isNaN(en.getTime())) return fail('Enter when the meeting starts and ends.');
  if (en <= s) return fail('The meeting must end after it starts.');
  if (!picked.size) return fail('Invite at least one person.');
  const notify_via = [];
  if (viaMail.checked) notify_via.push('email');
  if (viaApp.checked) notify_via.push('in_app');
  try {
    const r = await api('POST', '/api/schedules', {
      title: title.value, description: description.value,
      start_time: s.toISOString(), end_time: en.toISOString(),
      participants: [...picked.keys()], notify_via,
    });
    meetings.set(r.schedule.id, r.schedule);
    form.reset();
    picked.clear();
    drawChips();
    draw();
    toast(`Scheduled “${r.schedule.title}”.`);
  } catch (ex) { fail(explain(ex)); }
});

// ---------- list and week ----------

const upcoming = h('ul', { id: 'upcoming', class: 'meetings' });
const week = h('div', { id: 'week', class: 'week', role: 'grid' });
const weekLabel = h('strong', { id: 'week-label' });
root.append(h('div', { class: 'split' },
  form,
  h('section', { class: 'meetings-col' },
    h('h2', {}, 'Upcoming'), upcoming,
    h('h2', {}, 'Week'),
    h('div', { class: 'row' },
      h('button', { type: 'button', onclick: () => { weekStart.setDate(weekStart.getDate() - 7); draw(); } }, '← Previous'), ' ',
      weekLabel, ' ',
      h('button', { type: 'button', onclick: () => { weekStart.setDate(weekStart.getDate() + 7); draw(); } }, 'Next →'), ' ',
      h('button', { type: 'button', onclick: () => { weekStart = startOfWeek(new Date()); draw(); } }, 'Today')),
    week)));

const statusLabel = { pending: 'Not answered', accepted: 'Accepted', declined: 'Declined' };

async function respond(m, status) {
  try {
    const r = await api('POST', `/api/schedules/${encodeURIComponent(m.id)}/respond`, { status });
    meetings.set(r.schedule.id, r.schedule);
    draw();
  } catch (e) { toast(explain(e), 'error'); }
}

async function cancel(m) {
  if (!confirm(`Cancel “${m.title}” for everyone?`)) return;
  try {
    await api('DELETE', `/api/schedules/${encodeURIComponent(m.id)}`);
    m.status = 'cancelled';
    draw();
  } catch (e) { toast(explain(e), 'error'); }
}

function card(m) {
  const s = new Date(m.start_time);
  const e = new Date(m.end_time);
  const cancelled = m.status === 'cancelled';
  return h('li', { class: `meeting${cancelled ? ' cancelled' : ''}${m.id === wanted ? ' wanted' : ''}`, dataset: { id: m.id }, id: `meeting-${m.id}` },
    h('strong', { class: 'title' }, m.title), cancelled ? h('span', { class: 'badge bad' }, ' Cancelled') : '',
    h('br'),
    h('time', { datetime: m.start_time }, `${dayFmt.format(s)} ${timeFmt.format(s)} – ${timeFmt.format(e)}`),
    m.description ? h('p', { class: 'description' }, m.description) : '',
    h('p', { class: 'hint' }, `Organizer: ${m.creator.display_name}`),
    h('ul', { class: 'participants' }, m.participants.map((p) => h('li', { dataset: { userId: p.user_id, status: p.status } },
      `${p.display_name}: `, h('span', { class: `badge status-${p.status}` }, statusLabel[p.status] || p.status)))),
    h('div', { class: 'actions' },
      !m.is_creator && !cancelled ? [
        h('button', { type: 'button', class: 'accept', 'aria-pressed': String(m.my_status === 'accepted'), onclick: () => respond(m, 'accepted') }, 'Accept'), ' ',
        h('button', { type: 'button', class: 'decline', 'aria-pressed': String(m.my_status === 'declined'), onclick: () => respond(m, 'declined') }, 'Decline'), ' ',
        h('span', { class: 'hint my-status' }, `You: ${statusLabel[m.my_status] || m.my_status}`), ' ',
      ] : '',
      m.is_creator && !cancelled ? [h('button', { type: 'button', class: 'danger cancel', onclick: () => cancel(m) }, 'Cancel meeting'), ' '] : '',
      h('a', { href: `/api/schedules/${encodeURIComponent(m.id)}/ics`, class: 'ics' }, 'Add to calendar (.ics)')));
}

function draw() {
  const now = new Date();
  const all = [...meetings.values()].sort((a, b) => (a.start_time < b.start_time ? -1 : 1));
  const soon = all.filter((m) => new Date(m.end_time) >= now || m.id === wanted);
  upcoming.replaceChildren(...soon.map(card));
  if (!soon.length) upcoming.append(h('li', { class: 'hint' }, 'Nothing planned.'));
  // The week: one column per day, meetings by start time.
  const days = [];
  for (let i = 0; i < 7; i += 1) {
    const d = new Date(weekStart);
    d.setDate(d.getDate() + i);
    days.push(d);
  }
  const last = new Date(days[6]);
  last.setDate(last.getDate() + 1);
  weekLabel.textContent = `${dayFmt.format(days[0])} – ${dayFmt.format(days[6])}`;
  week.replaceChildren(...days.map((d) => {
    const next = new Date(d);
    next.setDate(next.getDate() + 1);
    const today = d.toDateString() === now.toDateString();
    const items = all.filter((m) => { const s = new Date(m.start_time); return s >= d && s < next; });
    return h('div', { class: `day${today ? ' today' : ''}`, role: 'gridcell' },
      h('h3', {}, dayFmt.format(d)),
      h('ul', {}, items.map((m) => h('li', { class: m.status === 'cancelled' ? 'cancelled' : '' },
        h('a', { href: `#meeting-${m.id}` }, `${timeFmt.format(new Date(m.start_time))} ${m.title}`)))));
  }));
  if (wanted) document.getElementById(`meeting-${wanted}`)?.scrollIntoView({ block: 'center' });
}

async function load() {
  try {
    meetings.clear();
    let cursor = null;
    // From a week ago: the week view can step back; older meetings are history.
    const from = new Date(Date.now() - 7 * 86400000).toISOString();
    do {
      const r = await api('GET', `/api/schedules?from=${encodeURIComponent(from)}&limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      for (const m of r.schedules) meetings.set(m.id, m);
      cursor = r.next_cursor;
    } while (cursor);
    if (wanted && !meetings.has(wanted)) {
      try { const r = await api('GET', `/api/schedules/${encodeURIComponent(wanted)}`); meetings.set(r.schedule.id, r.schedule); } catch { /* not visible */ }
    }
  } catch (e) { toast(explain(e), 'error'); }
  draw();
}

// ---------- live ----------

on('meeting_invitation', (d) => { if (d.schedule) { meetings.set(d.schedule.id, d.schedule); draw(); } });
on('meeting_cancelled', (d) => { if (d.schedule) { meetings.set(d.schedule.id, d.schedule); draw(); } });
on('schedule_response', (d) => {
  if (d.schedule) meetings.set(d.schedule.id, d.schedule);
  draw();
  toast(`${d.display_name} ${d.status === 'accepted' ? 'accepted' : 'declined'} “${d.schedule ? d.schedule.title : 'a meeting'}”.`);
});
on('open', () => load());
load();
