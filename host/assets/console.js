// The direct console: /direct/<device>/console#user=<user>&session_token=<OTK>.
// Reads the fragment (never sent to the server by the browser), removes it from the address
// bar, opens the WebSocket and sends the user and key as the first message. Binary frames are
// terminal bytes; text frames are JSON control messages (see host/src/web/console.rs).
'use strict';
(function () {
  const body = document.body;
  const status = document.getElementById('status');
  const device = decodeURIComponent(location.pathname.split('/')[2] || '');
  const params = new URLSearchParams(location.hash.slice(1));
  const user = params.get('user') || '';
  const token = params.get('session_token') || '';
  // The key is single use; keep it out of the address bar, history and bookmarks.
  history.replaceState(null, '', location.pathname + location.search);
  document.title = device + ' — sallyport console';
  document.getElementById('title').textContent = 'Console: ' + device + (user ? ' (' + user + ')' : '');

  const term = new Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 15 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(document.getElementById('terminal'));
  fit.fit();
  term.focus();

  function say(text, isError) {
    status.textContent = text;
    status.className = isError ? 'error' : '';
  }
  function banner(text, isError) {
    term.write('\r\n\x1b[1;' + (isError ? '31' : '33') + 'm' + text + '\x1b[0m\r\n');
  }
  let ended = false;
  function end(text, isError) {
    if (ended) return;
    ended = true;
    say(text, isError);
    banner(text, isError);
    term.options.disableStdin = true;
    body.dataset.state = isError ? 'error' : 'closed';
  }

  document.getElementById('screen-reader').addEventListener('change', function (e) {
    term.options.screenReaderMode = e.target.checked;
  });
  // Ctrl+Shift+C copies the selection; Ctrl+Shift+V is left to the browser, whose paste
  // event xterm.js turns into input. Plain Ctrl+C stays an interrupt for the device.
  term.attachCustomKeyEventHandler(function (e) {
    if (e.type !== 'keydown' || !e.ctrlKey || !e.shiftKey) return true;
    const k = e.key.toLowerCase();
    if (k === 'c') {
      const sel = term.getSelection();
      if (sel && navigator.clipboard) navigator.clipboard.writeText(sel).catch(function () {});
      return false;
    }
    return k !== 'v';
  });

  if (!user || !token) {
    end('sallyport: the address must end with #user=<user>&session_token=<one-time key>', true);
    return;
  }

  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const ws = new WebSocket(scheme + location.host + location.pathname + '/ws');
  ws.binaryType = 'arraybuffer';
  body.dataset.state = 'connecting';
  say('Connecting to the gateway…');
  ws.onopen = function () {
    ws.send(JSON.stringify({ type: 'auth', user: user, session_token: token, cols: term.cols, rows: term.rows }));
    say('Checking the session token…');
  };
  ws.onmessage = function (ev) {
    if (typeof ev.data !== 'string') {
      term.write(new Uint8Array(ev.data));
      return;
    }
    let m;
    try { m = JSON.parse(ev.data); } catch (_) { return; }
    if (m.type === 'status') say(m.message);
    else if (m.type === 'ready') {
      say('Connected to ' + device + ' as ' + user + '.');
      body.dataset.state = 'ready';
    } else if (m.type === 'error') end(m.message, true);
    else if (m.type === 'exit') end(m.message, false);
  };
  ws.onclose = function () {
    end('sallyport: the connection to the gateway was closed', true);
  };
  const encoder = new TextEncoder();
  function send(bytes) {
    if (!ended && ws.readyState === WebSocket.OPEN) ws.send(bytes);
  }
  term.onData(function (d) { send(encoder.encode(d)); });
  term.onBinary(function (d) {
    const b = new Uint8Array(d.length);
    for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 0xff;
    send(b);
  });
  term.onResize(function (size) {
    if (!ended && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: 'resize', cols: size.cols, rows: size.rows }));
    }
  });
  window.addEventListener('resize', function () { fit.fit(); });
})();
