// The caregiver's page: my citizens (rendered by the server), call one, see and hear them, hang up.
// Signaling messages are those of kiosk/protocol/messages.py; the unit sends the SDP offer
// when the citizen answers, this page answers it. SDP travels whole (no trickle ICE).
"use strict";

const TEXT = {
  da: {
    placing: "Ringer op …", ringing: "Det ringer hos borgeren …", connecting: "Borgeren har taget den – forbinder …",
    "in-call": "I samtale", camera: "Kameraet kunne ikke startes: ",
    poor: "Dårlig forbindelse — billedet kan hakke.", lost: "Forbindelsen er væk — vi prøver at få den tilbage …",
    "sound-only-on": "Kun lyd: dit billede sendes ikke, og borgerens er skjult.",
    facts: {
      online: (v) => v ? "Skærmen var forbundet" : "Skærmen var ikke forbundet",
      since: (t) => "forbundet siden " + t, lastSeen: (t) => "sidst set " + t,
      rang: (s) => "Det ringede i " + s + " sekunder",
      notRang: "Skærmen nåede ikke at ringe",
      ui: (v) => v ? "Skærmens program svarede" : "Skærmens program svarede ikke",
      awake: (v) => v ? "Skærmen var tændt" : "Skærmen var slukket",
    },
  },
  en: {
    placing: "Calling …", ringing: "Ringing at the citizen's …", connecting: "The citizen answered – connecting …",
    "in-call": "In call", camera: "The camera could not start: ",
    poor: "Poor connection — the picture may stutter.", lost: "The connection is gone — trying to get it back …",
    "sound-only-on": "Sound only: your picture is not sent and the citizen's is hidden.",
    facts: {
      online: (v) => v ? "The screen was connected" : "The screen was not connected",
      since: (t) => "connected since " + t, lastSeen: (t) => "last seen " + t,
      rang: (s) => "It rang for " + s + " seconds",
      notRang: "The screen did not get to ring",
      ui: (v) => v ? "The screen's app was responding" : "The screen's app was not responding",
      awake: (v) => v ? "The screen was awake" : "The screen was asleep",
    },
  },
};

const lang = document.documentElement.lang === "en" ? "en" : "da";  // the server chose it
const $ = (id) => document.getElementById(id);
const t = (key) => TEXT[lang][key];

// What the end-to-end tests and curious staff can inspect: the live peer and counters.
const call = { ws: null, pc: null, id: null, local: null, ended: null, startedAt: 0 };
window.kioskCall = call;

async function api(method, path, body) {
  const response = await fetch(path, {
    // the server takes a change of state only as JSON (a cross-site form cannot send that)
    method, headers: method === "GET" ? {} : { "Content-Type": "application/json" },
    body: method === "GET" ? undefined : JSON.stringify(body || {}), credentials: "same-origin",
  });
  const data = response.status === 204 ? null : await response.json();
  return { status: response.status, data, retryAfter: response.headers.get("Retry-After") };
}

function show(section) {
  for (const id of ["citizens", "call"]) $(id).hidden = id !== section;
}

// Headlines and advice for the end of a call: one table, shared with the server's tests.
let ENDINGS = { da: { headlines: {}, advice: {} }, en: { headlines: {}, advice: {} } };

async function start() {
  const endings = await fetch("/static/call-endings.json", { credentials: "same-origin" });
  if (endings.ok) ENDINGS = await endings.json();
  for (const button of document.querySelectorAll("button[data-citizen]")) {
    button.addEventListener("click", () => placeCall({ id: button.dataset.citizen, name: button.dataset.name }));
  }
  setInterval(watchWarnings, 30000);
}

// The pre-visit check runs on the server; when what it says changes, show the new state
// (never in the middle of a call).
async function watchWarnings() {
  if (!$("call").hidden) return;
  const { status: code, data } = await api("GET", "/api/pre-visit-warnings");
  if (code !== 200) return;
  const now = data.map((w) => w.citizen_id + ":" + w.reasons.join(" ")).sort().join(",");
  const shown = [...document.querySelectorAll("[data-warning-for]")]
    .map((el) => el.dataset.warningFor + ":" + el.dataset.reasons).sort().join(",");
  if (now !== shown) location.reload();
}

function status(text) { $("call-status").textContent = text; }

async function placeCall(citizen) {
  show("call");
  $("ended").hidden = true; $("hangup").hidden = false;
  $("call-title").textContent = citizen.name;
  status(t("placing"));
  call.ended = null; call.id = null; call.startedAt = 0; call.link = "good"; call.answered = false;
  call.pc = null; call.answering = null;
  soundOnly = false; $("remote").hidden = false; $("link-notice").hidden = true; $("sound-only").hidden = true;
  try {
    call.local = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
    $("local").srcObject = call.local;
  } catch (err) {
    status(t("camera") + err.message);
    return;
  }
  openSocket({ type: "call-start", citizen_id: citizen.id });
}

