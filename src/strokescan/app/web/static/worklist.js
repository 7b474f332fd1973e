// Worklist live refresh: polls the studies' state every few seconds, redraws the rows when it changed, and shows
// an alert (role="alert") for every flagged study that arrived since the page was loaded.
(function () {
  "use strict";
  const table = document.getElementById("worklist");
  const alertBox = document.getElementById("new-flagged");
  if (!table || !table.dataset.stateUrl) return;
  let fingerprint = null;
  let seen = null;  // flagged ids at the first poll: those are on the page already
  async function poll() {
    let r;
    try {
      r = await fetch(table.dataset.stateUrl, { headers: { Accept: "application/json" }, redirect: "manual" });
    } catch (err) { return; }
    if (!r.ok || !(r.headers.get("Content-Type") || "").includes("json")) { location.reload(); return; }  // logged out
    const state = await r.json();
    const first = seen === null;
    if (first) seen = new Set();
    for (const s of state.flagged) {
      if (seen.has(s.id)) continue;
      seen.add(s.id);
      if (first) continue;
      const link = document.createElement("a");
      link.href = s.url;
      link.textContent = `study ${s.id}`;
      alertBox.append(document.createTextNode(alertBox.hidden ? "New flagged study: " : ", "), link);
      alertBox.hidden = false;
    }
    if (fingerprint !== null && state.fingerprint !== fingerprint) {
      const url = new URL(location.href);
      url.searchParams.set("rows", "1");
      const rows = await fetch(url, { headers: { Accept: "text/html" }, redirect: "manual" });
      if (rows.ok) {
        const tbody = table.querySelector("tbody");
        const holder = document.createElement("table");
        holder.innerHTML = await rows.text();
        const fresh = holder.querySelector("tbody");
        if (tbody && fresh) tbody.replaceWith(fresh);
      }
    }
    fingerprint = state.fingerprint;
  }
  poll();
  setInterval(poll, Number(table.dataset.pollMs) || 3000);
})();
