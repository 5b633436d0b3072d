// Pages: cluster, groups, settings; and the metrics sampler behind the
// sparklines.
'use strict';

// ---- metrics: /metrics every few seconds, per group the applied revision
// (every write is one revision, so its slope is writes/s) and the leader
// changes counter. Samples live in sessionStorage, so a reload keeps the
// last minutes.
D.metrics = (function () {
  const every = 3000, keep = 100; // 5 minutes
  let samples = [], timer = null;
  try { samples = JSON.parse(sessionStorage.getItem('dister.samples') || '[]'); } catch (e) { samples = []; }
  const re = /^(dister_group_revision|dister_leader_changes_total)\{group="((?:[^"\\]|\\.)*)"\} (\S+)/;
  async function sample() {
    if (!D.authed) return;
    let text;
    try { text = (await D.api('GET', 'metrics', { noLogin: true })).data; } catch (e) { return; }
    const s = { t: Date.now(), rev: {}, lc: {} };
    for (const line of String(text).split('\n')) {
      const m = re.exec(line);
      if (!m) continue;
      const g = m[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      (m[1] === 'dister_group_revision' ? s.rev : s.lc)[g] = Number(m[3]);
    }
    samples.push(s);
    if (samples.length > keep) samples = samples.slice(-keep);
    sessionStorage.setItem('dister.samples', JSON.stringify(samples));
    for (const f of listeners) f();
  }
  const listeners = new Set();
  return {
    start() { if (!timer) { sample(); timer = setInterval(sample, every); } },
    on(f) { listeners.add(f); return () => listeners.delete(f); },
    // series gives per interval: writes/s and leader changes of a group.
    series(group) {
      const w = [], l = [];
      for (let i = 1; i < samples.length; i++) {
        const a = samples[i - 1], b = samples[i], dt = (b.t - a.t) / 1000;
        if (!(group in b.rev) || !(group in a.rev) || dt <= 0 || dt > 60) continue;
        w.push(Math.max(0, (b.rev[group] - a.rev[group]) / dt));
        l.push(Math.max(0, (b.lc[group] || 0) - (a.lc[group] || 0)));
      }
      return { writes: w, leaders: l };
    },
  };
})();

// spark draws values as an inline SVG: a line, or bars when bars is set.
D.spark = function (values, label, bars) {
  const W = 120, H = 24, ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', W); svg.setAttribute('height', H);
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  const t = document.createElementNS(ns, 'title');
  t.textContent = label;
  svg.append(t);
  const max = Math.max(1e-9, ...values);
  const n = Math.max(values.length, 2), step = W / (n - 1);
  const base = document.createElementNS(ns, 'line');
  base.setAttribute('x1', 0); base.setAttribute('x2', W);
  base.setAttribute('y1', H - 0.5); base.setAttribute('y2', H - 0.5);
  svg.append(base);
  if (bars) {
    values.forEach((v, i) => {
      if (!v) return;
      const r = document.createElementNS(ns, 'rect');
      const h = Math.max(2, (v / max) * (H - 2));
      r.setAttribute('x', Math.min(W - 2, i * step)); r.setAttribute('y', H - h);
      r.setAttribute('width', 2); r.setAttribute('height', h);
      svg.append(r);
    });
  } else if (values.length) {
    // One sample is drawn as a level line until the next one comes.
    const pts = values.length === 1 ? [values[0], values[0]] : values;
    const p = document.createElementNS(ns, 'polyline');
    p.setAttribute('points', pts.map((v, i) => `${(i * (W / (Math.max(pts.length, 2) - 1))).toFixed(1)},${(H - 1 - (v / max) * (H - 2)).toFixed(1)}`).join(' '));
    svg.append(p);
  }
  return svg;
};

const statusBadge = (cls, text) => D.el('span', { className: 'badge s-' + cls }, text);

