// Airlock portal behaviour. Loaded as a file (the CSP forbids inline script);
// every page works without it.
(function () {
  "use strict";

  function textOf(selector) {
    var node = document.querySelector(selector);
    if (!node) { return ""; }
    if (node.dataset.secret) { return node.dataset.secret; }
    var items = node.querySelectorAll("li");
    if (items.length) {
      return Array.prototype.map.call(items, function (li) { return li.textContent.trim(); }).join("\n");
    }
    return node.textContent.trim();
  }

  document.addEventListener("click", function (event) {
    var copy = event.target.closest("[data-copy]");
    if (copy && navigator.clipboard) {
      navigator.clipboard.writeText(textOf(copy.dataset.copy)).then(function () {
        var label = copy.textContent;
        copy.textContent = "Copied";
        setTimeout(function () { copy.textContent = label; }, 1500);
      });
      return;
    }
    if (event.target.closest("[data-print]")) {
      window.print();
    }
  });
})();
