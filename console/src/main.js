// Airlock's web console. It speaks only the hub's documented REST API
// (/openapi.json), on a session cookie the page cannot read; its CSRF
// token is kept in this module's memory only. Every value from the hub is
// put into the page as text (textContent), never as HTML.

import './style.css';
import { EditorView, keymap, placeholder } from '@codemirror/view';
import { EditorState } from '@codemirror/state';
import { defaultKeymap, history, historyKeymap } from '@codemirror/commands';
import { sql, StandardSQL } from '@codemirror/lang-sql';
import { autocompletion, completionKeymap } from '@codemirror/autocomplete';
import { setDiagnostics } from '@codemirror/lint';
import { syntaxHighlighting, defaultHighlightStyle } from '@codemirror/language';
import {
  Chart, BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip,
} from 'chart.js';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

const session = { member: null, csrf: null };
const top = document.getElementById('top');
const main = document.getElementById('main');

// ---- DOM: every string child becomes a text node -------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function show(...nodes) {
  main.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
}

// ---- The API ----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

async function api(method, path, body) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && session.csrf) headers['x-csrf-token'] = session.csrf;
  const r = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const type = r.headers.get('content-type') || '';
  const data = type.startsWith('application/json') ? await r.json() : await r.text();
  if (!r.ok) {
    if (r.status === 401 && path !== '/v1/session') {
      session.member = null;
      session.csrf = null;
      renderHeader();
    }
    throw new ApiError(r.status, typeof data === 'object' ? data : { error: data });
  }
  return data;
}

const enc = encodeURIComponent;

// As the CLI prints an error: a refusal with its control, rule, table and
// column; anything else with its code.
function errorText(e) {
  if (!(e instanceof ApiError)) return String(e);
  const b = e.body;
  if (b.code === 'refused' && b.refusal) return `refused: ${b.error}`;
  return `${b.code || 'error'}: ${b.error}`;
}

function errorBox(e) {
  return h('div', { class: 'status err', role: 'alert' }, errorText(e));
}

// ---- Formatting -------------------------------------------------------------

const thousands = new Intl.NumberFormat('en-US', { maximumFractionDigits: 6 });

function iso(ms) {
  return new Date(ms).toISOString().replace('.000Z', 'Z');
}

// A noisy value rounded to the power of ten at or below its noise scale.
function roundToScale(v, scale) {
  if (!(scale > 0)) return v;
  const step = 10 ** Math.floor(Math.log10(scale));
  return Math.round(v / step) * step;
}

// ---- Header and routing -------------------------------------------------------

function renderHeader() {
  if (!session.member) {
    top.replaceChildren(h('span', { class: 'brand' }, 'Airlock console'));
    return;
  }
  top.replaceChildren(
    h('span', { class: 'brand' }, 'Airlock console'),
    h('nav', { 'aria-label': 'Main' },
      h('a', { href: '#/' }, 'Collaborations'),
      h('a', { href: '#/approvals' }, 'Approvals')),
    h('span', {}, 'Signed in as ', h('strong', { id: 'whoami' }, session.member)),
    h('button', { type: 'button', onclick: signOut }, 'Sign out'),
  );
}

async function signOut() {
  try {
    await api('DELETE', '/v1/session');
  } finally {
    session.member = null;
    session.csrf = null;
    stopPolling();
    renderHeader();
    location.hash = '#/';
    route();
  }
}

let poller = null;
function stopPolling() {
  if (poller) clearTimeout(poller);
  poller = null;
}

async function route() {
  stopPolling();
  if (!session.member) return signInPage();
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  try {
    if (parts[0] === 'approvals') return await approvalsPage();
    if (parts[0] === 'c' && parts[1]) {
      const tab = parts[2] || 'overview';
      if (tab === 'query') return await queryPage(parts[1]);
      if (tab === 'audit') return await auditPage(parts[1]);
      return await overviewPage(parts[1]);
    }
    return await listPage();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return signInPage();
    show(h('h1', {}, 'Error'), errorBox(e));
  }
}

window.addEventListener('hashchange', route);

// ---- Sign in ----------------------------------------------------------------------

