// Browser RDP: noVNC (served from static/vendor/novnc) on the websocket of
// sessions/rdp_consumer.py. Loaded as a module file (the CSP forbids inline
// script); everything it needs comes from data- attributes.
const screen = document.getElementById("rdp-screen");

const CLOSE_TEXT = {
  4403: "Airlock refused this connection.",
  4400: "the browser sent a message Airlock does not accept",
  1006: "the connection to Airlock was lost",
};

function setState(text, kind) {
  const el = document.getElementById("rdp-state");
  if (el) {
    el.textContent = text;
    el.className = "pill pill-" + kind;
  }
}

let ended = false;
function showEnded(reason) {
  if (ended) { return; }
  ended = true;
  setState("Ended", "bad");
  const box = document.getElementById("rdp-ended");
  document.getElementById("rdp-ended-reason").textContent = reason;
  box.hidden = false;
  screen.classList.add("rdp-ended");
  for (const button of document.querySelectorAll("#rdp-tools button")) { button.disabled = true; }
}

async function start() {
  const { default: RFB } = await import(screen.dataset.novnc);
  const viewOnly = screen.dataset.viewOnly === "1";
  // The remote desktop gets the size of the space the page has for it.
  const top = screen.getBoundingClientRect().top + window.scrollY;
  const width = Math.max(640, Math.floor(screen.clientWidth));
  const height = Math.max(480, Math.floor(window.innerHeight - top - 48));
  screen.style.height = height + "px";
  const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
  let url = scheme + window.location.host + screen.dataset.wsPath;
  if (!viewOnly) { url += "?width=" + width + "&height=" + height; }
  const ws = new WebSocket(url, ["binary"]);
  ws.binaryType = "arraybuffer";
  ws.addEventListener("close", (event) => {
    showEnded(event.reason || CLOSE_TEXT[event.code] || "the session ended");
  });
  const rfb = new RFB(screen, ws, { shared: true });
  rfb.viewOnly = viewOnly;
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  rfb.focusOnClick = true;
  rfb.background = "#0f1c26";
  rfb.addEventListener("connect", () => {
    setState(viewOnly ? "Watching" : "Connected", "ok");
    screen.dataset.connected = "1";
    if (!viewOnly) { rfb.focus(); }
  });
  rfb.addEventListener("disconnect", () => { setState("Ended", "bad"); });
  window.airlockRfb = rfb;

  const keys = {
    "rdp-cad": () => rfb.sendCtrlAltDel(),
    "rdp-win": () => rfb.sendKey(0xffeb, "MetaLeft"),
    "rdp-esc": () => rfb.sendKey(0xff1b, "Escape"),
    "rdp-alttab": () => {
      rfb.sendKey(0xffe9, "AltLeft", true);
      rfb.sendKey(0xff09, "Tab");
      rfb.sendKey(0xffe9, "AltLeft", false);
    },
  };
  for (const [id, send] of Object.entries(keys)) {
    const button = document.getElementById(id);
    if (button) { button.addEventListener("click", () => { send(); rfb.focus(); }); }
  }
  document.getElementById("rdp-disconnect").addEventListener("click", () => {
    ws.close(1000);
  });
}

if (screen) {
  start().catch(() => showEnded("the remote desktop viewer could not start"));
}
