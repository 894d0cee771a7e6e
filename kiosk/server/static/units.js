// The units pages: approve, reject, assign, wipe, revoke, and the support commands, each
// through the JSON API; the page is then loaded again to show the new state.
"use strict";
(() => {
  const { api, failure, command, strings } = window.kiosk;
  const error = document.getElementById("unit-error");
  const status = document.getElementById("command-status");
  const ACTS = { approve: "approve", reject: "reject", revoke: "revoke" };
  const CONFIRM = { wipe: "sure-wipe", revoke: "sure-revoke", reboot: "sure-reboot" };
  // A test ring that has not reached the unit within ten minutes is stale: nobody waits for it
  // any more, and it must not ring in a citizen's home hours later.
  const MORE = { "test-ring": { expires_in: 600 } };

  async function run(button, work) {
    const sure = CONFIRM[button.dataset.act || button.dataset.command];
    if (sure && !window.confirm(strings[sure])) return;
    for (const b of document.querySelectorAll("button")) b.disabled = true;
    if (status) status.textContent = strings.working;
    const problem = await work();
    if (problem) {
      error.textContent = problem;
      if (status) status.textContent = "";
      for (const b of document.querySelectorAll("button")) b.disabled = false;
    } else {
      location.reload();
    }
  }

  for (const button of document.querySelectorAll("button[data-act]")) {
    button.addEventListener("click", () => run(button, async () => {
      const path = button.dataset.act === "revoke" ? "/api/devices/" : "/api/units/";
      const answer = await api("POST", path + button.dataset.unit + "/" + ACTS[button.dataset.act]);
      return answer.status === 204 ? null : failure(answer);
    }));
  }
  for (const button of document.querySelectorAll("button[data-command]")) {
    button.addEventListener("click", () => run(button, () => command(button.dataset.unit, button.dataset.command, status,
                                                                      MORE[button.dataset.command])));
  }
  for (const form of document.querySelectorAll("form.assign")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      run(form.querySelector("button"), async () => {
        const caregivers = [...form.querySelectorAll("input[name=caregiver]:checked")].map((box) => box.value);
        const answer = await api("POST", "/api/units/" + form.dataset.unit + "/assign",
                                 { citizen_name: form.elements.citizen_name.value, caregivers });
        return answer.status === 201 ? null : failure(answer);
      });
    });
  }
})();