function signInPage(message) {
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true, size: 60 });
  const out = h('div', { 'aria-live': 'polite' }, message ? h('div', { class: 'status info' }, message) : null);
  const form = h('form', {
    onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const r = await api('POST', '/v1/session', { token: input.value });
        input.value = '';
        session.member = r.member;
        session.csrf = r.csrf;
        renderHeader();
        route();
      } catch (e) {
        out.replaceChildren(errorBox(e));
      }
    },
  },
  h('label', { for: 'token' }, 'Token'),
  input,
  h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Sign in')),
  );
  show(h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'Your member token (from airlock hub token issue). It is sent once to start a session; the page never keeps it.'),
    form, out);
  input.focus();
}

// ---- Collaborations ------------------------------------------------------------------

async function listPage() {
  const list = await api('GET', '/v1/collaborations');
  show(
    h('h1', {}, 'Collaborations'),
    list.length === 0
      ? h('p', {}, 'You belong to no collaboration yet.')
      : h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', { class: 'num' }, 'Policy version'))),
        h('tbody', {}, list.map((c) => h('tr', {},
          h('td', {}, h('a', { href: `#/c/${enc(c.name)}` }, c.name)),
          h('td', { class: 'num' }, c.version))))),
  );
}

function tabs(name, current) {
  const tab = (id, label) => h('a', {
    href: `#/c/${enc(name)}${id === 'overview' ? '' : `/${id}`}`,
    'aria-current': id === current ? 'page' : undefined,
  }, label);
  return h('nav', { class: 'tabs', 'aria-label': 'Collaboration' },
    tab('overview', 'Overview'), tab('query', 'Query'), tab('audit', 'Audit'));
}

function roleColumns(t) {
  const rows = [];
  rows.push([t.identity, 'identity (pseudonymised, never output)']);
  for (const j of t.join || []) if (j !== t.identity) rows.push([j, 'join key (pseudonymised)']);
  for (const d of t.dimensions || []) rows.push([d, 'dimension']);
  for (const [m, fns] of Object.entries(t.measures || {})) rows.push([m, `measure (${fns.join(', ')})`]);
  return rows;
}

function ruleText(rule) {
  return JSON.stringify(rule, null, 1).replace(/\n\s*/g, ' ');
}

async function budgetGauge(name) {
  const box = h('div', { class: 'gauge', 'aria-live': 'polite' });
  try {
    const [b, view] = await Promise.all([
      api('GET', `/v1/collaborations/${enc(name)}/budget`),
      api('GET', `/v1/collaborations/${enc(name)}`),
    ]);
    const privacy = view.config?.privacy;
    if (!b.collaboration_left && !b.member_left) {
      box.append(h('p', { class: 'muted' }, 'This collaboration has no privacy budget (no [privacy] section).'));
      return box;
    }
    const total = Number(privacy?.epsilon ?? NaN);
    const gauge = (label, id, left, max) => {
      const spent = Number.isFinite(max) ? Math.max(0, max - left.epsilon) : null;
      return h('div', { class: 'row' },
        h('label', { for: id }, label),
        h('meter', { id, min: 0, max: Number.isFinite(max) ? max : left.epsilon, value: left.epsilon, 'data-left': left.epsilon }),
        h('span', { id: `${id}-text` }, `epsilon left ${left.epsilon.toFixed(3)}`,
          spent !== null ? ` of ${max} (spent ${spent.toFixed(3)})` : '',
          left.period_ends_ms ? `, fresh again at ${iso(left.period_ends_ms)}` : ''));
    };
    if (b.collaboration_left) box.append(gauge('Privacy budget left (collaboration)', 'budget-collab', b.collaboration_left, total));
    const own = (privacy?.analysts || []).find((a) => a.name === b.member);
    const memberMax = own ? Math.min(Number(own.epsilon), total) : total;
    if (b.member_left) box.append(gauge(`Privacy budget left (${b.member})`, 'budget-member', b.member_left, memberMax));
  } catch (e) {
    box.append(errorBox(e));
  }
  return box;
}

