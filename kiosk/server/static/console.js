// What every console page shares: JSON requests to the API, logging in and out, the page's
// words (rendered by the server in the reader's language, in the #strings data block).
"use strict";
(() => {
  const strings = JSON.parse(document.getElementById("strings").textContent);

  async function api(method, path, body) {
    // the server takes a change of state only as JSON (a cross-site form cannot send that)
    const response = await fetch(path, {
      method, headers: method === "GET" ? {} : { "Content-Type": "application/json" },
      body: method === "GET" ? undefined : JSON.stringify(body || {}), credentials: "same-origin",
    });
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    return { status: response.status, data, retryAfter: response.headers.get("Retry-After") };
  }

  // An answer that is not a success, in words for the person: the server's message says why.
  function failure(answer) {
    const why = answer.data && answer.data.message ? answer.data.message : "HTTP " + answer.status;
    return strings.failed + " " + why;
  }

  // Queue a command and wait for the unit's answer (a look at the screen waits up to a minute for
  // the citizen's yes or no, a test ring up to a minute for a touch); the caller then reloads the
  // page to show it. ``more``: the request's other fields (such as its expires_in).
  async function command(unit, kind, statusElement, more) {
    const queued = await api("POST", "/api/devices/" + unit + "/commands", { kind, ...(more || {}) });
    if (queued.status !== 202) return failure(queued);
    if (statusElement) statusElement.textContent = strings["command-sent"];
    for (let i = 0; i < 180; i++) {
      const state = await api("GET", "/api/commands/" + queued.data.id);
      if (state.status === 200 && !["pending", "delivered"].includes(state.data.state)) return null;
      if (i === 5 && state.data && state.data.state === "pending" && statusElement) {
        statusElement.textContent = strings["command-waiting"];
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    return null;
  }

  window.kiosk = { api, failure, command, strings };

  const login = document.getElementById("login");
  if (login) {
    login.addEventListener("submit", async (event) => {
      event.preventDefault();
      const answer = await api("POST", "/api/login", {
        username: document.getElementById("username").value, password: document.getElementById("password").value,
      });
      const error = document.getElementById("login-error");
      if (answer.status === 200) { error.textContent = ""; location.reload(); }
      else if (answer.status === 429) { error.textContent = strings["login-wait"].replace("{s}", answer.retryAfter); }
      else { error.textContent = strings["bad-login"]; }
    });
  }
  const logout = document.getElementById("logout");
  if (logout) {
    logout.addEventListener("click", async () => { await api("POST", "/api/logout"); location.href = "/"; });
  }
})();
