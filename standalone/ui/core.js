// dister console, shared parts: the API client (token from sessionStorage),
// Server-Sent Events over fetch (EventSource cannot send a header), the
// router and the role. Values are only ever put into the page as text
// (textContent), never as HTML.
'use strict';
const D = {
  pages: {},          // name -> {enter(params), leave()}
  role: 'admin',      // what writes the token may do: admin | write | read
  current: null,
};

D.$ = (id) => document.getElementById(id);
D.token = () => sessionStorage.getItem('dister.token') || '';

// el builds an element: el('td', {className:'num'}, 'text', child...).
D.el = function (tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('aria-') || k === 'role' || k === 'scope') e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids) if (k != null) e.append(k instanceof Node ? k : String(k));
  return e;
};

D.say = function (text, bad) {
  const m = D.$('msg');
  m.textContent = text || '';
  m.classList.toggle('bad', !!bad);
};

class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message || code || ('HTTP ' + status));
    this.status = status; this.code = code || ''; this.body = body || {};
  }
}
D.ApiError = ApiError;

D.url = function (path, query) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null) q.set(k, v);
  const s = q.toString();
  return path + (s ? '?' + s : '');
};

D.headers = function (extra) {
  const h = Object.assign({}, extra);
  const t = D.token();
  if (t) h.Authorization = 'Bearer ' + t;
  return h;
};

// api calls the daemon; it resolves to the parsed JSON (or text) and
// throws an ApiError for any non-2xx answer. A 401 sends the user to the
// login page; a 403 on a write turns the console read-only.
D.api = async function (method, path, opts) {
  opts = opts || {};
  const init = { method, headers: D.headers(opts.headers), signal: opts.signal, cache: 'no-store' };
  if (opts.body !== undefined) {
    init.body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  }
  const res = await fetch('../' + D.url(path, opts.query), init);
  const text = await res.text();
  let data = text;
  if ((res.headers.get('Content-Type') || '').startsWith('application/json')) {
    try { data = JSON.parse(text); } catch (e) { /* keep the text */ }
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    const e = new ApiError(res.status, err.code, err.message, err);
    if (res.status === 401 && !opts.noLogin) D.logout('The token was refused: log in again.');
    if (res.status === 403 && method !== 'GET' && !opts.noLogin) D.forbidden(path);
    throw e;
  }
  return { data, headers: res.headers, status: res.status };
};

// stream reads a Server-Sent Events route with fetch and calls
// onEvent({event, id, data}) per message. It reconnects after a dropped
// connection with Last-Event-ID when resume is set. Returns {close()}.
D.stream = function (path, query, handlers) {
  let closed = false, ctl = null, lastId = handlers.lastId || '', delay = 500;
  const decoder = new TextDecoder();
  async function run() {
    while (!closed) {
      ctl = new AbortController();
      const h = D.headers({ Accept: 'text/event-stream' });
      if (lastId && handlers.resume) h['Last-Event-ID'] = lastId;
      try {
        const res = await fetch('../' + D.url(path, query), { headers: h, signal: ctl.signal, cache: 'no-store' });
        if (!res.ok) {
          let err = {};
          try { err = (await res.json()).error || {}; } catch (e) { /* not JSON */ }
          if (res.status === 401) D.logout('The token was refused: log in again.');
          handlers.onError && handlers.onError(new ApiError(res.status, err.code, err.message, err), true);
          return;
        }
        delay = 500;
        handlers.onOpen && handlers.onOpen(res.headers);
        const reader = res.body.getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let i;
          while ((i = buf.search(/\r?\n\r?\n/)) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(buf.slice(i).match(/^\r?\n\r?\n/)[0].length + i);
            const msg = parseSSE(block);
            if (!msg) continue;
            if (msg.id) lastId = msg.id;
            if (closed) return;
            handlers.onEvent(msg);
          }
        }
      } catch (e) {
        if (closed) return;
        handlers.onError && handlers.onError(e, false);
      }
      if (closed || !handlers.resume) { if (!closed) handlers.onEnd && handlers.onEnd(); return; }
      handlers.onRetry && handlers.onRetry(delay);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }
  function parseSSE(block) {
    const msg = { event: 'message', id: '', data: '' };
    let any = false;
    for (const line of block.split(/\r?\n/)) {
      if (!line || line[0] === ':') continue;
      const c = line.indexOf(':');
      const f = c < 0 ? line : line.slice(0, c);
      let v = c < 0 ? '' : line.slice(c + 1);
      if (v[0] === ' ') v = v.slice(1);
      if (f === 'event') msg.event = v;
      else if (f === 'id') msg.id = v;
      else if (f === 'data') msg.data += (msg.data ? '\n' : '') + v;
      else continue;
      any = true;
    }
    if (!any) return null;
    try { msg.json = JSON.parse(msg.data); } catch (e) { msg.json = null; }
    return msg;
  }
  run();
  return { close() { closed = true; if (ctl) ctl.abort(); } };
};

// ---- role: probes that change nothing. A write route with an unknown
// parameter answers 400 to a token allowed to write (the parameter is
// refused before anything is done) and 403 to one that is not.
D.probeRole = async function () {
  async function allowed(path) {
    try { await D.api('PUT', path, { query: { console_probe: '1' }, body: '', noLogin: true }); return true; } catch (e) {
      return e.status !== 403;
    }
  }
  // Probe failures other than 403 leave the role as it was guessed.
  const write = await allowed('v1/kv/console-probe');
  const admin = write && await allowed('v1/settings');
  D.setRole(admin ? 'admin' : write ? 'write' : 'read');
};

