// Page: the KV browser of a group. A prefix tree (keys split at "/"), a
// value editor that saves with compare-and-swap on the revision it loaded
// (so two editors never overwrite each other silently), delete, and the
// key's history from the retained watch history, kept live.
'use strict';
D.pages.kv = (function () {
  const pageSize = 500;
  let group = 'default', prefix = '', key = null, casRev = 0, after = '', hist = null, seen = null;

  const keyPath = (k) => 'v1/kv/' + encodeURIComponent(k);
  const link = (params) => '#/kv?' + new URLSearchParams(params);

  async function enter(p) {
    // The state first, before anything is awaited: a form used while
    // the page loads must act on the group the page shows.
    const g = p.group || 'default', pf = p.prefix || '';
    const changed = g !== group || pf !== prefix || !seen;
    group = g; prefix = pf;
    D.$('kv-prefix').value = prefix;
    crumbs();
    const groups = D.fillGroups(D.$('kv-group'), g).catch((e) => D.say('Groups: ' + D.errText(e), true));
    if (changed) { seen = new Map(); after = ''; D.$('kv-tree').replaceChildren(); await list(); }
    if ((p.key ?? null) !== key) open(p.key ?? null);
    mark();
    await groups;
  }

  function crumbs() {
    const c = D.$('kv-crumbs');
    const parts = [D.el('a', { href: link({ group, prefix: '' }) }, group + ':')];
    let acc = '';
    for (const seg of prefix.split('/').slice(0, -1)) {
      acc += seg + '/';
      parts.push(D.el('a', { href: link({ group, prefix: acc }) }, seg + '/'));
    }
    if (!prefix.endsWith('/') && prefix) parts.push(D.el('span', {}, prefix.slice(acc.length) + '…'));
    c.replaceChildren(...parts);
  }

  // list reads the next page of keys under the prefix and folds them
  // into the tree: a key one "/" deeper or more shows as its folder.
  let listGen = 0;
  async function list() {
    const gen = ++listGen, s = seen;
    let r;
    try {
      r = await D.api('GET', 'v1/kv', { query: { group, prefix, limit: pageSize, after: after || undefined } });
    } catch (e) { D.say('List: ' + D.errText(e), true); return; }
    if (gen !== listGen || s !== seen) return; // another listing started meanwhile
    for (const en of r.data.entries) {
      const rest = en.key.slice(prefix.length);
      const i = rest.indexOf('/');
      const name = i >= 0 ? prefix + rest.slice(0, i + 1) : en.key;
      const dir = i >= 0;
      const prev = seen.get(name);
      if (prev) { prev.n++; continue; }
      seen.set(name, { n: 1, dir });
    }
    if (r.data.entries.length) after = r.data.entries[r.data.entries.length - 1].key;
    D.$('kv-more').hidden = !r.data.more;
    draw();
  }

  function draw() {
    const items = [...seen.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    if (!items.length) { D.$('kv-tree').replaceChildren(D.el('li', {}, 'No keys under this prefix.')); return; }
    D.$('kv-tree').replaceChildren(...items.map(([name, v]) => {
      const label = name.slice(prefix.length) || name;
      const a = v.dir
        ? D.el('a', { href: link({ group, prefix: name }), className: 'dir' }, label, ` (${v.n})`)
        : D.el('a', { href: link({ group, prefix, key: name }), dataset: { key: name } }, label);
      return D.el('li', {}, a);
    }));
  }

  function mark() {
    for (const a of D.$('kv-tree').querySelectorAll('a[data-key]')) {
      if (a.dataset.key === key) a.setAttribute('aria-current', 'true'); else a.removeAttribute('aria-current');
    }
  }

  // open loads a key into the editor and starts its history.
  async function open(k) {
    if (hist) { hist.close(); hist = null; }
    key = k;
    D.$('kv-conflict').hidden = true;
    D.$('kv-edit').hidden = k === null;
    if (k === null) return;
    D.$('kv-key').textContent = k;
    await load();
    history(k);
  }

  async function load() {
    const v = D.$('kv-value');
    let e;
    try { e = (await D.api('GET', keyPath(key), { query: { group } })).data; } catch (err) {
      if (err.status === 404) {
        D.$('kv-meta').textContent = 'This key does not exist (now).';
        v.value = ''; casRev = 0; return;
      }
      D.say('Get: ' + D.errText(err), true); return;
    }
    casRev = e.mod_revision;
    const bin = e.value === undefined && e.value_base64 !== undefined;
    v.value = bin ? e.value_base64 : (e.value ?? '');
    v.readOnly = bin;
    D.$('kv-meta').textContent = `revision ${e.mod_revision} · created at ${e.create_revision} · version ${e.version}` +
      (e.lease ? ` · lease ${e.lease}` : '') + (bin ? ' · binary value, shown as base64, not editable here' : '');
  }

  async function save() {
    D.$('kv-conflict').hidden = true;
    const body = D.$('kv-value').value;
    try {
      const r = await D.api('PUT', keyPath(key), { query: { group, cas: casRev }, body });
      // The editor now holds what was written at that revision. It is not
      // read again: a read could return a later write of someone else
      // while the text shows ours, and the next save would overwrite it.
      casRev = r.data.revision;
      D.$('kv-meta').textContent = `revision ${casRev} (saved from here)`;
      D.say(`Saved ${key} at revision ${r.data.revision}.`);
      if (!seen.has(key) && key.startsWith(prefix)) { seen = null; enter({ group, prefix, key }); }
    } catch (e) { writeFailed('Save', e); }
  }

  async function writeFailed(what, e) {
    if (e.status === 409) {
      let now = 'it was deleted';
      try {
        const cur = (await D.api('GET', keyPath(key), { query: { group } })).data;
        now = `it is now at revision ${cur.mod_revision}: ${cur.value ?? cur.value_base64}`;
      } catch (x) { /* deleted */ }
      const c = D.$('kv-conflict');
      c.textContent = `${what} refused: the key changed since you loaded it at revision ${casRev} (${now}). ` +
        'Your text is kept; press Reload to load the current value, then save again.';
      c.hidden = false;
      c.focus();
      return;
    }
    D.say(what + ': ' + D.errText(e), true);
  }

  function confirmDelete() {
    const del = D.$('kv-del');
    const yes = D.el('button', { type: 'button', className: 'danger' }, 'Delete ' + key);
    const no = D.el('button', { type: 'button' }, 'Cancel');
    const box = D.el('span', { className: 'confirm', role: 'group', 'aria-label': 'Confirm deletion' }, 'Delete this key?', yes, no);
    del.hidden = true;
    del.after(box);
    no.focus();
    const done = () => { box.remove(); del.hidden = false; del.focus(); };
    no.addEventListener('click', done);
    yes.addEventListener('click', async () => {
      done();
      try {
        await D.api('DELETE', keyPath(key), { query: { group, cas: casRev } });
        D.say(`Deleted ${key}.`);
        const k = key;
        seen = null;
        D.setHash('kv', { group, prefix });
        if (k === key) await load();
      } catch (e) { writeFailed('Delete', e); }
    });
  }

  // history streams the key's events from the oldest retained revision:
  // a start below the history is 410 with compact_revision, from which it
  // starts again. The stream stays open, so new changes appear live.
  function history(k, from) {
    const ol = D.$('kv-hist'), note = D.$('kv-hist-note');
    if (!from) ol.replaceChildren();
    note.textContent = 'Loading history…';
    let count = 0;
    hist = D.stream('v1/watch', { group, prefix: k, from: from || 1 }, {
      resume: true,
      onOpen() { note.textContent = 'Changes of this key kept in the history, newest first; new ones appear live.'; },
      onEvent(m) {
        const ev = m.json;
        if (m.event === 'error') { note.textContent = 'History ended: ' + (ev ? ev.message : m.data); return; }
        if (!ev || ev.key !== k || (m.event !== 'put' && m.event !== 'delete')) return;
        count++;
        const li = D.el('li', { dataset: { rev: ev.mod_revision } },
          D.el('span', { className: 't-' + ev.type }, ev.type), ` at revision ${ev.revision}`,
          ev.type === 'put' ? D.el('pre', {}, ev.value ?? ev.value_base64 ?? '') : null);
        ol.prepend(li);
        while (ol.children.length > 200) ol.lastChild.remove();
      },
      onError(e, final) {
        if (final && e.status === 410 && e.body.compact_revision && k === key) {
          hist = null; history(k, e.body.compact_revision); return;
        }
        if (final) note.textContent = 'History unavailable: ' + D.errText(e);
      },
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    D.$('kv-group').addEventListener('change', (e) => D.setHash('kv', { group: e.target.value }));
    const go = () => D.setHash('kv', { group, prefix: D.$('kv-prefix').value });
    D.$('kv-go').addEventListener('click', go);
    D.$('kv-prefix').addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); go(); } });
    D.$('kv-more').addEventListener('click', list);
    D.$('kv-save').addEventListener('click', save);
    D.$('kv-reload').addEventListener('click', async () => { D.$('kv-conflict').hidden = true; await load(); });
    D.$('kv-del').addEventListener('click', confirmDelete);
    D.$('kv-new').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const k = D.$('kv-new-key').value;
      try {
        const r = await D.api('PUT', keyPath(k), { query: { group, cas: 0 }, body: D.$('kv-new-value').value });
        D.say(`Created ${k} at revision ${r.data.revision}.`);
        D.$('kv-new-key').value = ''; D.$('kv-new-value').value = '';
        seen = null;
        D.setHash('kv', { group, prefix, key: k });
      } catch (e) {
        D.say(e.status === 409 ? `Not created: ${k} already exists.` : 'Create: ' + D.errText(e), true);
      }
    });
  });

  return {
    enter,
    leave() { if (hist) { hist.close(); hist = null; } key = null; },
  };
})();
