// Flotilla reporter: small progressive enhancements, no build step.
// 1. Filter forms marked "auto" apply as soon as a select changes.
// 2. While a rollout runs (body data-refresh="1"), <main> is reloaded every
//    5 seconds; <details> stay open or closed as the reader left them, and refreshing stops once the
//    server says nothing is rolling out any more.
// 3. A page with data-stamp-url (an agent's history) polls that URL every
//    2 seconds (a few bytes) and reloads <main> only when the stamp changed,
//    the same way: same URL (so the filters stay), open <details> kept.
(function () {
  "use strict";
  function wireFilters(root) {
    root.querySelectorAll("form.auto select").forEach(function (sel) {
      sel.addEventListener("change", function () { sel.form.submit(); });
    });
  }
  function reload(after, failed) {
    failed = failed || function () {};
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Refresh": "1" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("main");
        var main = document.getElementById("main");
        if (!fresh || !main) { failed(); return; }
        var open = {};
        main.querySelectorAll("details").forEach(function (d) { if (d.id) { open[d.id] = d.open; } });
        main.replaceWith(fresh);
        fresh.querySelectorAll("details").forEach(function (d) {
          if (Object.prototype.hasOwnProperty.call(open, d.id)) { d.open = open[d.id]; }
        });
        wireFilters(fresh);
        after(doc);
      })
      .catch(function () { failed(); /* keep the page as it is; try again later */ });
  }
  function refresh() {
    if (document.body.dataset.refresh !== "1" || document.hidden) { return; }
    reload(function (doc) {
      var still = doc.body.dataset.refresh === "1";
      document.body.dataset.refresh = still ? "1" : "0";
      var live = document.getElementById("live");
      if (live) { live.hidden = !still; }
    });
  }
  var polling = false;
  function poll() {
    var url = document.body.dataset.stampUrl;
    if (!url || document.hidden || polling) { return; }
    polling = true;
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (stamp) {
        if (stamp === document.body.dataset.stamp) { polling = false; return; }
        reload(function (doc) {
          document.body.dataset.stamp = doc.body.dataset.stamp || stamp;
          polling = false;
        }, function () { polling = false; });
      })
      .catch(function () { polling = false; });
  }
  document.addEventListener("DOMContentLoaded", function () {
    wireFilters(document);
    window.setInterval(refresh, 5000);
    window.setInterval(poll, 2000);
  });
})();