async function overviewPage(name) {
  const v = await api('GET', `/v1/collaborations/${enc(name)}`);
  const cfg = v.config || {};
  const sec = cfg.collaboration || {};
  const owners = Object.fromEntries((cfg.datasets || []).map((d) => [d.name, d.owner]));
  show(
    h('h1', {}, `Collaboration ${v.name}`),
    tabs(name, 'overview'),
    h('p', {}, `Policy version ${v.version} · mode ${sec.mode || 'trusted'} · id `, h('code', {}, v.id)),
    h('p', {}, 'Purposes: ', (sec.purposes || []).join(', ') || 'none declared',
      ' · retention: ', sec.retention_days ? `${sec.retention_days} days` : 'none set'),
    h('h2', {}, 'Members and abilities'),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Member'), h('th', {}, 'Abilities'), h('th', {}, 'Current version'))),
      h('tbody', {}, (cfg.members || []).map((m) => h('tr', {},
        h('td', {}, m.name), h('td', {}, (m.abilities || []).join(', ')),
        h('td', {}, v.approvals?.[m.name] ?? 'not asked (contributes no data)'))))),
    h('h2', {}, 'Node sync state'),
    v.sync_errors?.length
      ? h('ul', {}, v.sync_errors.map((e) => h('li', { class: 'err' }, e)))
      : h('p', { class: 'status ok' }, 'Every node that must hold the current version holds it (or its approval is awaited, as above).'),
    h('h2', {}, 'Configured tables'),
    (cfg.tables || []).map((t) => h('div', { class: 'card' },
      h('h3', {}, `${t.alias} `, h('span', { class: 'muted' }, `(dataset ${t.dataset}, owner ${owners[t.dataset] || '?'})`)),
      h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Column'), h('th', {}, 'Role'))),
        h('tbody', {}, roleColumns(t).map(([c, r]) => h('tr', {}, h('td', {}, c), h('td', {}, r))))),
      h('p', {}, 'Rule: ', h('code', {}, ruleText(t.rule))),
      t.rule?.min_distinct_identities ? h('p', {}, `At least ${t.rule.min_distinct_identities} distinct people per output row`) : null)),
    cfg.privacy ? [h('h2', {}, 'Differential privacy'), h('pre', {}, JSON.stringify(cfg.privacy, null, 2))] : null,
    h('h2', {}, 'Privacy budget'),
    await budgetGauge(name),
    h('h2', {}, 'Policy versions'),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', { class: 'num' }, 'Version'), h('th', {}, 'SHA-256'), h('th', {}, 'By'), h('th', {}, 'At'))),
      h('tbody', {}, v.versions.map(([ver, sha, by, at]) => h('tr', {},
        h('td', { class: 'num' }, ver), h('td', {}, h('code', {}, sha.slice(0, 16))), h('td', {}, by), h('td', {}, iso(at)))))),
  );
}

// The bytes airlock_crypto::approval::approval_message signs.
function approvalMessage(id, version, sha256, replaces) {
  return new TextEncoder().encode(`airlock/v1/approve-collaboration\n${id}\n${version}\n${sha256}\n${replaces || '-'}`);
}

function fromHex(hex) {
  const clean = hex.trim();
  if (!/^([0-9a-f]{2})+$/i.test(clean)) throw new Error('the member key file is not a key written by airlock keys init');
  return Uint8Array.from(clean.match(/../g), (b) => parseInt(b, 16));
}

// Signs an approval with a member key file (hex of the PKCS#8 document
// ring writes: the 32-byte Ed25519 seed follows a 16-byte prefix).
async function signApproval(keyText, cur) {
  const doc = fromHex(keyText);
  const prefix = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
  const ok = doc.length >= 48 && doc[9] === 0x2b && doc[10] === 0x65 && doc[11] === 0x70 && doc[14] === 0x04 && doc[15] === 0x20;
  if (!ok) throw new Error('the member key file is not an Ed25519 key written by airlock keys init');
  const pkcs8 = new Uint8Array([...prefix, ...doc.slice(16, 48)]);
  const key = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, false, ['sign']);
  const sig = new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, key, approvalMessage(cur.id, cur.version, cur.sha256, cur.replaces_sha256)));
  return [...sig].map((b) => b.toString(16).padStart(2, '0')).join('');
}

// ---- Approvals -------------------------------------------------------------------------

// The changed lines with three lines of context; longer unchanged runs
// are folded into one line saying how many.
function diffView(diff) {
  const lines = diff.replace(/\n$/, '').split('\n');
  const changed = lines.map((l) => l.startsWith('+') || l.startsWith('-'));
  const near = (i) => changed.slice(Math.max(0, i - 3), i + 4).some(Boolean);
  const out = [];
  let folded = 0;
  lines.forEach((l, i) => {
    if (!changed[i] && !near(i)) {
      folded++;
      return;
    }
    if (folded) out.push(h('span', { class: 'muted' }, `  … ${folded} unchanged lines …\n`));
    folded = 0;
    out.push(h('span', { class: l.startsWith('+') ? 'add' : l.startsWith('-') ? 'del' : undefined }, `${l}\n`));
  });
  if (folded) out.push(h('span', { class: 'muted' }, `  … ${folded} unchanged lines …\n`));
  return h('pre', { 'aria-label': 'Differences' }, out);
}

