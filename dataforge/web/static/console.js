/* DataForge console: local times and live tables. No build step, no dependencies.
 *
 * <time datetime="...Z"> elements are rendered in UTC by the server (readable without this
 * script); here they are rewritten in the viewer's time zone, with the UTC time on hover.
 * An element with data-refresh="URL" has its content replaced by that URL's HTML every
 * data-every seconds (default 3), while the tab is visible.
 */
(function () {
  "use strict";

  var zone = (Intl.DateTimeFormat().resolvedOptions().timeZone) || "local time";
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false
  });

  function localTimes(root) {
    var nodes = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      if (node.getAttribute("data-local")) { continue; }
      var iso = node.getAttribute("datetime");
      var when = new Date(iso);
      if (isNaN(when.getTime())) { continue; }
      node.title = node.textContent + " (" + iso + ")";
      node.textContent = format.format(when);
      node.setAttribute("data-local", zone);
    }
  }

  function refresh(node) {
    var url = node.getAttribute("data-refresh");
    var every = Math.max(1, parseFloat(node.getAttribute("data-every")) || 3) * 1000;
    function tick() {
      if (document.hidden) { window.setTimeout(tick, every); return; }
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.redirected || !response.ok) { throw new Error(String(response.status)); }
          return response.text();
        })
        .then(function (html) {
          node.innerHTML = html;
          localTimes(node);
          node.setAttribute("data-refreshed", String(Date.now()));
        })
        .catch(function () { node.setAttribute("data-refresh-failed", String(Date.now())); })
        .then(function () { window.setTimeout(tick, every); });
    }
    window.setTimeout(tick, every);
  }

  function start() {
    localTimes(document);
    var zones = document.querySelectorAll("[data-zone]");
    for (var i = 0; i < zones.length; i++) { zones[i].textContent = zone; }
    var live = document.querySelectorAll("[data-refresh]");
    for (var j = 0; j < live.length; j++) { refresh(live[j]); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