// ---- cluster: servers and this server's groups, refreshed every 2 s.
D.pages.cluster = (function () {
  let stop = null, off = null;
  async function refresh() {
    let st, mem;
    try {
      [st, mem] = await Promise.all([D.api('GET', 'v1/status'), D.api('GET', 'v1/members')]);
    } catch (e) { D.say('Cluster: ' + D.errText(e), true); return; }
    st = st.data; mem = mem.data;
    D.$('cl-self').textContent = `This console talks to server ${st.node_id} (${st.role}, ${st.version}).`;
    D.$('cl-servers').tBodies[0].replaceChildren(...mem.members.map((m) => D.el('tr', {},
      D.el('td', { className: 'num' }, m.id, m.id === st.node_id ? ' (this)' : ''),
      D.el('td', {}, m.alive ? statusBadge('alive', 'alive') : statusBadge('dead', 'down')),
      D.el('td', {}, (m.voter ? 'voter' : 'non-voter') + (m.leader ? ', leader of default' : '')),
      D.el('td', { className: 'mono' }, m.raft_addr),
      D.el('td', { className: 'mono' }, m.peer_addr))));
    drawGroups(st.groups);
    D.$('cl-updated').textContent = 'Updated ' + new Date().toLocaleTimeString() + '; refreshes every 2 s.';
  }
  let lastGroups = [];
  function drawGroups(groups) {
    if (groups) lastGroups = groups;
    D.$('cl-groups').tBodies[0].replaceChildren(...lastGroups.map((g) => {
      const s = D.metrics.series(g.name);
      const w = s.writes.length ? s.writes[s.writes.length - 1] : 0;
      const lc = s.leaders.reduce((a, b) => a + b, 0);
      return D.el('tr', { dataset: { group: g.name } },
        D.el('th', { scope: 'row' }, g.name),
        D.el('td', { className: 'num' }, g.leader ? g.leader : statusBadge('critical', 'none')),
        D.el('td', { className: 'num' }, g.revision),
        D.el('td', { className: 'num' }, D.spark(s.writes, `writes per second of ${g.name}, last minutes; now ${w.toFixed(1)}`), ' ', w.toFixed(1)),
        D.el('td', { className: 'num' }, D.spark(s.leaders, `leader changes of ${g.name}, last minutes: ${lc}`, true), ' ', lc));
    }));
  }
  return {
    enter() { if (!stop) { stop = D.every(2000, refresh); off = D.metrics.on(() => drawGroups()); } },
    leave() { if (stop) { stop(); off(); stop = null; } },
  };
})();

// ---- groups: list, create, delete with an inline confirmation.
D.pages.groups = (function () {
  async function refresh() {
    let names, st;
    try {
      [names, st] = await Promise.all([D.api('GET', 'v1/groups'), D.api('GET', 'v1/status')]);
    } catch (e) { D.say('Groups: ' + D.errText(e), true); return; }
    const info = Object.fromEntries(st.data.groups.map((g) => [g.name, g]));
    D.$('gr-list').tBodies[0].replaceChildren(...names.data.groups.map((name) => {
      const g = info[name] || {};
      const del = D.el('button', { type: 'button', className: 'danger', dataset: { write: 'admin' } }, 'Delete');
      del.setAttribute('aria-label', 'Delete group ' + name);
      const cell = D.el('td', {}, name === 'default' ? '' : del);
      del.addEventListener('click', () => confirmDelete(cell, del, name));
      const kv = D.el('a', { href: '#/kv?' + new URLSearchParams({ group: name }) }, name);
      return D.el('tr', { dataset: { group: name } }, D.el('th', { scope: 'row' }, kv),
        D.el('td', { className: 'num' }, g.leader || '–'), D.el('td', { className: 'num' }, g.revision ?? '–'), cell);
    }));
    D.applyRole(D.$('gr-list'));
  }
  function confirmDelete(cell, del, name) {
    const yes = D.el('button', { type: 'button', className: 'danger' }, 'Delete ' + name);
    const no = D.el('button', { type: 'button' }, 'Cancel');
    const box = D.el('span', { className: 'confirm', role: 'group', 'aria-label': 'Confirm deletion' },
      `Delete group ${name} and every key in it?`, yes, no);
    cell.replaceChildren(box);
    no.focus();
    no.addEventListener('click', () => { cell.replaceChildren(del); del.focus(); });
    yes.addEventListener('click', async () => {
      try {
        await D.api('DELETE', 'v1/groups/' + encodeURIComponent(name));
        D.say(`Group ${name} deleted.`);
      } catch (e) { D.say('Delete: ' + D.errText(e), true); }
      refresh();
    });
  }
  document.addEventListener('DOMContentLoaded', () => {
    D.$('gr-create').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const name = D.$('gr-name').value.trim();
      try {
        await D.api('PUT', 'v1/groups/' + encodeURIComponent(name));
        D.say(`Group ${name} created.`);
        D.$('gr-name').value = '';
      } catch (e) { D.say('Create: ' + D.errText(e), true); }
      refresh();
    });
  });
  return { enter: refresh };
})();

// ---- settings
D.pages.settings = (function () {
  async function enter() {
    D.$('st-role').textContent = 'Token role: ' + ({ admin: 'admin (may change everything)',
      write: 'write (keys and services)', read: 'read-only' })[D.role] + (D.token() ? '.' : ' (this daemon needs no token).');
    D.$('st-server').textContent = D.status ? `Server ${D.status.node_id}, version ${D.status.version}.` : '';
    try {
      const r = await D.api('GET', 'v1/settings');
      D.$('st-script').checked = !!r.data.script_checks;
    } catch (e) { D.say('Settings: ' + D.errText(e), true); }
  }
  document.addEventListener('DOMContentLoaded', () => {
    D.$('st-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        await D.api('PUT', 'v1/settings', { body: { script_checks: D.$('st-script').checked } });
        D.say('Settings saved.');
      } catch (e) { D.say('Settings: ' + D.errText(e), true); enter(); }
    });
    D.$('st-logout').addEventListener('click', () => D.logout('Logged out.'));
  });
  return { enter };
})();
