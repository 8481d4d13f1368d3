// Flotilla reporter: small progressive enhancements, no build step.
// 1. Filter forms marked "auto" apply as soon as a select changes.
// 2. While a rollout runs (body data-refresh="1"), <main> is reloaded every
//    5 seconds; <details> stay open or closed as the reader left them, and refreshing stops once the
//    server says nothing is rolling out any more.
(function () {
  "use strict";
  function wireFilters(root) {
    root.querySelectorAll("form.auto select").forEach(function (sel) {
      sel.addEventListener("change", function () { sel.form.submit(); });
    });
  }
  function refresh() {
    if (document.body.dataset.refresh !== "1" || document.hidden) { return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Refresh": "1" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("main");
        var main = document.getElementById("main");
        if (!fresh || !main) { return; }
        var open = {};
        main.querySelectorAll("details").forEach(function (d) { if (d.id) { open[d.id] = d.open; } });
        main.replaceWith(fresh);
        fresh.querySelectorAll("details").forEach(function (d) {
          if (Object.prototype.hasOwnProperty.call(open, d.id)) { d.open = open[d.id]; }
        });
        wireFilters(fresh);
        var still = doc.body.dataset.refresh === "1";
        document.body.dataset.refresh = still ? "1" : "0";
        var live = document.getElementById("live");
        if (live) { live.hidden = !still; }
      })
      .catch(function () { /* keep the page as it is; try again later */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    wireFilters(document);
    window.setInterval(refresh, 5000);
  });
})();
