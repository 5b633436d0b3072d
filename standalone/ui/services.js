// Pages: services (the list, one service's instances live, register and
// deregister) and watch (a live view of a prefix's changes).
'use strict';
D.pages.services = (function () {
  let group = 'default', name = null, live = null, stopList = null;
  const statusClass = (s) => ({ passing: 'passing', warning: 'warning', critical: 'critical' })[s] || 'unknown';

  async function enter(p) {
    group = p.group || 'default';
    try { await D.fillGroups(D.$('sv-group'), group); } catch (e) { D.say('Groups: ' + D.errText(e), true); }
    stopList = D.every(3000, refreshList);
    show(p.service || null);
  }

  function leave() {
    if (stopList) { stopList(); stopList = null; }
    if (live) { live.close(); live = null; }
    name = null;
  }

  async function refreshList() {
    let r;
    try { r = await D.api('GET', 'v1/services', { query: { group } }); } catch (e) { D.say('Services: ' + D.errText(e), true); return; }
    const rows = r.data.services.map((s) => D.el('tr', { dataset: { service: s.name } },
      D.el('th', { scope: 'row' }, D.el('a', { href: '#/services?' + new URLSearchParams({ group, service: s.name }) }, s.name)),
      D.el('td', { className: 'num' }, s.instances),
      D.el('td', { className: 'num' }, s.passing)));
    D.$('sv-list').tBodies[0].replaceChildren(...(rows.length ? rows : [D.el('tr', {}, D.el('td', { colSpan: 3 }, 'No services registered in this group.'))]));
  }

  // show follows one service: its whole instance set arrives first and
  // again after every change, so the table is simply redrawn.
  function show(svc) {
    if (live) { live.close(); live = null; }
    name = svc;
    D.$('sv-detail').hidden = !svc;
    if (!svc) return;
    D.$('sv-name').textContent = svc;
    D.$('sv-r-service').value = svc;
    D.$('sv-live').textContent = 'Connecting…';
    live = D.stream('v1/watch/services/' + encodeURIComponent(svc), { group }, {
      resume: true,
      onOpen() { D.$('sv-live').textContent = 'Live: updates as instances change.'; },
      onRetry() { D.$('sv-live').textContent = 'Connection lost; reconnecting…'; },
      onError(e, final) { if (final) D.$('sv-live').textContent = 'Not live: ' + D.errText(e); },
      onEvent(m) {
        if (m.event === 'error') { D.$('sv-live').textContent = 'Stream ended: ' + (m.json ? m.json.message : m.data); return; }
        if (m.event !== 'instances' || !m.json) return;
        draw(m.json.instances || [], m.json.revision);
      },
    });
  }

  function draw(insts, rev) {
    D.$('sv-live').textContent = `Live at revision ${rev}: updates as instances change.`;
    const body = D.$('sv-inst').tBodies[0];
    if (!insts.length) { body.replaceChildren(D.el('tr', {}, D.el('td', { colSpan: 8 }, 'No instances.'))); return; }
    body.replaceChildren(...insts.map((i) => {
      const st = i.status || (i.check && i.check.type === 'never' ? 'never' : 'unknown');
      const dereg = D.el('button', { type: 'button', className: 'danger', dataset: { write: 'write' }, 'aria-label': 'Deregister ' + i.id }, 'Deregister');
      const cell = D.el('td', {}, dereg);
      dereg.addEventListener('click', () => confirmDeregister(cell, dereg, i));
      const chk = i.check ? [i.check.type, i.check.target, i.check.interval || i.check.ttl].filter(Boolean).join(' ') : 'none';
      return D.el('tr', { dataset: { id: i.id, status: st } },
        D.el('th', { scope: 'row', className: 'mono' }, i.id),
        D.el('td', {}, D.el('span', { className: 'badge s-' + statusClass(st) }, st)),
        D.el('td', { className: 'mono' }, i.address),
        D.el('td', { className: 'num' }, i.priority),
        D.el('td', { className: 'mono' }, chk),
        D.el('td', {}, i.output || ''),
        D.el('td', {}, `revision ${i.mod_revision}`, i.last_checked ? D.el('br') : null, D.fmtTime(i.last_checked)),
        cell);
    }));
    D.applyRole(body);
  }

  function confirmDeregister(cell, btn, inst) {
    const yes = D.el('button', { type: 'button', className: 'danger' }, 'Deregister ' + inst.id);
    const no = D.el('button', { type: 'button' }, 'Cancel');
    cell.replaceChildren(D.el('span', { className: 'confirm', role: 'group', 'aria-label': 'Confirm' }, yes, no));
    no.focus();
    no.addEventListener('click', () => { cell.replaceChildren(btn); btn.focus(); });
    yes.addEventListener('click', async () => {
      try {
        await D.api('DELETE', `v1/services/${encodeURIComponent(inst.service)}/instances/${encodeURIComponent(inst.id)}`, { query: { group } });
        D.say(`Deregistered ${inst.service}/${inst.id}.`);
      } catch (e) { D.say('Deregister: ' + D.errText(e), true); cell.replaceChildren(btn); }
      refreshList();
    });
  }

  async function register(ev) {
    ev.preventDefault();
    const v = (id) => D.$(id).value.trim();
    const svc = v('sv-r-service'), id = v('sv-r-id');
    const body = { address: v('sv-r-addr'), priority: Number(v('sv-r-prio') || 0) };
    if (v('sv-r-type')) {
      body.check = { type: v('sv-r-type') };
      for (const [f, k] of [['sv-r-target', 'target'], ['sv-r-int', 'interval'], ['sv-r-ttl', 'ttl'], ['sv-r-dca', 'deregister_critical_after']]) {
        if (v(f)) body.check[k] = v(f);
      }
    }
    try {
      await D.api('PUT', `v1/services/${encodeURIComponent(svc)}/instances/${encodeURIComponent(id)}`, { query: { group }, body });
      D.say(`Registered ${svc}/${id}.`);
      D.$('sv-r-id').value = '';
      refreshList();
      if (name !== svc) D.setHash('services', { group, service: svc });
    } catch (e) { D.say('Register: ' + D.errText(e), true); }
  }

  document.addEventListener('DOMContentLoaded', () => {
    D.$('sv-group').addEventListener('change', (e) => D.setHash('services', { group: e.target.value }));
    D.$('sv-reg').addEventListener('submit', register);
  });
  return { enter, leave };
})();

