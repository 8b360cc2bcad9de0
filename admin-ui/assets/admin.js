// SecCollab admin console: live security alerts. The pages work without this script; it only
// adds a banner and a counter when an alert is raised while a console page is open.
// Text only (textContent): nothing from the server is ever parsed as HTML.

const box = document.getElementById('live-alerts');
const count = document.getElementById('alert-count');
let fresh = 0;

function show(alert) {
  fresh += 1;
  if (count) {
    count.hidden = false;
    count.textContent = String(fresh);
  }
  if (!box) return;
  const p = document.createElement('p');
  p.className = 'notice live';
  p.setAttribute('role', 'alert');
  const a = document.createElement('a');
  a.href = '/admin/alerts';
  a.textContent = `New ${alert.severity || ''} security alert: ${alert.kind || 'unknown'}`;
  p.append(a);
  if (alert.details && typeof alert.details.summary === 'string') {
    p.append(' — ', alert.details.summary);
  }
  box.prepend(p);
}

function connect(delay) {
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const ws = new WebSocket(scheme + location.host + '/admin/ws');
  ws.addEventListener('open', () => {
    delay = 1000;
    document.documentElement.dataset.live = 'connected';
  });
  ws.addEventListener('message', (m) => {
    let frame;
    try { frame = JSON.parse(m.data); } catch { return; }
    if (frame && frame.event === 'security_alert' && frame.data) show(frame.data);
  });
  // Signed out or session ended: the server refuses; try again later without hammering it.
  ws.addEventListener('close', () => {
    document.documentElement.dataset.live = 'off';
    setTimeout(() => connect(Math.min(delay * 2, 30000)), delay);
  });
}

connect(1000);
