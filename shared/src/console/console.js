// pgfleet console: live regions. Every element with `data-live` and an id is refreshed from
// a fresh copy of the same page every few seconds, while the tab is visible; a hidden tab
// polls nothing. The fetched page is parsed inertly (DOMParser runs no script) and the CSP
// forbids inline script anyway. Without JavaScript the pages work, just not live.
(function () {
  "use strict";
  var EVERY_MS = 2000;
  var regions = document.querySelectorAll("[data-live][id]");
  var status = document.getElementById("live-status");
  if (!regions.length) return;
  var timer = null;
  var stopped = false;

  function say(text) { if (status) status.textContent = text; }

  function refresh() {
    return fetch(location.href, {
      credentials: "same-origin", cache: "no-store", redirect: "manual",
      headers: { "X-Console-Live": "1" }
    }).then(function (r) {
      if (r.type === "opaqueredirect" || r.status === 401 || r.status === 403) {
        stopped = true;
        say("Live updates stopped: the session ended. Reload to sign in again.");
        return;
      }
      if (!r.ok) { say("Live update failed (" + r.status + "); retrying."); return; }
      return r.text().then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (el) {
          var next = fresh.getElementById(el.id);
          if (next && next.innerHTML !== el.innerHTML) el.innerHTML = next.innerHTML;
        });
        say("Live · updated " + new Date().toLocaleTimeString());
      });
    }).catch(function () { say("Live update failed; retrying."); });
  }

  function schedule() {
    clearTimeout(timer);
    if (stopped || document.visibilityState !== "visible") return;
    timer = setTimeout(function () { refresh().then(schedule); }, EVERY_MS);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { refresh().then(schedule); }
    else { clearTimeout(timer); say("Live updates paused while this tab is hidden."); }
  });
  say("Live");
  schedule();
})();
