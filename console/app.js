// CairnDB's web console: plain JavaScript over the node's own HTTP API (no build step, no library).
// Signs in once for a token (kept for this tab only), then polls /v1/cluster, /v1/status and /metrics.
'use strict';

const $ = id => document.getElementById(id);
const state = { token: sessionStorage.getItem('cairn-token'), user: sessionStorage.getItem('cairn-user'), tab: 'overview',
                database: null, names: {}, samples: [], timer: null };

// Node ids are 64-bit: beyond what a JavaScript number holds exactly, so the id fields are read as
// strings. Only those keys are touched (a quote inside a JSON string is escaped, so `"id":` there
// cannot match): names holding long numbers stay as they are.
function parseIds(text) {
  return JSON.parse(text
    .replace(/"(id|node|leader|peer)"\s*:\s*(\d{16,})/g, '"$1":"$2"')
    .replace(/"(replicas|voters|learners)"\s*:\s*\[([\d,\s]*)\]/g,
             (_, key, list) => `"${key}":[${list.split(',').map(x => x.trim()).filter(x => x).map(x => '"' + x + '"').join(',')}]`));
}

async function api(method, path, body, { ids = false, raw = false } = {}) {
  const headers = {};
  if (state.token) headers['Authorization'] = 'Bearer ' + state.token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) { showSignIn(); throw new Error('sign in first'); }
  const text = await res.text();
  if (raw) return { status: res.status, text };
  let json;
  try { json = ids ? parseIds(text) : JSON.parse(text); } catch { json = { error: text || res.statusText }; }
  if (!res.ok) throw new Error(json.error || res.statusText);
  return json;
}

function el(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (className) e.className = className;
  return e;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows.map(cells => {
    const tr = document.createElement('tr');
    for (const c of cells) tr.append(c instanceof Node ? wrap(c) : el('td', c === null || c === undefined ? '' : c));
    return tr;
  }));
}
function wrap(node) { if (node.tagName === 'TD') return node; const td = document.createElement('td'); td.append(node); return td; }
function nodeName(id) { return state.names[id] || id; }
function mib(bytes) { return (Number(bytes) / 1048576).toFixed(1) + ' MiB'; }

// --- Signing in --------------------------------------------------------------------------------

function showSignIn() {
  $('app').hidden = true;
  $('signin').hidden = false;
  if (state.timer) { clearInterval(state.timer); state.timer = null; }
}

$('signin-form').addEventListener('submit', async e => {
  e.preventDefault();
  $('signin-error').textContent = '';
  const res = await fetch('/v1/auth/token', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: $('user').value, password: $('password').value }) });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) { $('signin-error').textContent = body.error || res.statusText; return; }
  state.token = body.token; state.user = $('user').value;
  sessionStorage.setItem('cairn-token', state.token);
  sessionStorage.setItem('cairn-user', state.user);
  $('password').value = '';
  start();
});

// --- Tabs --------------------------------------------------------------------------------------

for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => select(b.dataset.tab));

function select(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.tab === tab);
  for (const s of document.querySelectorAll('.tab')) s.hidden = s.id !== tab;
  refresh();
}

async function refresh() {
  try {
    $('error').textContent = '';
    if (state.tab === 'overview') await overview();
    if (state.tab === 'databases') await databases();
    if (state.tab === 'users') await users();
    if (state.tab === 'sql') await sqlDatabases();
    await charts();
  } catch (e) {
    if (e.message !== 'sign in first') $('error').textContent = e.message;
  }
}

async function start() {
  // With auth off the cluster answers without a token: no sign-in.
  const probe = await fetch('/v1/cluster', { headers: state.token ? { Authorization: 'Bearer ' + state.token } : {} });
  if (probe.status === 401) { showSignIn(); return; }
  $('signin').hidden = true;
  $('app').hidden = false;
  $('who').textContent = state.user ? 'signed in as ' + state.user : 'no authentication on this cluster';
  select(state.tab);
  if (!state.timer) state.timer = setInterval(refresh, 2000);
}

// --- Overview ----------------------------------------------------------------------------------

