// The browser terminal (and the read-only live watch): xterm.js over the
// websocket of sessions/terminal.py or sessions/watch.py. Loaded as a file
// (the CSP forbids inline script); data comes from data- attributes.
(function () {
  "use strict";

  var screen = document.getElementById("terminal");
  if (!screen || !window.Terminal) { return; }

  var readOnly = screen.dataset.readOnly === "1";
  var maxFrame = parseInt(screen.dataset.maxFrame || "65536", 10);
  var stateEl = document.getElementById("terminal-state");
  var endedEl = document.getElementById("terminal-ended");
  var encoder = new TextEncoder();
  var ended = false;

  var term = new window.Terminal({
    cursorBlink: !readOnly,
    disableStdin: readOnly,
    convertEol: false,
    scrollback: 5000,
    fontFamily: '"DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace',
    fontSize: 14,
    theme: { background: "#0f1c26", foreground: "#dce6ee", cursor: "#9cc3de",
             selectionBackground: "#3d6a8a" }
  });
  var fit = window.FitAddon ? new window.FitAddon.FitAddon() : null;
  if (fit) { term.loadAddon(fit); }
  term.open(screen);
  if (fit) { try { fit.fit(); } catch (e) { /* not laid out yet */ } }

  function setState(text, kind) {
    if (!stateEl) { return; }
    stateEl.textContent = text;
    stateEl.className = "pill pill-" + kind;
  }

  function showEnded(text) {
    if (ended) { return; }
    ended = true;
    setState("Ended", "bad");
    term.options.cursorBlink = false;
    term.write("\r\n\x1b[1;33m[airlock] " + text + "\x1b[0m\r\n");
    if (endedEl) {
      endedEl.textContent = text;
      endedEl.hidden = false;
    }
    var disconnect = document.getElementById("terminal-disconnect");
    if (disconnect) { disconnect.disabled = true; }
  }

  var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
  var url = scheme + window.location.host + screen.dataset.wsPath;
  if (!readOnly) { url += "?cols=" + term.cols + "&rows=" + term.rows; }
  var ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";

  ws.onopen = function () { setState(readOnly ? "Watching" : "Connecting…", "wait"); };
  ws.onmessage = function (event) {
    if (typeof event.data !== "string") {
      term.write(new Uint8Array(event.data));
      return;
    }
    var msg;
    try { msg = JSON.parse(event.data); } catch (e) { return; }
    if (msg.type === "status") {
      if (msg.state === "connected") { setState("Connected · recorded", "ok"); term.focus(); }
      else if (msg.state === "watching") {
        setState("Watching live · read-only", "ok");
        if (msg.cols && msg.rows) { term.resize(msg.cols, msg.rows); }
      } else { setState("Connecting to " + (msg.device || "the device") + "…", "wait"); }
    } else if (msg.type === "notice") {
      term.write("\r\n\x1b[1;36m" + msg.text + "\x1b[0m\r\n");
    } else if (msg.type === "ended" || msg.type === "refused" || msg.type === "error") {
      showEnded("Session ended: " + msg.reason);
    }
  };
  ws.onclose = function (event) {
    if (event.code === 4403 && !ended) {
      showEnded("Session ended: Airlock refused the connection (sign in again, or reload the page).");
    } else if (!ended) {
      showEnded("Session ended: the connection to Airlock was lost.");
    }
  };

  function send(data) {
    if (ws.readyState !== WebSocket.OPEN || ended) { return; }
    var bytes = encoder.encode(data);
    // Large pastes go in frames under the server's limit.
    for (var i = 0; i < bytes.length; i += maxFrame) {
      ws.send(bytes.subarray(i, Math.min(bytes.length, i + maxFrame)));
    }
  }

  if (!readOnly) {
    term.onData(send);
    term.onBinary(function (data) {
      var bytes = new Uint8Array(data.length);
      for (var i = 0; i < data.length; i++) { bytes[i] = data.charCodeAt(i) & 255; }
      if (ws.readyState === WebSocket.OPEN && !ended) { ws.send(bytes); }
    });
    term.onResize(function (size) {
      if (ws.readyState === WebSocket.OPEN && !ended) {
        ws.send(JSON.stringify({ type: "resize", cols: size.cols, rows: size.rows }));
      }
    });
    // Ctrl+Shift+C copies the selection, Ctrl+Shift+V pastes (Ctrl+C stays
    // an interrupt for the device).
    term.attachCustomKeyEventHandler(function (e) {
      if (e.type === "keydown" && e.ctrlKey && e.shiftKey && (e.key === "C" || e.key === "c")) {
        copySelection();
        return false;
      }
      if (e.type === "keydown" && e.ctrlKey && e.shiftKey && (e.key === "V" || e.key === "v")) {
        return false;  // the browser's paste event reaches xterm, which sends it
      }
      return true;
    });
  }

  function copySelection() {
    var text = term.getSelection();
    if (text && navigator.clipboard) { navigator.clipboard.writeText(text); }
    term.focus();
  }

  var copyButton = document.getElementById("terminal-copy");
  if (copyButton) { copyButton.addEventListener("click", copySelection); }
  var pasteButton = document.getElementById("terminal-paste");
  if (pasteButton) {
    pasteButton.addEventListener("click", function () {
      if (!navigator.clipboard || !navigator.clipboard.readText) { term.focus(); return; }
      navigator.clipboard.readText().then(function (text) {
        if (text) { term.paste(text); }
        term.focus();
      }, function () { term.focus(); });
    });
  }
  var disconnectButton = document.getElementById("terminal-disconnect");
  if (disconnectButton) {
    disconnectButton.addEventListener("click", function () {
      ws.close(1000);
      showEnded("Session ended: you disconnected.");
    });
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    if (!fit || readOnly) { return; }
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { try { fit.fit(); } catch (e) { /* hidden */ } }, 100);
  });
  window.airlockTerminal = term;  // for tests and the benchmark
})();