async function approvalsPage() {
  const waiting = await api('GET', '/v1/approvals');
  const collabs = await api('GET', '/v1/collaborations');
  const templateCards = [];
  for (const c of collabs) {
    const [templates, view] = await Promise.all([
      api('GET', `/v1/collaborations/${enc(c.name)}/templates`),
      api('GET', `/v1/collaborations/${enc(c.name)}`),
    ]);
    const approver = Object.prototype.hasOwnProperty.call(view.approvals || {}, session.member);
    if (!approver) continue;
    for (const t of templates) {
      const mine = t.approved_by.includes(session.member);
      const out = h('div', { 'aria-live': 'polite' });
      const act = async (method) => {
        try {
          // By hash: what is approved is exactly the SQL shown here.
          const r = await api(method, `/v1/collaborations/${enc(c.name)}/templates/${enc(t.hash)}/approval`);
          out.replaceChildren(h('div', { class: 'status ok' },
            r.approved ? `approved: ${r.checks} checks passed; policy version ${r.version}` : `approval revoked; policy version ${r.version}`));
        } catch (e) {
          out.replaceChildren(errorBox(e));
        }
      };
      templateCards.push(h('div', { class: 'card' },
        h('h3', {}, `Template ${t.name} in ${c.name}`),
        h('p', {}, `Purpose: ${t.purpose} · hash `, h('code', {}, t.hash.slice(0, 16)),
          ` · approved by: ${t.approved_by.join(', ') || 'nobody yet'}`),
        h('pre', {}, t.sql),
        h('p', {}, 'Parameters: ', h('code', {}, JSON.stringify(t.params))),
        h('div', { class: 'row' }, mine
          ? h('button', { type: 'button', class: 'secondary', onclick: () => act('DELETE') }, `Revoke approval of ${t.name}`)
          : h('button', { type: 'button', onclick: () => act('POST') }, `Approve template ${t.name}`)),
        out));
    }
  }
  const detailed = await Promise.all(waiting.map((w) => api('GET', `/v1/collaborations/${enc(w.collaboration)}/approval`)));
  const versionCards = detailed.map((a) => {
    const reason = h('input', { id: `reason-${a.collaboration}`, size: 50 });
    const keyFile = h('input', { id: `key-${a.collaboration}`, type: 'file' });
    const out = h('div', { 'aria-live': 'polite' });
    const decide = async (body) => {
      try {
        await api('POST', `/v1/collaborations/${enc(a.collaboration)}/approval`, body);
        out.replaceChildren(h('div', { class: 'status ok' }, body.signature ? `approved version ${a.version}` : `refused version ${a.version}`));
      } catch (e) {
        out.replaceChildren(errorBox(e));
      }
    };
    const approve = async () => {
      try {
        const file = keyFile.files?.[0];
        if (!file) throw new Error('choose your member key file (airlock keys init wrote it) to sign the approval');
        // What is signed, with the text the caller's node holds now.
        // Only what this page showed is signed: if the version changed
        // since, nothing is signed and the page is shown again.
        const cur = await api('GET', `/v1/collaborations/${enc(a.collaboration)}/approval`);
        if (cur.sha256 !== a.sha256 || cur.version !== a.version || cur.id !== a.id) {
          out.replaceChildren(h('div', { class: 'status err', role: 'alert' }, `version ${cur.version} replaced the version shown: review it again`));
          setTimeout(route, 1500);
          return;
        }
        const signature = await signApproval(await file.text(), { ...a, replaces_sha256: cur.replaces_sha256 });
        await decide({ sha256: a.sha256, signature });
      } catch (e) {
        out.replaceChildren(errorBox(e));
      }
    };
    return h('div', { class: 'card' },
      h('h3', {}, `${a.collaboration}, version ${a.version}`),
      h('p', {}, a.approved_before ? `Differences from version ${a.approved_before}, which you approved:` : 'You approved no earlier version: the whole file.'),
      diffView(a.diff),
      h('p', { class: 'muted' }, 'An approval is an Ed25519 signature by your member key, which your node checks itself. The key file is read by this page, in your browser, and not sent; but this page comes from the hub, so signing here trusts the hub with your key. To trust no hub, approve with ',
        h('code', {}, `airlock collab approve ${a.collaboration} --sha256 ${a.sha256}`), ' instead.'),
      h('label', { for: `key-${a.collaboration}` }, `Member key file for ${a.collaboration}`), keyFile,
      h('div', { class: 'row' }, h('button', { type: 'button', onclick: approve }, `Approve version ${a.version} of ${a.collaboration}`)),
      h('label', { for: `reason-${a.collaboration}` }, 'Reason to refuse'), reason,
      h('div', { class: 'row' }, h('button', { type: 'button', class: 'secondary', onclick: () => decide({ sha256: a.sha256, refuse: reason.value || 'refused in the console' }) }, `Refuse version ${a.version} of ${a.collaboration}`)),
      out);
  });
  show(h('h1', {}, 'Approvals'),
    h('h2', {}, 'Collaboration versions waiting for you'),
    versionCards.length ? versionCards : h('p', {}, 'None.'),
    h('h2', {}, 'Templates over your data'),
    templateCards.length ? templateCards : h('p', {}, 'None.'));
}