async function overview() {
  const [cluster, status] = await Promise.all([api('GET', '/v1/cluster?detail=true', undefined, { ids: true }),
                                               api('GET', '/v1/status', undefined, { ids: true })]);
  for (const n of cluster.nodes) state.names[n.id] = n.name;
  fill($('nodes').tBodies[0], cluster.nodes.map(n => [n.id, n.name, n.http_addr, el('span', n.state, 'state-' + n.state),
                                                        n.voter ? 'voter' : 'read replica', n.replicas, n.leaders ?? '?',
                                                        n.data_bytes === null || n.data_bytes === undefined ? '?' : mib(n.data_bytes), n.apply_lag ?? '?']));
  const names = {};
  for (const g of cluster.groups) names[g.group] = g.shard === undefined ? g.name : g.name + ' shard ' + g.shard;
  fill($('groups').tBodies[0], status.groups.map(g => [g.group, names[g.group] ?? '', g.role, g.term, nodeName(g.leader),
                                                       g.commit, g.applied, g.commit - g.applied]));
  const moving = (cluster.moves || []).map(m => `${m.database ?? m.name ?? ''} group ${m.group}: node ${nodeName(m.node)} ${m.state}`)
    .concat((cluster.splits || []).map(s => `${s.database} split: ${s.state}`));
  $('moves').textContent = moving.length ? moving.join('; ') : 'none';
  $('refreshed').textContent = 'refreshed ' + new Date().toLocaleTimeString();
}

// --- Databases, shards, the ring, the schema ---------------------------------------------------

async function databases() {
  const list = await api('GET', '/v1/databases', undefined, { ids: true });
  if (!state.database && list.databases.length) state.database = list.databases[0].name;
  $('database-list').replaceChildren(...list.databases.map(d => {
    const b = el('button', d.name, d.name === state.database ? 'active' : '');
    b.addEventListener('click', () => { state.database = d.name; databases(); });
    const li = document.createElement('li'); li.append(b); return li;
  }));
  if (!state.database) return;
  const db = state.database;
  $('database-title').textContent = db;
  const shards = await api('GET', '/v1/db/' + encodeURIComponent(db) + '/shards', undefined, { ids: true }).catch(() => null);
  if (shards && shards.shards && shards.shards.length) {
    fill($('shards').tBodies[0], shards.shards.map(s => [s.shard, s.slots[0] + '..' + (s.slots[1] - 1), s.group, el('td', nodeName(s.leader), 'leader'),
                                                          s.replicas.map(nodeName).join(', '), s.rows, s.bytes]));
    $('shard-note').textContent = `${shards.shard_count} shards; sharded tables: ${shards.tables.join(', ') || 'none'}` +
      (shards.reference_tables.length ? `; reference tables: ${shards.reference_tables.join(', ')}` : '') +
      (shards.schemas_match === false ? ' — the shards\' schemas differ!' : '');
    ring(shards.shards);
  } else {
    const entry = list.databases.find(d => d.name === db);
    fill($('shards').tBodies[0], []);
    $('shard-note').textContent = `one group (${entry.group}) on ${entry.replicas.map(nodeName).join(', ')}: no sharded table yet`;
    ring([]);
  }
  const schema = await api('POST', '/v1/db/' + encodeURIComponent(db) + '/query',
    { statements: ["SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_cairn%' ESCAPE '\\' ORDER BY tbl_name, type DESC, name"] });
  const rows = (schema.results[0].rows || []).map(r => [r[0], r[1], 'home group', r[2]]);
  if (shards && shards.range_tables) for (const t of shards.range_tables) {
    rows.push(['table', t.table, 'by range of ' + t.column, t.ranges.map(r => `[${r.from ?? '-∞'}, ${r.to ?? '+∞'}) → shard ${r.shard}`).join('; ')]);
  }
  if (shards && shards.tables) for (const t of shards.tables) if (!(shards.range_tables || []).some(r => r.table === t)) rows.push(['table', t, 'sharded by hash', '']);
  if (shards && shards.reference_tables) for (const t of shards.reference_tables) rows.push(['table', t, 'a copy on every shard', '']);
  fill($('schema').tBodies[0], rows);
}

const palette = ['#4c78a8', '#f58518', '#54a24b', '#e45756', '#72b7b2', '#eeca3b', '#b279a2', '#ff9da6', '#9d755d', '#bab0ac'];

