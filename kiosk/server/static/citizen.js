// A citizen's page: plan, move and cancel visits through the schedule API; each change goes
// to the citizen's screen as a signed command, and the page is loaded again to show it.
"use strict";
(() => {
  const { api, failure } = window.kiosk;
  const $ = (id) => document.getElementById(id);
  const unix = (local) => new Date(local).getTime() / 1000;  // the browser's own time zone
  const done = (answer, ok) => { if (answer.status === ok) location.reload(); else $("visit-error").textContent = failure(answer); };

  $("add-visit").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    done(await api("POST", "/api/citizens/" + form.dataset.citizen + "/visits", {
      at: unix($("visit-at").value), repeat: $("visit-repeat").value, staff_name: $("visit-staff").value,
      staff_role: $("visit-role").value, kind: $("visit-kind").value,
    }), 201);
  });
  for (const form of document.querySelectorAll("form.move")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      done(await api("PATCH", "/api/visits/" + form.dataset.visit, { at: unix(form.querySelector("input").value) }), 200);
    });
  }
  for (const button of document.querySelectorAll("button.cancel-visit")) {
    button.addEventListener("click", async () => done(await api("POST", "/api/visits/" + button.dataset.visit + "/cancel"), 204));
  }
  // The forms' buttons come disabled: pressed before this script ran (a slow page), the browser
  // would submit the form itself, reload the page and lose what was typed.
  for (const button of document.querySelectorAll("form button[type=submit]")) button.disabled = false;
})();
