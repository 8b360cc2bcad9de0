// Account: two-factor enrolment with the QR code and recovery codes (or turning it off),
// password change, and the active sessions (devices) with sign-out.
import { api, h, toast, explain, formatTime, page } from './app.js';

const root = page();
const profile = h('dl', { class: 'facts', id: 'profile' });
const mfaBox = h('section', { class: 'card', id: 'mfa', 'aria-labelledby': 'mfa-title' });
const pwBox = h('section', { class: 'card', id: 'password-card', 'aria-labelledby': 'pw-title' });
const sessions = h('tbody', { id: 'sessions' });
const prefsBox = h('section', { class: 'card', id: 'prefs', 'aria-labelledby': 'prefs-title' });
const linkBox = h('section', { class: 'card', id: 'providers', 'aria-labelledby': 'providers-title', hidden: true });
root.append(profile,
  h('div', { class: 'forms' }, mfaBox, pwBox, prefsBox, linkBox),
  h('h2', {}, 'Where you are signed in'),
  h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Kind'), h('th', {}, 'Since'), h('th', {}, 'Address'), h('th', {}, 'Browser or app'), h('th', {}, ''))), sessions));

function errorLine() { return h('p', { class: 'error', role: 'alert', hidden: true }); }
function fail(el, e) { el.textContent = explain(e); el.hidden = false; }

// ---------- profile and MFA ----------

async function load() {
  try {
    const { user } = await api('GET', '/api/auth/me');
    profile.replaceChildren(h('dt', {}, 'Name'), h('dd', {}, user.display_name), h('dt', {}, 'E-mail'), h('dd', {}, user.email),
      h('dt', {}, 'Two-factor'), h('dd', { id: 'mfa-state' }, user.mfa_enabled ? 'On' : 'Off'));
    drawMfa(user.mfa_enabled);
  } catch (e) { toast(explain(e), 'error'); }
  loadSessions();
}

function drawMfa(enabled) {
  const err = errorLine();
  if (enabled) {
    const pw = h('input', { type: 'password', id: 'mfa-off-password', autocomplete: 'current-password', required: true });
    const code = h('input', { id: 'mfa-off-code', inputmode: 'numeric', autocomplete: 'one-time-code', required: true });
    mfaBox.replaceChildren(h('h2', { id: 'mfa-title' }, 'Two-factor sign-in is on'),
      h('p', { class: 'hint' }, 'Sign-ins ask for a code from your authenticator app.'),
      h('form', { onsubmit: async (e) => {
        e.preventDefault();
        try {
          await api('POST', '/api/auth/mfa/disable', { password: pw.value, totp_code: code.value.trim() });
          toast('Two-factor sign-in is off.');
          load();
        } catch (ex) { fail(err, ex); }
      } }, h('label', { for: 'mfa-off-password' }, 'Password'), pw, h('label', { for: 'mfa-off-code' }, 'Current code'), code, err,
      h('button', { type: 'submit', class: 'danger' }, 'Turn off')));
    return;
  }
  mfaBox.replaceChildren(h('h2', { id: 'mfa-title' }, 'Two-factor sign-in'),
    h('p', {}, 'Protect your account with a code from an authenticator app (TOTP) at every sign-in.'), err,
    h('button', { type: 'button', id: 'mfa-setup', onclick: async () => {
      try { enrol(await api('POST', '/api/auth/mfa/setup')); } catch (ex) { fail(err, ex); }
    } }, 'Set up'));
}

function enrol(setup) {
  const err = errorLine();
  // The server draws the QR code; shown as an image (an SVG in <img> runs nothing).
  const qr = h('img', { id: 'mfa-qr', class: 'qr', alt: 'QR code of your authenticator secret', width: '220', height: '220',
    src: URL.createObjectURL(new Blob([setup.qr_svg], { type: 'image/svg+xml' })) });
  const code = h('input', { id: 'mfa-code', inputmode: 'numeric', autocomplete: 'one-time-code', required: true, pattern: '[0-9 ]{6,8}' });
  mfaBox.replaceChildren(h('h2', { id: 'mfa-title' }, 'Scan with your authenticator app'), qr,
    h('p', { class: 'hint' }, 'Or type this secret: ', h('code', { id: 'mfa-secret' }, setup.secret)),
    h('form', { onsubmit: async (e) => {
      e.preventDefault();
      try {
        const r = await api('POST', '/api/auth/mfa/enable', { totp_code: code.value.replace(/\s/g, '') });
        showCodes(r.recovery_codes);
      } catch (ex) { fail(err, ex); }
    } }, h('label', { for: 'mfa-code' }, 'Code shown by the app'), code, err, h('button', { type: 'submit', id: 'mfa-enable' }, 'Turn on')));
  code.focus();
}

function showCodes(codes) {
  mfaBox.replaceChildren(h('h2', { id: 'mfa-title' }, 'Two-factor sign-in is on'),
    h('p', { class: 'notice ok', role: 'status' }, 'Save these recovery codes somewhere safe. Each works once if you lose your device; they are not shown again.'),
    h('ol', { class: 'codes', id: 'recovery-codes' }, codes.map((c) => h('li', {}, h('code', {}, c)))),
    h('button', { type: 'button', onclick: () => load() }, 'I saved them'));
  const st = document.getElementById('mfa-state');
  if (st) st.textContent = 'On';
}

// ---------- password ----------

{
  const err = errorLine();
  const cur = h('input', { type: 'password', id: 'pw-current', autocomplete: 'current-password', required: true });
  const next = h('input', { type: 'password', id: 'pw-new', autocomplete: 'new-password', required: true, minlength: '12' });
  const again = h('input', { type: 'password', id: 'pw-again', autocomplete: 'new-password', required: true, minlength: '12' });
  pwBox.append(h('h2', { id: 'pw-title' }, 'Change password'),
    h('form', { onsubmit: async (e) => {
      e.preventDefault();
      err.hidden = true;
      if (next.value !== again.value) { err.textContent = 'The two new passwords differ.'; err.hidden = false; return; }
      try {
        await api('POST', '/api/auth/password', { current_password: cur.value, new_password: next.value });
        e.target.reset();
        toast('Password changed. Your other sessions were signed out.');
        loadSessions();
      } catch (ex) { fail(err, ex); }
    } },
    h('label', { for: 'pw-current' }, 'Current password'), cur,
    h('label', { for: 'pw-new' }, 'New password (12 characters or more)'), next,
    h('label', { for: 'pw-again' }, 'New password again'), again, err,
    h('button', { type: 'submit', id: 'pw-submit' }, 'Change')));
}

// ---------- notification channels ----------

async function loadPrefs() {
  try {
    const p = await api('GET', '/api/notifications/preferences');
    const email = h('input', { type: 'checkbox', id: 'pref-email', checked: p.email });
    const inApp = h('input', { type: 'checkbox', id: 'pref-in-app', checked: p.in_app });
    const save = async () => {
      try {
        await api('PUT', '/api/notifications/preferences', { email: email.checked, in_app: inApp.checked });
        toast('Notification settings saved.');
      } catch (e) { toast(explain(e), 'error'); loadPrefs(); }
    };
    email.addEventListener('change', save);
    inApp.addEventListener('change', save);
    prefsBox.replaceChildren(h('h2', { id: 'prefs-title' }, 'Notifications'),
      h('p', { class: 'hint' }, 'How invitations, answers and shares reach you.'),
      h('label', { class: 'inline' }, email, ' by e-mail'), h('br'),
      h('label', { class: 'inline' }, inApp, ' in the app (the bell)'));
  } catch (e) { toast(explain(e), 'error'); }
}
loadPrefs();

// ---------- sign-in providers ----------

async function loadProviders() {
  try {
    const { providers } = await api('GET', '/api/auth/providers');
    if (!providers.length) return;
    linkBox.replaceChildren(h('h2', { id: 'providers-title' }, 'Sign-in providers'),
      h('p', { class: 'hint' }, 'Link a provider to sign in with it too. You will be told of every link.'),
      ...providers.map((p) => h('p', {}, h('a', { class: 'button', href: `/account/link/${encodeURIComponent(p.name)}` }, `Link ${p.display_name}`))));
    linkBox.hidden = false;
    if (new URLSearchParams(location.search).get('linked')) toast('The provider is linked to your account.');
  } catch (e) { toast(explain(e), 'error'); }
}
loadProviders();

// ---------- sessions ----------

const kinds = { web: 'Web browser', admin: 'Admin console', api: 'App or API' };

async function loadSessions() {
  try {
    const r = await api('GET', '/api/auth/sessions');
    sessions.replaceChildren(...r.sessions.map((s) => h('tr', { dataset: { id: s.id }, class: s.current ? 'current' : '' },
      h('td', {}, kinds[s.kind] || s.kind, s.current ? h('strong', {}, ' (this one)') : ''),
      h('td', {}, formatTime(s.created_at)),
      h('td', {}, s.ip || ''),
      h('td', { class: 'ua' }, s.user_agent || ''),
      h('td', {}, h('button', { type: 'button', class: 'danger revoke', onclick: async () => {
        try {
          await api('DELETE', `/api/auth/sessions/${encodeURIComponent(s.id)}`);
          if (s.current) location.assign('/login');
          else { toast('Signed out there.'); loadSessions(); }
        } catch (e) { toast(explain(e), 'error'); }
      } }, 'Sign out')))));
  } catch (e) { toast(explain(e), 'error'); }
}

load();