// ---- Query editor ---------------------------------------------------------------------------

function schemaOf(cfg) {
  const out = {};
  for (const t of cfg.tables || []) out[t.alias] = roleColumns(t).map(([c]) => c);
  return out;
}

function markRefusal(view, refusal) {
  const text = view.state.doc.toString();
  const diags = [];
  const word = refusal?.column || refusal?.table;
  if (word) {
    const re = new RegExp(`\\b${word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\b`, 'gi');
    let m;
    while ((m = re.exec(text))) {
      diags.push({ from: m.index, to: m.index + m[0].length, severity: 'error', markClass: 'cm-refused', message: refusal.reason || 'refused' });
    }
  }
  view.dispatch(setDiagnostics(view.state, diags));
  return diags.length;
}

async function queryPage(name) {
  const v = await api('GET', `/v1/collaborations/${enc(name)}`);
  const templates = await api('GET', `/v1/collaborations/${enc(name)}/templates`);
  const checkOut = h('div', { id: 'check', 'aria-live': 'polite' });
  const runOut = h('div', { id: 'run', 'aria-live': 'polite' });
  const results = h('div', { id: 'results' });
  const gaugeBox = h('div', {}, await budgetGauge(name));
  const deliver = h('input', { id: 'deliver', size: 24, placeholder: 'none: keep at the hub' });
  const purpose = h('select', { id: 'purpose' }, h('option', { value: '' }, '(none)'),
    (v.config?.collaboration?.purposes || []).map((p) => h('option', { value: p }, p)));
  const first = Object.keys(schemaOf(v.config || {}));
  let timer = null;
  let seq = 0;
  // The editor lives in a shadow root: CodeMirror then styles it with
  // constructed style sheets, which the Content-Security-Policy allows
  // (in the document itself it would add <style> elements, which it
  // refuses).
  const editorBox = h('div', { class: 'editor' });
  const shadow = editorBox.attachShadow({ mode: 'open' });
  const editorParent = document.createElement('div');
  shadow.append(editorParent);
  const view = new EditorView({
    parent: editorParent,
    root: shadow,
    state: EditorState.create({
      doc: '',
      extensions: [
        history(),
        keymap.of([...defaultKeymap, ...historyKeymap, ...completionKeymap]),
        sql({ dialect: StandardSQL, schema: schemaOf(v.config || {}), upperCaseKeywords: true }),
        syntaxHighlighting(defaultHighlightStyle),
        autocompletion(),
        EditorView.lineWrapping,
        EditorView.theme({
          '&': { minHeight: '6rem', fontSize: '14px' },
          '&.cm-focused': { outline: '3px solid #f0a500' },
          '.cm-content': { minHeight: '6rem', fontFamily: 'ui-monospace, monospace' },
          '.cm-refused': { textDecoration: 'wavy underline #c0262d', backgroundColor: '#fde2e2' },
        }),
        placeholder(first.length ? `SELECT ... FROM ${first[0]} ...` : 'SELECT ...'),
        EditorView.contentAttributes.of({ 'aria-label': 'SQL', id: 'sql' }),
        EditorView.updateListener.of((u) => {
          if (u.docChanged) {
            clearTimeout(timer);
            timer = setTimeout(() => check(), 40);
          }
        }),
      ],
    }),
  });
  const spec = () => {
    const s = { sql: view.state.doc.toString() };
    if (purpose.value) s.purpose = purpose.value;
    if (deliver.value.trim()) s.deliver = deliver.value.trim();
    return s;
  };
  async function check() {
    const text = view.state.doc.toString();
    if (!text.trim()) {
      checkOut.replaceChildren();
      return;
    }
    const mine = ++seq;
    const started = performance.now();
    try {
      const r = await api('POST', `/v1/collaborations/${enc(name)}/check`, spec());
      if (mine !== seq) return;
      view.dispatch(setDiagnostics(view.state, []));
      checkOut.replaceChildren(h('div', { class: 'status ok', 'data-ms': Math.round(performance.now() - started), 'data-seq': mine },
        'allowed', r.cost ? ` · cost: epsilon ${r.cost.epsilon}, delta ${r.cost.delta}` : ' · no privacy budget spent'),
      h('details', { open: true }, h('summary', {}, 'Plan per member'), h('pre', {}, r.plan)));
    } catch (e) {
      if (mine !== seq) return;
      const marked = e.body?.refusal ? markRefusal(view, e.body.refusal) : 0;
      checkOut.replaceChildren(h('div', { class: 'status err', role: 'alert', 'data-ms': Math.round(performance.now() - started), 'data-seq': mine, 'data-marked': marked }, errorText(e)));
    }
  }
  async function run(body) {
    results.replaceChildren();
    runOut.replaceChildren(h('div', { class: 'status info' }, 'submitting…'));
    let q;
    try {
      q = await api('POST', `/v1/collaborations/${enc(name)}/queries`, body);
    } catch (e) {
      runOut.replaceChildren(errorBox(e));
      return;
    }
    const cancel = h('button', { type: 'button', class: 'secondary', onclick: async () => {
      try { await api('POST', `/v1/queries/${enc(q.id)}/cancel`); } catch (e) { runOut.append(errorBox(e)); }
    } }, 'Cancel');
    const progress = h('progress', { id: 'progress', max: 1, value: 0, 'aria-label': 'Query progress' });
    const stateText = h('span', { id: 'query-state' }, q.state);
    runOut.replaceChildren(h('div', { class: 'row' }, 'Query ', h('code', {}, q.id), ': ', stateText, progress, cancel));
    const step = async () => {
      try {
        q = await api('GET', `/v1/queries/${enc(q.id)}`);
      } catch (e) {
        runOut.append(errorBox(e));
        return;
      }
      stateText.textContent = q.state + (q.progress?.step ? ` (${q.progress.step})` : '');
      if (q.progress?.fragments_total) {
        progress.max = q.progress.fragments_total;
        progress.value = q.progress.fragments_done;
      }
      if (['submitted', 'checked', 'running'].includes(q.state)) {
        poller = setTimeout(step, 300);
        return;
      }
      cancel.disabled = true;
      progress.max = 1;
      progress.value = 1;
      gaugeBox.replaceChildren(await budgetGauge(name));
      if (q.state === 'released') {
        if (q.delivery) {
          runOut.append(h('div', { class: 'status ok' }, `delivered: ${q.delivery}`));
          return;
        }
        await showResult(q, results);
      } else if (q.state === 'refused' && q.refusal) {
        markRefusal(view, q.refusal);
        runOut.append(h('div', { class: 'status err', role: 'alert' }, `refused${q.refused_by_node ? ` by the node of ${q.refused_by_node}` : ''}: ${q.error || q.refusal.reason}`));
      } else {
        runOut.append(h('div', { class: 'status err', role: 'alert' }, `${q.state}: ${q.error || ''}`));
      }
    };
    step();
  }
  const templateForms = templates.map((t) => {
    const inputs = Object.entries(t.params || {}).map(([p, decl]) => {
      const id = `tp-${t.name}-${p}`;
      const allowed = decl.allowed;
      const input = Array.isArray(allowed)
        ? h('select', { id, name: p }, allowed.map((a) => h('option', { value: String(a) }, String(a))))
        : h('input', { id, name: p, type: ['int', 'integer', 'float', 'number'].includes(decl.type) ? 'number' : 'text' });
      return [p, h('div', {}, h('label', { for: id }, `${p} (${decl.type || 'string'})`), input), input];
    });
    return h('form', { class: 'card', onsubmit: (ev) => {
      ev.preventDefault();
      const params = Object.fromEntries(inputs.map(([p, , i]) => [p, i.value]));
      const body = { template: t.name, params };
      if (deliver.value.trim()) body.deliver = deliver.value.trim();
      run(body);
    } },
    h('h3', {}, `Template ${t.name}`), h('p', { class: 'muted' }, `${t.purpose} · approved by ${t.approved_by.join(', ') || 'nobody yet'}`),
    h('pre', {}, t.sql), inputs.map(([, el]) => el),
    h('div', { class: 'row' }, h('button', { type: 'submit' }, `Run template ${t.name}`)));
  });
  show(
    h('h1', {}, `Query ${v.name}`),
    tabs(name, 'query'),
    gaugeBox,
    h('label', { id: 'sql-label' }, 'SQL'),
    editorBox,
    h('div', { class: 'row' },
      h('label', { for: 'purpose' }, 'Purpose'), purpose,
      h('label', { for: 'deliver' }, 'Deliver to (a destination of your node)'), deliver),
    h('div', { class: 'row' },
      h('button', { type: 'button', class: 'secondary', onclick: check }, 'Check'),
      h('button', { type: 'button', onclick: () => run(spec()) }, 'Run')),
    checkOut, runOut, results,
    templates.length ? [h('h2', {}, 'Templates'), templateForms] : null,
  );
  view.focus();
  // For tests and scripts: the editor's text can be set through the page.
  editorBox.cmView = view;
}