// The call socket. If it drops while media flows (a server restart), the call goes on peer to
// peer: open it again and resume the call, for up to RESUME_SECONDS, before giving up.
const RESUME_SECONDS = 60;
function openSocket(first, resumeUntil) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = call.ws = new WebSocket(scheme + "//" + location.host + "/api/calls/socket");
  ws.onopen = () => send(first);
  ws.onmessage = (event) => onSignal(JSON.parse(event.data));
  ws.onclose = () => {
    if (call.ended || ws !== call.ws) return;
    const flowing = call.answered && call.pc && call.pc.connectionState === "connected";  // not while ringing
    const until = resumeUntil || performance.now() + RESUME_SECONDS * 1000;
    if (flowing && call.id && performance.now() < until) {
      setTimeout(() => { if (!call.ended) openSocket({ type: "call-resume", call_id: call.id }, until); }, 1000);
    } else {
      ended({ reason: call.startedAt ? "connection_lost" : "media_failed", facts: null });
    }
  };
}

// What the caregiver is told about the link while in call: poor (the picture stalls or
// much is lost) or gone (nothing arrives), in plain words; cleared when it is good again.
async function watchLink(pc) {
  let lastFrames = 0, lastLost = 0, lastReceived = 0, stalledSince = null, calmSince = null;
  while (!call.ended && call.pc === pc) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    if (call.ended || pc.connectionState === "closed") return;
    let frames = 0, lost = 0, received = 0;
    (await pc.getStats()).forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      received += s.packetsReceived || 0; lost += Math.max(0, s.packetsLost || 0);
      if (s.kind === "video") frames += s.framesDecoded || 0;
    });
    const now = performance.now();
    const gotPackets = received > lastReceived;
    const loss = received + lost > lastReceived + lastLost ? (lost - lastLost) / ((received - lastReceived) + (lost - lastLost)) : 0;
    const stalled = frames === lastFrames && !soundOnly;
    stalledSince = stalled ? (stalledSince || now) : null;
    lastFrames = frames; lastLost = lost; lastReceived = received;
    let state = "good";
    if (!gotPackets || pc.connectionState === "disconnected") state = "lost";
    else if ((stalledSince && now - stalledSince >= 1000) || loss >= 0.15) state = "poor";
    if (state !== "good") calmSince = null; else calmSince = calmSince || now;
    const notice = $("link-notice");
    if (state !== "good") { notice.textContent = t(state); notice.hidden = false; $("sound-only").hidden = soundOnly; }
    else if (now - calmSince >= 3000) { notice.hidden = true; }
    call.link = state;
  }
}

// One click: go on with sound only (our camera stops sending; the citizen's picture is hidden).
let soundOnly = false;
function goSoundOnly() {
  soundOnly = true;
  if (call.pc) for (const sender of call.pc.getSenders()) if (sender.track && sender.track.kind === "video") sender.track.enabled = false;
  $("remote").hidden = true; $("sound-only").hidden = true;
  $("link-notice").textContent = t("sound-only-on"); $("link-notice").hidden = false;
}
$("sound-only").addEventListener("click", goSoundOnly);
// Closing the page hangs up, said out loud: the server otherwise waits a while for the page
// to come back, since a dropped call socket in a call may be only a network blink.
window.addEventListener("pagehide", () => {
  if (call.id && !call.ended) send({ type: "call-hangup", call_id: call.id, reason: "hung-up" });
});

function send(message) {
  if (call.ws && call.ws.readyState === WebSocket.OPEN) call.ws.send(JSON.stringify(message));
}

async function onSignal(msg) {
  switch (msg.type) {
    case "call-placed":
      call.id = msg.call_id;
      call.iceServers = msg.ice_servers.map((s) => ({ urls: s.urls, username: s.username || undefined, credential: s.credential || undefined }));
      call.relayOnly = msg.relay_only;
      break;
    case "call-ringing":
      status(t("ringing"));
      break;
    case "call-offer":
      // The unit's offer while it rings: answer it now, so ICE and DTLS are up before the
      // citizen answers. Nothing is sent on it yet (no track); "call-answer" attaches ours.
      if (call.answered) break;
      call.answering = answerOffer(msg.sdp, false);
      await call.answering;
      break;
    case "call-answer": {
      status(t("connecting"));
      call.answered = true;
      if (msg.sdp) {  // an offer with the answer (a unit that did not pre-connect): a fresh connection
        await answerOffer(msg.sdp, true);
      } else if (call.pc) {  // our picture starts now, from a fresh encoder: with a key frame
        await call.answering;  // our answer to the ring's offer may still be gathering
        for (const transceiver of call.pc.getTransceivers()) {
          const track = call.local.getTracks().find((tr) => tr.kind === transceiver.receiver.track.kind);
          if (track) await transceiver.sender.replaceTrack(track);
        }
        mediaState(call.pc);
      }
      break;
    }
    case "call-ended":
      await ended(msg);
      break;
    case "rejected":
      await ended({ reason: msg.reason, facts: null });
      break;
  }
}

