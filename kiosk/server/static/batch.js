// A new batch: the server makes the provisioning files and the sheet; the page offers them as
// downloads (the tokens are not stored, so this is the one chance).
"use strict";
(() => {
  const { api, failure } = window.kiosk;
  const $ = (id) => document.getElementById(id);
  const download = (name, blob) => {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob); link.download = name; link.textContent = name;
    return link;
  };
  $("batch").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("batch-error").textContent = "";
    const answer = await api("POST", "/api/enroll-batches", {
      server_url: $("batch-url").value, count: Number($("batch-count").value),
      expires_in: Number($("batch-days").value) * 86400, language: document.documentElement.lang,
    });
    if (answer.status !== 201) { $("batch-error").textContent = failure(answer); return; }
    const pdf = Uint8Array.from(atob(answer.data.sheet_pdf), (c) => c.charCodeAt(0));
    const sheet = $("sheet-link");
    sheet.href = URL.createObjectURL(new Blob([pdf], { type: "application/pdf" }));
    sheet.download = answer.data.files[0].name.replace(/-001\.yaml$/, "-sheet.pdf");
    const list = $("file-links");
    list.replaceChildren();
    for (const file of answer.data.files) {
      const item = document.createElement("li");
      item.append(download(file.name, new Blob([file.content], { type: "application/yaml" })));
      list.append(item);
    }
    $("batch-result").hidden = false;
    $("batch-result-title").focus();
  });
})();