// Each shard's arc of the 65,536-slot ring, coloured by the node leading it.
function ring(shards) {
  const svg = $('ring');
  const ns = 'http://www.w3.org/2000/svg';
  svg.replaceChildren();
  const leaders = [...new Set(shards.map(s => s.leader))];
  const point = (slot, r) => { const a = slot / 65536 * 2 * Math.PI - Math.PI / 2; return [r * Math.cos(a), r * Math.sin(a)]; };
  for (const s of shards) {
    const [lo, hi] = s.slots;
    const [x1, y1] = point(lo, 100), [x2, y2] = point(hi, 100), [x3, y3] = point(hi, 60), [x4, y4] = point(lo, 60);
    const large = hi - lo > 32768 ? 1 : 0;
    const path = document.createElementNS(ns, 'path');
    path.setAttribute('d', `M${x1},${y1} A100,100 0 ${large} 1 ${x2},${y2} L${x3},${y3} A60,60 0 ${large} 0 ${x4},${y4} Z`);
    path.setAttribute('fill', palette[leaders.indexOf(s.leader) % palette.length]);
    path.setAttribute('stroke', '#fff');
    path.setAttribute('class', 'arc');
    path.setAttribute('data-shard', s.shard);
    const title = document.createElementNS(ns, 'title');
    title.textContent = `shard ${s.shard}: slots ${lo}..${hi - 1}, leader ${nodeName(s.leader)}, replicas ${s.replicas.map(nodeName).join(', ')}`;
    path.append(title);
    svg.append(path);
    const [tx, ty] = point((lo + hi) / 2, 80);
    const label = document.createElementNS(ns, 'text');
    label.setAttribute('x', tx); label.setAttribute('y', ty + 3); label.setAttribute('text-anchor', 'middle');
    label.setAttribute('font-size', '9'); label.setAttribute('fill', '#fff');
    label.textContent = s.shard;
    svg.append(label);
  }
  $('ring-legend').replaceChildren(...leaders.map((l, i) => {
    const li = el('li', ' led by ' + nodeName(l));
    const swatch = el('span', '■');
    swatch.style.color = palette[i % palette.length];
    li.prepend(swatch);
    return li;
  }));
  if (!shards.length) $('ring-legend').replaceChildren(el('li', 'not sharded'));
}

// --- SQL ---------------------------------------------------------------------------------------

async function sqlDatabases() {
  const list = await api('GET', '/v1/databases');
  const select = $('sql-db');
  const current = select.value || state.database || 'default';
  select.replaceChildren(...list.databases.map(d => { const o = el('option', d.name); o.selected = d.name === current; return o; }));
  renderHistory();
}

function history() { return JSON.parse(localStorage.getItem('cairn-history') || '[]'); }
function renderHistory() {
  $('history').replaceChildren(...history().map(h => {
    const li = el('li', h);
    li.addEventListener('click', () => { $('sql-text').value = h; });
    return li;
  }));
}

async function run() {
  const sql = $('sql-text').value.trim();
  if (!sql) return;
  localStorage.setItem('cairn-history', JSON.stringify([sql, ...history().filter(h => h !== sql)].slice(0, 50)));
  renderHistory();
  $('sql-plan').hidden = true;
  const started = performance.now();
  const out = $('sql-out');
  try {
    const body = await api('POST', '/v1/db/' + encodeURIComponent($('sql-db').value || 'default') + '/request',
                           { statements: [sql], consistency: $('sql-level').value });
    $('sql-status').textContent = `${Math.round(performance.now() - started)} ms`;
    out.replaceChildren();
    for (const r of body.results) {
      if (r.error) { out.append(el('p', r.error, 'error')); continue; }
      if (!r.columns) { out.append(el('p', `OK, ${r.rows_affected || 0} rows affected`)); continue; }
      const t = document.createElement('table'); t.className = 'result';
      const head = t.createTHead().insertRow();
      for (const c of r.columns) head.append(el('th', c));
      const tbody = t.createTBody();
      for (const row of r.rows) { const tr = tbody.insertRow(); for (const v of row) tr.append(el('td', v === null ? 'NULL' : typeof v === 'object' ? JSON.stringify(v) : v)); }
      out.append(t, el('p', `${r.rows.length} row${r.rows.length === 1 ? '' : 's'}`));
    }
  } catch (e) {
    $('sql-status').textContent = '';
    out.replaceChildren(el('p', e.message, 'error'));
  }
}

async function plan() {
  try {
    const body = await api('POST', '/v1/db/' + encodeURIComponent($('sql-db').value || 'default') + '/route', { statements: [$('sql-text').value] });
    $('sql-plan').textContent = JSON.stringify(body.plans, null, 2);
  } catch (e) {
    $('sql-plan').textContent = e.message;
  }
  $('sql-plan').hidden = false;
}

