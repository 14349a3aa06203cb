// The tracking page: refreshes the table from /tracking/sessions every 2 s, without a reload.
// Builds rows with DOM methods (no innerHTML), the same markup the server renders, and keeps
// keyboard focus on the same button across refreshes.
'use strict';
(function () {
  const table = document.getElementById('tracking');
  if (!table) return;
  const tbody = table.tBodies[0];
  const csrf = table.dataset.csrf;
  const updated = document.getElementById('updated');

  function cell(tr, text) {
    const td = document.createElement('td');
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }
  function hidden(form, name, value) {
    const i = document.createElement('input');
    i.type = 'hidden';
    i.name = name;
    i.value = value;
    form.appendChild(i);
  }
  function row(r) {
    const tr = document.createElement('tr');
    tr.dataset.key = r.kind + ':' + r.id;
    cell(tr, r.user);
    cell(tr, r.device);
    cell(tr, r.type);
    const st = cell(tr, '');
    const span = document.createElement('span');
    span.className = 'state state-' + r.state;
    span.textContent = r.state;
    st.appendChild(span);
    cell(tr, r.source);
    cell(tr, r.started);
    cell(tr, r.expires);
    const action = cell(tr, '');
    if (r.live) {
      const form = document.createElement('form');
      form.method = 'post';
      form.action = '/tracking/terminate';
      hidden(form, 'csrf', csrf);
      hidden(form, 'kind', r.kind);
      hidden(form, 'id', r.id);
      if (r.site) hidden(form, 'site', r.site);
      const b = document.createElement('button');
      b.type = 'submit';
      b.textContent = 'Terminate';
      b.setAttribute('aria-label', 'Terminate the ' + r.type + ' of ' + r.user + ' on ' + r.device);
      form.appendChild(b);
      action.appendChild(form);
    }
    return tr;
  }
  function render(rows) {
    const active = document.activeElement;
    const focusKey = active && tbody.contains(active) ? active.closest('tr').dataset.key : null;
    const fresh = document.createElement('tbody');
    if (rows.length === 0) {
      const tr = document.createElement('tr');
      tr.className = 'empty';
      const td = cell(tr, 'No sessions or accesses.');
      td.colSpan = 8;
      fresh.appendChild(tr);
    }
    rows.forEach(function (r) { fresh.appendChild(row(r)); });
    tbody.replaceChildren.apply(tbody, Array.from(fresh.childNodes));
    if (focusKey) {
      const again = Array.from(tbody.rows).find(function (tr) { return tr.dataset.key === focusKey; });
      const button = again && again.querySelector('button');
      if (button) button.focus();
    }
  }
  async function refresh() {
    try {
      const r = await fetch('/tracking/sessions', { credentials: 'same-origin', cache: 'no-store' });
      if (r.status === 401) {
        location.reload();
        return;
      }
      if (!r.ok) throw new Error('HTTP ' + r.status);
      const data = await r.json();
      render(data.rows);
      updated.textContent = 'Updated ' + new Date().toLocaleTimeString() + '.';
      document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
    } catch (e) {
      updated.textContent = 'Cannot refresh (' + e.message + '); retrying.';
    }
  }
  setInterval(refresh, 2000);
})();