// ---- Results ------------------------------------------------------------------------------------

async function showResult(q, into) {
  let r;
  try {
    r = await api('GET', `/v1/queries/${enc(q.id)}/result?format=json`);
  } catch (e) {
    into.replaceChildren(errorBox(e));
    return;
  }
  const noise = Object.fromEntries((Array.isArray(r.noise) ? r.noise : []).map((n) => [n.column, n]));
  let rows = r.rows.slice();
  let sortBy = null;
  let asc = true;
  const tableBox = h('div', {});
  const cell = (c, i) => {
    const col = r.columns[i];
    if (c === null) return h('td', { class: col.numeric ? 'num' : undefined }, 'NULL');
    if (!col.numeric || typeof c !== 'number') return h('td', {}, String(c));
    const n = noise[col.name];
    if (n) {
      const width = Array.isArray(n.interval95) ? n.interval95[0] : null;
      const shown = roundToScale(c, n.scale);
      return h('td', { class: 'num', title: `noisy value; 95% of noise within ±${width}` },
        thousands.format(shown), width !== null ? h('span', { class: 'muted' }, ` ± ${thousands.format(roundToScale(width, n.scale))}`) : '');
    }
    return h('td', { class: 'num' }, thousands.format(c));
  };
  const drawTable = () => {
    tableBox.replaceChildren(h('table', { id: 'result-table' },
      h('caption', { class: 'muted' }, `${rows.length} rows released`),
      h('thead', {}, h('tr', {}, r.columns.map((c, i) => h('th', {
        class: c.numeric ? 'num' : undefined,
        'aria-sort': sortBy === i ? (asc ? 'ascending' : 'descending') : 'none',
      }, h('button', { type: 'button', onclick: () => {
        asc = sortBy === i ? !asc : true;
        sortBy = i;
        rows.sort((a, b) => {
          const x = a[i]; const y = b[i];
          const d = x === null ? -1 : y === null ? 1 : (typeof x === 'number' ? x - y : String(x).localeCompare(String(y)));
          return asc ? d : -d;
        });
        drawTable();
      } }, c.name))))),
      h('tbody', {}, rows.map((row) => h('tr', {}, row.map(cell))))));
  };
  drawTable();
  const dims = r.columns.map((c, i) => [c, i]).filter(([c]) => !c.numeric);
  const measures = r.columns.map((c, i) => [c, i]).filter(([c]) => c.numeric);
  const chartBox = h('div', { class: 'chart', hidden: true });
  let chart = null;
  const canChart = measures.length >= 1 && (dims.length === 1 || (dims.length === 2 && measures.length === 1));
  const drawChart = () => {
    if (chart) chart.destroy();
    const canvas = h('canvas', { id: 'result-chart', role: 'img', 'aria-label': 'Chart of the result' });
    chartBox.replaceChildren(canvas);
    const label = (v) => (v === null ? 'NULL' : String(v));
    let data;
    if (dims.length === 1) {
      const [, di] = dims[0];
      data = {
        labels: r.rows.map((row) => label(row[di])),
        datasets: measures.map(([c, mi]) => ({ label: c.name, data: r.rows.map((row) => row[mi]) })),
      };
    } else {
      const [[, d1], [, d2]] = dims;
      const [[mc, mi]] = measures;
      const labels = [...new Set(r.rows.map((row) => label(row[d1])))];
      const series = [...new Set(r.rows.map((row) => label(row[d2])))];
      data = {
        labels,
        datasets: series.map((s) => ({
          label: `${mc.name} · ${s}`,
          data: labels.map((l) => {
            const row = r.rows.find((x) => label(x[d1]) === l && label(x[d2]) === s);
            return row ? row[mi] : null;
          }),
        })),
      };
    }
    chart = new Chart(canvas, { type: 'bar', data, options: { animation: false, maintainAspectRatio: false, responsive: true } });
  };
  const toggle = h('button', { type: 'button', class: 'secondary', id: 'toggle-view', onclick: () => {
    const showChart = chartBox.hidden;
    chartBox.hidden = !showChart;
    tableBox.hidden = showChart;
    toggle.textContent = showChart ? 'Show table' : 'Show chart';
    if (showChart) drawChart();
  } }, 'Show chart');
  const notes = Object.values(noise).map((n) => h('li', {}, `${n.column}: noisy (discrete Laplace, scale ${n.scale}); 95% of its noise within ±${(n.interval95 || []).join(' / ±')}`));
  into.replaceChildren(
    h('h2', {}, 'Result'),
    h('div', { class: 'row' },
      canChart ? toggle : h('span', { class: 'muted' }, 'No chart for this shape (one or two text columns and a number are charted).'),
      h('a', { href: `/v1/queries/${enc(q.id)}/result?format=csv`, download: `airlock-${q.id}.csv` }, 'Download CSV'),
      h('a', { href: `/v1/queries/${enc(q.id)}/result?format=parquet`, download: `airlock-${q.id}.parquet` }, 'Download Parquet')),
    tableBox, chartBox,
    notes.length ? [h('p', {}, 'Differential privacy: values are rounded to their noise scale.'), h('ul', {}, notes)] : null,
    r.cost ? h('p', {}, `This result cost epsilon ${r.cost.epsilon}, delta ${r.cost.delta}.`) : null,
  );
}