$('run').addEventListener('click', run);
$('plan').addEventListener('click', plan);
$('sql-text').addEventListener('keydown', e => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); } });

// --- Users -------------------------------------------------------------------------------------

async function users() {
  try {
    const list = await api('GET', '/v1/users');
    $('users-error').textContent = '';
    fill($('user-table').tBodies[0], list.users.map(u => [u.username === '*' ? '* (everyone)' : u.username, u.password_set ? 'set' : '—',
      u.grants.map(g => g.permission + (g.database ? ' on ' + g.database : '')).join(', ')]));
  } catch (e) {
    $('users-error').textContent = e.message;
  }
}

// --- Charts from /metrics ----------------------------------------------------------------------

// Prometheus's text format: name{labels} value.
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    // Label values may hold braces (endpoint="/v1/db/{db}/execute"): quoted strings are skipped whole.
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const pair of m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

function sum(metrics, name, filter = () => true) { return metrics.filter(m => m.name === name && filter(m.labels)).reduce((a, m) => a + m.value, 0); }
function buckets(metrics, name, filter = () => true) {
  const b = {};
  for (const m of metrics) if (m.name === name + '_bucket' && filter(m.labels)) b[m.labels.le] = (b[m.labels.le] || 0) + m.value;
  return b;
}

// The 99th percentile of what a histogram saw between two samples (the upper bound of its bucket).
function p99(before, after) {
  const les = Object.keys(after).filter(le => le !== '+Inf').map(Number).sort((a, b) => a - b);
  const total = (after['+Inf'] || 0) - (before['+Inf'] || 0);
  if (total <= 0) return 0;
  for (const le of les) if ((after[String(le)] || 0) - (before[String(le)] || 0) >= 0.99 * total) return le * 1000;
  return les.length ? les[les.length - 1] * 1000 : 0;
}

async function charts() {
  const { status, text } = await api('GET', '/metrics', undefined, { raw: true });
  if (status !== 200) return;
  const m = parseMetrics(text);
  // Requests this node answered, as its clients saw them: writes through the execute endpoints (the
  // native API's and rqlite's), reads through the query ones.
  const writing = l => /execute$/.test(l.endpoint || ''), reading = l => /query$/.test(l.endpoint || '');
  const sample = { at: performance.now(),
    writes: sum(m, 'cairn_http_requests_total', writing),
    reads: sum(m, 'cairn_http_requests_total', reading),
    write: buckets(m, 'cairn_http_request_duration_seconds', writing), wal: buckets(m, 'cairn_wal_sync_seconds') };
  const last = state.samples[state.samples.length - 1];
  if (last) {
    const seconds = (sample.at - last.at) / 1000;
    sample.point = { writes: (sample.writes - last.writes) / seconds, reads: (sample.reads - last.reads) / seconds,
                     p99: p99(last.write, sample.write), wal: p99(last.wal, sample.wal) };
  }
  state.samples.push(sample);
  if (state.samples.length > 61) state.samples.shift();
  if (state.tab !== 'charts') return;
  const points = state.samples.filter(s => s.point).map(s => s.point);
  draw($('chart-writes'), points.map(p => p.writes));
  draw($('chart-reads'), points.map(p => p.reads));
  draw($('chart-p99'), points.map(p => p.p99));
  draw($('chart-wal'), points.map(p => p.wal));
}

function draw(canvas, values) {
  const c = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height;
  c.clearRect(0, 0, w, h);
  const max = Math.max(1, ...values);
  c.strokeStyle = '#d9dee4'; c.beginPath(); c.moveTo(0, h - 1); c.lineTo(w, h - 1); c.stroke();
  c.fillStyle = '#4a5562'; c.font = '11px sans-serif';
  c.fillText(max.toFixed(max < 10 ? 2 : 0), 4, 12);
  if (values.length) c.fillText('now ' + values[values.length - 1].toFixed(1), w - 80, 12);
  c.strokeStyle = '#4c78a8'; c.lineWidth = 2; c.beginPath();
  values.forEach((v, i) => { const x = values.length === 1 ? w : i * w / (values.length - 1), y = h - 4 - (v / max) * (h - 20); i ? c.lineTo(x, y) : c.moveTo(x, y); });
  c.stroke();
}

start();
