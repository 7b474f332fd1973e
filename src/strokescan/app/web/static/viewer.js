// Study viewer: scroll slices (wheel, arrow keys, PgUp/PgDn, the probability strip), window presets, overlay
// toggles and opacity, and the detector's heat map on the slices it explained (off until asked for). Slices and
// overlays are PNGs the server wrote once per study.
(function () {
  "use strict";
  const viewer = document.getElementById("viewer");
  const statusLine = document.getElementById("study-status");
  if (!viewer) {
    // not analysed yet: poll the status and reload when it changes
    const url = statusLine && statusLine.dataset.statusUrl;
    const start = statusLine && statusLine.querySelector("strong").textContent;
    if (url && (start === "queued" || start === "running")) {
      setInterval(async () => {
        const r = await fetch(url, { headers: { Accept: "application/json" }, redirect: "manual" });
        const json = r.ok && (r.headers.get("Content-Type") || "").includes("json");
        if (!json || (await r.json()).status !== start) location.reload();  // changed, or logged out
      }, 1500);
    }
    return;
  }
  const n = Number(viewer.dataset.n);
  const base = viewer.dataset.base;
  const slice = document.getElementById("slice");
  const overlays = Array.from(document.querySelectorAll("img.overlay"));
  const windowSelect = document.getElementById("window");
  const number = document.getElementById("slice-number");
  const probability = document.getElementById("slice-probability");
  const bars = Array.from(document.querySelectorAll("#strip .bar"));
  const cursor = document.getElementById("cursor");
  const heatmap = document.getElementById("heatmap");
  const heatmapToggle = document.getElementById("heatmap-toggle");
  const explained = new Set(heatmap ? heatmap.dataset.slices.split(",").map(Number) : []);
  let index = Number(viewer.dataset.start) || 0;

  function showHeatmap() {
    if (!heatmap) return;
    const on = heatmapToggle.checked && explained.has(index);  // only explained slices have a heat map
    if (on) heatmap.src = `${base}/overlays/heatmap/${index}.png`;
    heatmap.classList.toggle("hidden", !on);
  }

  function show(i) {
    index = Math.max(0, Math.min(n - 1, i));
    slice.src = `${base}/slices/${windowSelect.value}/${index}.png`;
    for (const o of overlays) o.src = `${base}/overlays/${o.dataset.class}/${index}.png`;
    showHeatmap();
    number.textContent = String(index + 1);
    const bar = bars[index];
    if (bar) probability.textContent = `p(hemorrhage) = ${Number(bar.dataset.p).toFixed(3)}`;
    if (cursor) cursor.setAttribute("x", String(index * 10));
    viewer.dataset.index = String(index);
  }
  viewer.addEventListener("wheel", (e) => { e.preventDefault(); show(index + (e.deltaY > 0 ? 1 : -1)); }, { passive: false });
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("textarea, select, input:not([type=checkbox])")) return;  // the control's own keys
    const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 5, PageUp: -5 }[e.key];
    if (step) { e.preventDefault(); show(index + step); }
    if (e.key === "Home") { e.preventDefault(); show(0); }  // the slices', not the page's Home and End
    if (e.key === "End") { e.preventDefault(); show(n - 1); }
  });
  windowSelect.addEventListener("change", () => show(index));
  for (const box of document.querySelectorAll("input.toggle")) {
    box.addEventListener("change", () => {
      for (const o of overlays) if (o.dataset.class === box.value) o.classList.toggle("hidden", !box.checked);
    });
  }
  const opacity = document.getElementById("opacity");
  opacity.addEventListener("input", () => { for (const o of overlays) o.style.opacity = String(opacity.value / 100); });
  for (const bar of bars) bar.addEventListener("click", () => show(Number(bar.dataset.index)));
  for (const o of overlays) o.addEventListener("error", () => { o.classList.add("hidden"); });
  if (heatmapToggle) heatmapToggle.addEventListener("change", showHeatmap);
  show(index);
})();
