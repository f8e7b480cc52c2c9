// Recording playback: asciinema-player (served locally) with a speed choice
// and a timeline of commands, file transfers and signals that seek the
// player. Loaded as a file (the CSP forbids inline script).
(function () {
  "use strict";

  var host = document.getElementById("player");
  if (!host) { return; }
  var timeline = document.getElementById("timeline");
  var speedSelect = document.getElementById("speed");

  function markCurrent(button) {
    var current = timeline.querySelector(".current");
    if (current) { current.classList.remove("current"); }
    button.parentElement.classList.add("current");
    host.scrollIntoView({ block: "nearest" });
  }

  // Browser RDP sessions are recorded as video: the same timeline seeks it.
  if (host.dataset.kind === "video") {
    if (speedSelect) {
      speedSelect.addEventListener("change", function () {
        host.playbackRate = parseFloat(speedSelect.value) || 1;
      });
    }
    if (timeline) {
      timeline.addEventListener("click", function (event) {
        var button = event.target.closest("button.jump");
        if (!button || button.disabled) { return; }
        host.currentTime = parseFloat(button.dataset.t) || 0;
        host.play();
        markCurrent(button);
      });
    }
    return;
  }
  if (!window.AsciinemaPlayer) { return; }
  var src = host.dataset.src;
  var player = null;

  function create(speed, startAt) {
    host.textContent = "";
    // No idle-time limit: the timeline holds real seconds, and evidence plays in real time.
    var options = { speed: speed, fit: "width", terminalFontSize: "small",
                    preload: true, controls: true };
    if (startAt) { options.startAt = startAt; }
    player = window.AsciinemaPlayer.create(src, host, options);
    window.airlockPlayer = player;  // for tests
  }

  function startFromHash() {
    var match = /(?:^|#)t=([0-9.]+)/.exec(window.location.hash);
    return match ? parseFloat(match[1]) : 0;
  }

  create(1, startFromHash());

  if (speedSelect) {
    speedSelect.addEventListener("change", function () {
      var at = 0;
      try { at = player.getCurrentTime() || 0; } catch (e) { at = 0; }
      var speed = parseFloat(speedSelect.value) || 1;
      if (player && player.dispose) { player.dispose(); }
      create(speed, at);
    });
  }

  if (timeline) {
    timeline.addEventListener("click", function (event) {
      var button = event.target.closest("button.jump");
      if (!button || button.disabled) { return; }
      var t = parseFloat(button.dataset.t) || 0;
      // Land a moment before the entry so its line is drawn when playing.
      Promise.resolve(player.seek(Math.max(0, t - 0.05))).then(function () {
        return player.play();
      });
      markCurrent(button);
    });
  }
})();