// A connection answering the unit's offer: ``withMedia`` sends our camera and microphone at
// once (the citizen has answered); otherwise nothing is attached until the answer.
async function answerOffer(sdp, withMedia) {
  if (call.pc) { call.pc.onconnectionstatechange = null; call.pc.close(); }
  const pc = call.pc = new RTCPeerConnection({
    iceServers: call.iceServers,  // only the server's own TURN/STUN; never a public server
    iceTransportPolicy: call.relayOnly ? "relay" : "all",
  });
  if (withMedia) for (const track of call.local.getTracks()) pc.addTrack(track, call.local);
  pc.ontrack = (event) => { $("remote").srcObject = event.streams[0] || new MediaStream([event.track]); };
  pc.onconnectionstatechange = () => mediaState(pc);
  await pc.setRemoteDescription({ type: "offer", sdp: sdp });
  for (const transceiver of pc.getTransceivers()) transceiver.direction = "sendrecv";
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  if (pc === call.pc && !call.ended) send({ type: "call-accept", call_id: call.id, sdp: pc.localDescription.sdp });
}

// Media counts as up once the citizen answered and the connection is up (it may have come
// up while the unit rang); a connection that fails after the answer ends the call.
function mediaState(pc) {
  if (pc !== call.pc || !call.answered) return;
  if (pc.connectionState === "connected" && !call.startedAt) {
    call.startedAt = performance.now();
    watchLink(pc);
    status(t("in-call"));
    send({ type: "call-connected", call_id: call.id });
  } else if (pc.connectionState === "failed") {
    send({ type: "call-hangup", call_id: call.id, reason: "media-failed" });
  }
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 5000); // on a poor network, send what we have
  });
}

// The quality summary for the call record: counters only, never any media.
async function quality(pc) {
  const q = { packets_received: 0, packets_lost: 0, frames_decoded: 0, freezes: 0, jitter_ms: null,
              round_trip_time_ms: null, bytes_sent: 0, bytes_received: 0, duration_s: 0 };
  if (!pc) return q;
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      q.packets_received += s.packetsReceived || 0;
      q.packets_lost += Math.max(0, s.packetsLost || 0);
      if (s.kind === "video") { q.frames_decoded += s.framesDecoded || 0; q.freezes += s.freezeCount || 0; }
      if (s.jitter !== undefined) q.jitter_ms = Math.max(q.jitter_ms || 0, s.jitter * 1000);
    } else if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
      q.round_trip_time_ms = s.currentRoundTripTime * 1000;
    } else if (s.type === "transport") {
      q.bytes_sent += s.bytesSent || 0; q.bytes_received += s.bytesReceived || 0;
    }
  });
  q.duration_s = call.startedAt ? (performance.now() - call.startedAt) / 1000 : 0;
  return q;
}
call.quality = () => quality(call.pc);

async function ended(msg) {
  if (call.ended) return;
  call.ended = msg;
  const headline = ENDINGS[lang].headlines[msg.reason] || msg.reason;
  const advice = ENDINGS[lang].advice[msg.reason];
  $("ended-reason").textContent = advice ? headline + " " + advice : headline;
  const facts = $("ended-facts");
  facts.replaceChildren();
  const f = TEXT[lang].facts;
  const time = (s) => new Date(s * 1000).toLocaleTimeString(lang === "da" ? "da-DK" : "en-GB");
  if (msg.facts) {
    const lines = [f.online(msg.facts.online) + (msg.facts.online_since ? ", " + f.since(time(msg.facts.online_since)) :
                   msg.facts.last_seen ? ", " + f.lastSeen(time(msg.facts.last_seen)) : "")];
    lines.push(msg.facts.rang_for_seconds !== null ? f.rang(Math.round(msg.facts.rang_for_seconds)) : f.notRang);
    if (msg.facts.ui_alive !== null) lines.push(f.ui(msg.facts.ui_alive));
    if (msg.facts.screen_awake !== null) lines.push(f.awake(msg.facts.screen_awake));
    for (const line of lines) { const li = document.createElement("li"); li.textContent = line; facts.append(li); }
  }
  if (call.pc && call.id) send({ type: "call-quality", call_id: call.id, quality: await quality(call.pc) });
  if (call.pc) call.pc.close();
  if (call.local) for (const track of call.local.getTracks()) track.stop();
  $("remote").srcObject = null; $("local").srcObject = null;
  if (call.ws) call.ws.close();
  status("");
  $("hangup").hidden = true; $("ended").hidden = false;
  $("sound-only").hidden = true; $("link-notice").hidden = true;
}

$("hangup").addEventListener("click", async () => {
  if (!call.id) return;
  send({ type: "call-hangup", call_id: call.id, reason: "hung-up" });
  // the server does not tell a side about its own action: end the call here
  const connected = call.startedAt > 0;  // connected while ringing is not yet a call in progress
  await ended({ reason: connected ? "hung_up_by_staff" : "cancelled_by_caller", facts: null });
});
$("back").addEventListener("click", () => location.reload());
start();
