// Upload with drag and drop (files or a whole folder) and a progress bar; the server answers 202 with the
// study's page, where the analysis status is followed.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  const drop = document.getElementById("drop");
  const picker = document.getElementById("files");
  const folder = document.getElementById("folder");
  const bar = document.getElementById("progress");
  const status = document.getElementById("upload-status");
  let dropped = [];

  async function walk(entry, path, out) {
    if (entry.isFile) {
      out.push(await new Promise((ok, fail) => entry.file((f) => ok({ file: f, name: path + f.name }), fail)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      let batch;
      do {
        batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        for (const child of batch) await walk(child, path + entry.name + "/", out);
      } while (batch.length);
    }
  }
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    dropped = [];
    const entries = Array.from(e.dataTransfer.items).map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    if (entries.length) { for (const entry of entries) await walk(entry, "", dropped); }
    else dropped = Array.from(e.dataTransfer.files).map((f) => ({ file: f, name: f.name }));
    status.textContent = `${dropped.length} file(s) ready`;
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const data = new FormData();
    data.append("csrf_token", form.dataset.csrf);
    let items = dropped;
    if (!items.length) items = Array.from(picker.files).map((f) => ({ file: f, name: f.name }));
    if (!items.length) items = Array.from(folder.files).map((f) => ({ file: f, name: f.webkitRelativePath || f.name }));
    if (!items.length) { status.textContent = "Choose or drop files first."; return; }
    for (const it of items) data.append("files", it.file, it.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action || location.href);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRFToken", form.dataset.csrf);
    bar.hidden = false;
    xhr.upload.addEventListener("progress", (ev) => { if (ev.lengthComputable) bar.value = (100 * ev.loaded) / ev.total; });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = { error: `upload failed (${xhr.status})` }; }
      if (xhr.status === 202) { status.textContent = "Uploaded: analysis queued."; location.href = body.url; }
      else { status.textContent = body.error || `upload failed (${xhr.status})`; status.className = "error"; }
    });
    xhr.addEventListener("error", () => { status.textContent = "the connection failed; nothing was stored"; });
    xhr.send(data);
  });
})();