D.setRole = function (role) {
  D.role = role;
  sessionStorage.setItem('dister.role', role);
  D.applyRole(document);
  const b = D.$('banner');
  b.hidden = role === 'admin';
  b.textContent = role === 'read' ? 'Read-only: this token may read but not change anything.'
    : role === 'write' ? 'This token may change keys and services, not groups or settings.' : '';
};

// can: whether the role allows a control marked data-write="write|admin".
D.can = (need) => need === 'admin' ? D.role === 'admin' : D.role !== 'read';

D.applyRole = function (root) {
  for (const e of root.querySelectorAll('[data-write]')) {
    const ok = D.can(e.dataset.write);
    e.disabled = !ok;
    if (!ok) e.title = 'Not allowed with this token';
    else e.removeAttribute('title');
  }
};

// forbidden: a write to path was refused with 403, so the token lacks the
// role it needs: a refused admin call (groups, members, settings) leaves
// at most "write", any other refused write means read-only.
D.forbidden = function (path) {
  const admin = /^v1\/(groups|members|settings)(\/|$)/.test(path);
  D.setRole(admin && D.role === 'admin' ? 'write' : 'read');
  D.say('Refused: this token may not make that change.', true);
};

// ---- login
D.logout = function (why) {
  sessionStorage.removeItem('dister.token');
  sessionStorage.removeItem('dister.role');
  D.authed = false;
  D.$('nav').hidden = true;
  D.go('login');
  D.$('login-err').textContent = why || '';
};

D.login = async function (token) {
  if (token !== undefined) sessionStorage.setItem('dister.token', token);
  try {
    const r = await D.api('GET', 'v1/status', { noLogin: true });
    D.status = r.data;
  } catch (e) {
    sessionStorage.removeItem('dister.token');
    if (e.status === 401) return e.message || 'wrong token';
    return 'cannot reach the daemon: ' + e.message;
  }
  D.authed = true;
  D.$('who').textContent = 'server ' + D.status.node_id + ' · ' + (D.status.version || '');
  D.$('nav').hidden = false;
  const saved = sessionStorage.getItem('dister.role');
  if (saved) D.setRole(saved);
  await D.probeRole();
  D.metrics.start();
  return '';
};

document.addEventListener('DOMContentLoaded', async () => {
  D.$('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = await D.login(D.$('login-token').value);
    D.$('login-token').value = '';
    if (err) { D.$('login-err').textContent = err; return; }
    D.$('login-err').textContent = '';
    if (!location.hash || location.hash === '#/login') location.hash = '#/cluster'; else D.route();
  });
  window.addEventListener('hashchange', D.route);
  // Try without typing: a token already in this tab, or a daemon without one.
  const err = await D.login();
  if (err) { D.go('login'); return; }
  D.route();
});

// ---- router: #/page?k=v
D.parseHash = function () {
  const h = location.hash.replace(/^#\/?/, '');
  const [name, q] = h.split('?');
  return { name: name || 'cluster', params: Object.fromEntries(new URLSearchParams(q || '')) };
};

D.route = function () {
  if (!D.authed) { D.go('login'); return; }
  const { name, params } = D.parseHash();
  D.go(D.pages[name] ? name : 'cluster', params);
};

D.go = function (name, params) {
  if (D.current && D.pages[D.current] && D.pages[D.current].leave) D.pages[D.current].leave();
  const same = D.current === name, first = D.current === null;
  D.current = name;
  for (const s of document.querySelectorAll('.page')) s.hidden = s.id !== 'page-' + name;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.getAttribute('href') === '#/' + name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const page = D.$('page-' + name);
  document.title = page.querySelector('h1').textContent + ' · dister';
  // A page opened from another one gets the focus on its heading; the
  // first one leaves it at the top, where Tab reaches the skip link.
  if (!same) D.say('');
  if (!same && !first) page.querySelector('h1').focus();
  D.applyRole(page);
  if (D.pages[name] && D.pages[name].enter) D.pages[name].enter(params || {});
};

// setHash changes the parameters of the current page without a reload of
// its state (the hashchange handler calls enter again).
D.setHash = function (name, params) {
  const q = new URLSearchParams(params).toString();
  location.hash = '#/' + name + (q ? '?' + q : '');
};

// every runs fn now and then every ms while the page stays; returns a stop.
D.every = function (ms, fn) {
  let t = null, stopped = false;
  const tick = async () => { try { await fn(); } catch (e) { /* shown by fn */ } if (!stopped) t = setTimeout(tick, ms); };
  tick();
  return () => { stopped = true; clearTimeout(t); };
};

// fillGroups puts the group names into a select, keeping the choice.
D.fillGroups = async function (sel, chosen) {
  const r = await D.api('GET', 'v1/groups');
  const keep = chosen || sel.value || 'default';
  sel.replaceChildren(...r.data.groups.map((g) => D.el('option', { value: g, selected: g === keep }, g)));
  if (!r.data.groups.includes(keep) && r.data.groups.length) sel.value = r.data.groups[0];
  return r.data.groups;
};

D.fmtTime = (s) => {
  if (!s) return '';
  const d = new Date(s);
  return isNaN(d) ? s : d.toLocaleString();
};

D.errText = (e) => (e.code ? e.code + ': ' : '') + e.message;