// ---- Audit ----------------------------------------------------------------------------------------

function outcome(e) {
  let p = {};
  try { p = JSON.parse(e.payload); } catch { /* shown raw */ }
  if (e.kind.endsWith('.refused') && p.refusal) return `refused: ${p.refusal.reason || ''}`;
  if (p.query) return `query ${p.query}`;
  return '';
}

async function auditPage(name) {
  const [text, verdict] = await Promise.all([
    api('GET', `/v1/collaborations/${enc(name)}/audit`),
    api('GET', `/v1/collaborations/${enc(name)}/audit/verify`),
  ]);
  const entries = String(text).split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
  let record = null;
  let recordError = null;
  try {
    record = await api('GET', `/v1/collaborations/${enc(name)}/records`);
  } catch (e) {
    recordError = e;
  }
  show(
    h('h1', {}, `Audit ${name}`),
    tabs(name, 'audit'),
    h('div', { id: 'verification', class: `status ${verdict.verified ? 'ok' : 'err'}`, role: 'status' },
      verdict.verified
        ? `audit chain verifies: ${verdict.entries} entries, head ${verdict.head}`
        : `audit chain broken: ${verdict.broken}`),
    h('p', { class: 'muted' }, 'Verified by the hub with the same check as airlock audit verify. To trust no hub, run airlock audit verify yourself and keep the head it prints.'),
    h('h2', {}, 'Timeline'),
    h('ol', { class: 'timeline', id: 'timeline' }, entries.slice().reverse().map((e) => h('li', {},
      h('div', { class: 'when' }, `#${e.seq} · ${iso(e.at_ms)}`),
      h('strong', {}, e.actor), ' ', h('code', {}, e.kind), ' ', outcome(e)))),
    h('h2', {}, 'Record of processing'),
    recordError ? errorBox(recordError) : [
      h('p', {}, h('a', { href: `/v1/collaborations/${enc(name)}/records?format=md`, download: `records-${name}.md` }, 'Download the record (Markdown)')),
      h('pre', { id: 'records' }, JSON.stringify(record, null, 2)),
    ],
  );
}

// ---- Start ----------------------------------------------------------------------------------------

(async () => {
  try {
    const s = await api('GET', '/v1/session');
    session.member = s.member;
    session.csrf = s.csrf;
  } catch {
    session.member = null;
  }
  renderHeader();
  route();
})();