D.pages.watch = (function () {
  let s = null, n = 0;
  const max = 500;

  async function enter(p) {
    try { await D.fillGroups(D.$('wa-group'), p.group); } catch (e) { D.say('Groups: ' + D.errText(e), true); }
    if (p.prefix !== undefined) D.$('wa-prefix').value = p.prefix;
  }

  function stop(why) {
    if (s) { s.close(); s = null; }
    D.$('wa-start').disabled = false;
    D.$('wa-stop').disabled = true;
    if (why) D.$('wa-state').textContent = why;
  }

  function start(ev) {
    ev.preventDefault();
    stop();
    const group = D.$('wa-group').value, prefix = D.$('wa-prefix').value;
    const list = D.$('wa-events');
    list.replaceChildren();
    n = 0;
    D.$('wa-start').disabled = true;
    D.$('wa-stop').disabled = false;
    D.$('wa-state').textContent = 'Connecting…';
    const q = { group, prefix: prefix || undefined, prev: D.$('wa-prev').checked ? 'true' : undefined };
    s = D.stream('v1/watch', q, {
      resume: true,
      onOpen(h) { D.$('wa-state').textContent = `Watching ${prefix ? '"' + prefix + '"' : 'every key'} in ${group} from revision ${(Number(h.get('X-Dister-Revision')) || 0) + 1}; ${n} events.`; },
      onRetry() { D.$('wa-state').textContent = 'Connection lost; resuming after the last complete revision…'; },
      onError(e, final) { if (final) stop('Stopped: ' + D.errText(e)); },
      onEvent(m) {
        const e = m.json;
        if (m.event === 'error') { stop('Stopped: ' + (e ? e.code + ': ' + e.message : m.data)); return; }
        if (!e || m.event === 'progress') return;
        n++;
        const li = D.el('li', { dataset: { key: e.key, rev: e.revision } },
          D.el('span', { className: 't-' + e.type }, e.type), ' ', D.el('span', { className: 'mono' }, e.key),
          ` @${e.revision}`,
          e.type === 'put' ? D.el('pre', {}, trim(e.value ?? e.value_base64 ?? '')) : null,
          e.prev ? D.el('pre', { className: 'sub' }, 'was: ' + trim(e.prev.value ?? e.prev.value_base64 ?? '')) : null);
        list.prepend(li);
        while (list.children.length > max) list.lastChild.remove();
        D.$('wa-state').textContent = `Watching ${prefix ? '"' + prefix + '"' : 'every key'} in ${group}; ${n} events (newest first, last ${max} kept).`;
      },
    });
  }
  const trim = (v) => (v.length > 2000 ? v.slice(0, 2000) + '…' : v);

  document.addEventListener('DOMContentLoaded', () => {
    D.$('wa-form').addEventListener('submit', start);
    D.$('wa-stop').addEventListener('click', () => stop('Stopped.'));
  });
  return { enter, leave() { stop(s ? 'Stopped when you left the page.' : ''); } };
})();
