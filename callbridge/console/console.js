// The console page: live calls (Server-Sent Events from /console/events), one call's
// timeline as a conversation with barge-in and restart markers, latency per turn, line
// figures and level meters; and the softphone. Text from calls is only ever set with
// textContent (never parsed as HTML).
import { Softphone } from "./softphone.js";

const $ = (id) => document.getElementById(id);
const calls = new Map(); // callSid -> summary
const HISTORY_TICKS = 150; // 30 s of 200 ms ticks on the waveform
let selected = null; // {sid, events: [], levels: [[in, out], ...], loaded: bool}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

const fmtMs = (ms) => (ms == null ? "–" : ms >= 10000 ? `${(ms / 1000).toFixed(0)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`);
const shortSid = (sid) => `${sid.slice(0, 6)}…${sid.slice(-4)}`;
const pct = (db) => Math.max(0, Math.min(100, ((db + 60) / 60) * 100)); // -60..0 dBFS

// ---- the feed ---------------------------------------------------------------------

function connect() {
  const feed = new EventSource("console/events");
  feed.onopen = () => { $("feed").textContent = "live"; $("feed").className = "pill ok"; };
  feed.onerror = () => { $("feed").textContent = "reconnecting…"; $("feed").className = "pill"; };
  feed.addEventListener("snapshot", (e) => {
    const snap = JSON.parse(e.data);
    calls.clear();
    for (const c of [...snap.ended].reverse()) calls.set(c.callSid, c);
    for (const c of snap.live) calls.set(c.callSid, c);
    renderList();
    if (selected) select(selected.sid); // resync after a reconnect
  });
  feed.addEventListener("call", (e) => {
    const c = JSON.parse(e.data);
    calls.delete(c.callSid);
    calls.set(c.callSid, c);
    renderList();
    if (selected && selected.sid === c.callSid) renderHead();
    if (pendingSelect === c.callSid) { pendingSelect = null; select(c.callSid); }
  });
  feed.addEventListener("note", (e) => {
    const { callSid, i, e: entry } = JSON.parse(e.data);
    const c = calls.get(callSid);
    if (c) { applyFigures(c, entry); updateRow(c); }
    if (!selected || selected.sid !== callSid || !selected.loaded) {
      if (selected && selected.sid === callSid) selected.queued.push([i, entry]);
      return;
    }
    addEvent(i, entry);
  });
  feed.addEventListener("tick", (e) => {
    const live = JSON.parse(e.data);
    for (const [sid, fig] of Object.entries(live)) {
      const c = calls.get(sid);
      if (c) { c.duration_ms = fig.duration_ms; c.live = fig; updateRow(c); }
      if (selected && selected.sid === sid) {
        selected.levels.push([fig.in_db, fig.out_db]);
        if (selected.levels.length > HISTORY_TICKS) selected.levels.shift();
        $("call-in-level").style.width = `${pct(fig.in_db)}%`;
        $("call-out-level").style.width = `${pct(fig.out_db)}%`;
        renderHead();
        drawWaveform();
      }
    }
  });
}

function applyFigures(c, entry) {
  const f = (c.figures = c.figures || { turns: 0, barge_ins: 0, restarts: 0 });
  if (entry.event === "turn") { f.turns++; f.voice_to_voice_ms = entry.voice_to_voice_ms; }
  else if (entry.event === "barge_in") f.barge_ins++;
  else if (entry.event === "child_restarted") f.restarts++;
  else if (entry.event === "jitter_stats") { f.jitter_ms = entry.jitter_ms; f.loss_pct = entry.loss_pct; }
  else if (entry.event === "stopped") { c.state = "ended"; c.stop_reason = entry.reason; }
}

// ---- the list ---------------------------------------------------------------------

function renderList() {
  const body = $("calls").tBodies[0];
  body.replaceChildren();
  const rows = [...calls.values()].sort((a, b) => (a.state === "live") - (b.state === "live") || a.started_at - b.started_at).reverse();
  for (const c of rows) body.append(row(c));
  $("no-calls").hidden = rows.length > 0;
  if (rows.length > 0) $("hint-text").textContent = "Click a call in the list to follow it here.";
}

function row(c) {
  const tr = el("tr", "call");
  tr.dataset.sid = c.callSid;
  tr.onclick = () => select(c.callSid);
  if (selected && selected.sid === c.callSid) tr.classList.add("selected");
  fillRow(tr, c);
  return tr;
}

function fillRow(tr, c) {
  const f = c.figures || {};
  const cells = [
    [shortSid(c.callSid) + (c.source === "console" ? " ☎" : ""), ""],
    [c.state, `state-${c.state}`],
    [fmtMs(c.duration_ms), ""],
    [String(f.turns ?? 0), ""],
    [fmtMs(f.voice_to_voice_ms), ""],
    [String(f.barge_ins ?? 0), ""],
    [String(f.restarts ?? 0), ""],
  ];
  tr.replaceChildren(...cells.map(([text, cls]) => el("td", cls, text)));
  tr.title = `${c.callSid}${c.stop_reason ? " · " + c.stop_reason : ""}`;
}

function updateRow(c) {
  const tr = document.querySelector(`tr.call[data-sid="${CSS.escape(c.callSid)}"]`);
  if (tr) fillRow(tr, c);
}

// ---- one call ----------------------------------------------------------------------

let pendingSelect = null;

async function select(sid) {
  selected = { sid, events: [], levels: [], loaded: false, queued: [], partial: null, lastAgent: {} };
  document.querySelectorAll("tr.call").forEach((tr) => tr.classList.toggle("selected", tr.dataset.sid === sid));
  $("detail").hidden = false;
  $("hint").hidden = true;
  for (const id of ["conversation", "turns", "events"]) $(id).replaceChildren();
  $("turns").append(el("p", "muted", "No answered turn yet."));
  $("line").replaceChildren(el("span", "muted", "clean so far"));
  renderHead();
  const res = await fetch(`calls/${encodeURIComponent(sid)}`);
  if (!selected || selected.sid !== sid) return;
  if (!res.ok) { $("conversation").append(el("div", "marker", `cannot load the call: ${res.status}`)); return; }
  const record = await res.json();
  if (!selected || selected.sid !== sid) return;
  const c = calls.get(sid);
  if (c) Object.assign(c, { state: record.state, stop_reason: record.stop_reason, figures: record.figures, duration_ms: record.duration_ms });
  selected.record = record;
  record.timeline.forEach((entry, i) => addEvent(i, entry));
  selected.loaded = true;
  for (const [i, entry] of selected.queued) addEvent(i, entry);
  selected.queued = [];
  renderHead();
}

function renderHead() {
  if (!selected) return;
  const c = calls.get(selected.sid) || {};
  $("call-title").textContent = `${selected.sid}`;
  const live = c.live || {};
  const f = c.figures || {};
  const items = [
    ["state", c.state || "…"], ["length", fmtMs(c.duration_ms)], ["source", c.source || "twilio"],
    ["turns", f.turns ?? 0], ["last voice-to-voice", fmtMs(f.voice_to_voice_ms)], ["barge-ins", f.barge_ins ?? 0],
    ["restarts", f.restarts ?? 0],
  ];
  if (live.frames_in !== undefined) items.push(["frames in/out", `${live.frames_in} / ${live.frames_out}`]);
  if (c.stop_reason) items.push(["ended", c.stop_reason]);
  $("call-actions").hidden = c.state !== "live";
  $("call-figures").replaceChildren(...items.map(([k, v]) => { const s = el("span", "", `${k} `); s.append(el("b", "", String(v))); return s; }));
}

function addEvent(i, entry) {
  if (i < selected.events.length) return; // already shown (snapshot and feed overlap)
  selected.events[i] = entry;
  const conv = $("conversation");
  const say = (who, text, label) => {
    const b = el("div", `bubble ${who}`);
    b.append(el("small", "", `${label} · ${fmtMs(entry.t_ms)}`));
    b.append(document.createTextNode(text));
    conv.append(b);
    return b;
  };
  const marker = (cls, text) => conv.append(el("div", `marker ${cls}`, text));
  switch (entry.event) {
    case "started": marker("", `call started${entry.parameters && entry.parameters.source === "console" ? " from the console softphone" : ""}`); break;
    case "transcript.partial":
      if (!selected.partial) selected.partial = say("caller partial", "", "caller (hearing…)");
      selected.partial.lastChild.textContent = entry.text;
      break;
    case "transcript.final":
      if (selected.partial) { selected.partial.remove(); selected.partial = null; }
      if (entry.text) say("caller", entry.text, `caller · STT ${fmtMs(entry.stt_ms)}`);
      else marker("", "noise (nothing recognised)");
      break;
    case "agent.reply":
      if (entry.text) selected.lastAgent[entry.utterance] = say("agent", entry.text, "agent");
      break;
    case "greeting_synthesised": case "fallback_synthesised": case "apology_synthesised": case "dtmf_reply_synthesised":
    case "filler_synthesised": case "goodbye_synthesised": case "recording_notice_synthesised":
      selected.lastAgent[entry.utterance] = say("agent", entry.text, `agent ${entry.event.replace("_synthesised", "")}`);
      break;
    case "barge_in": {
      const cut = selected.lastAgent[entry.utterance];
      if (cut) cut.classList.add("cut");
      marker("barge", `⚡ barge-in: caller heard ${entry.heard_ms >= 0 ? fmtMs(entry.heard_ms) : "all"}, cut in ${fmtMs(entry.detection_ms)}, ${entry.dropped_s}s dropped`);
      break;
    }
    case "agent.truncated": marker("barge", `agent's turn kept as heard: “${entry.heard}”`); break;
    case "child_restarted": marker("restart", `↻ ${entry.child} restarted (${entry.error})`); break;
    case "child_gave_up": marker("restart", `✖ ${entry.child} gave up: ${entry.policy}`); break;
    case "echo_ignored": marker("", "echo ignored"); break;
    case "dtmf": marker("", `key ${entry.digit}`); break;
    case "dtmf.sent": marker("", `keys sent: ${entry.digits}`); break;
    case "call.transferred": marker("transfer", `☎ ${entry.mode} transfer to ${entry.to}: ${entry.outcome}`); break;
    case "agent.error": marker("restart", `agent error (try ${entry.attempt}): ${entry.error}`); break;
    case "tool.called":
      marker(entry.ok ? "" : "restart", `🔧 tool ${entry.name} ${entry.ok ? "answered" : `failed (${entry.error})`} in ${fmtMs(entry.duration_ms)}`);
      break;
    case "stopped": marker("", `call ended: ${entry.reason}`); break;
    case "recording.stopped": marker("", `recording stopped: ${entry.reason}`); break;
    case "recording.ready": conv.append(recordingLink(selected.sid, entry)); break;
    case "turn": addTurn(entry); break;
    case "jitter_stats": showLine(entry); break;
    default: break;
  }
  if (entry.event !== "transcript.partial") {
    const li = el("li");
    li.append(`${fmtMs(entry.t_ms).padStart(7)} `, el("b", "", entry.event));
    const extra = Object.entries(entry).filter(([k]) => k !== "t_ms" && k !== "event");
    if (extra.length) li.append(" " + extra.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ").slice(0, 160));
    $("events").append(li);
    $("events").scrollTop = $("events").scrollHeight;
  }
  conv.scrollTop = conv.scrollHeight;
}

function recordingLink(sid, entry) {
  // RECORDING=local: the bridge's WAV (operator route); twilio: Twilio's recording URL.
  const m = el("div", "marker recording");
  if (entry.mode === "local") {
    const part = entry.part > 1 ? `?part=${entry.part}` : "";
    const href = `calls/${encodeURIComponent(sid)}/recording${part}`;
    const a = el("a", "", `recording${entry.part > 1 ? " part " + entry.part : ""} (${entry.seconds} s, stereo: caller left, agent right)`);
    a.href = href;
    a.download = entry.path;
    const player = el("audio");
    player.controls = true;
    player.preload = "none";
    player.src = href;
    m.append("● ", a, " ", player);
  } else if (typeof entry.url === "string" && entry.url.startsWith("https://")) {
    const a = el("a", "", `Twilio's recording (${entry.seconds ?? "?"} s)`);
    a.href = entry.url;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    m.append("● ", a);
  } else {
    m.append(`● recording ready (${entry.mode})`);
  }
  return m;
}

function addTurn(t) {
  const turns = $("turns");
  if (turns.querySelector("p.muted")) turns.replaceChildren();
  const total = t.voice_to_voice_ms || 1;
  const div = el("div", "turn");
  div.title = `endpoint ${t.endpoint_ms} ms · STT ${t.stt_ms} ms · agent ${t.agent_ms} ms · TTS+send ${t.tts_ms} ms`;
  div.append(el("span", "", `#${t.utterance}`));
  const bar = el("span", "bar");
  for (const [cls, ms] of [["endpoint", t.endpoint_ms], ["stt", t.stt_ms], ["agent", t.agent_ms], ["tts", t.tts_ms]]) {
    const seg = el("i", cls);
    seg.style.width = `${Math.max(0.5, (100 * ms) / total)}%`;
    bar.append(seg);
  }
  div.append(bar, el("span", "total", fmtMs(t.voice_to_voice_ms)));
  turns.append(div);
}

function showLine(s) {
  const items = [["jitter", fmtMs(s.jitter_ms)], ["loss", `${s.loss_pct ?? 0}%`], ["concealed", `${s.concealed_pct ?? 0}%`],
    ["late", s.late], ["stale", s.stale], ["stalls p95", fmtMs(s.latency_p95_ms)]];
  $("line").replaceChildren(...items.map(([k, v]) => { const e = el("span", "", `${k} `); e.append(el("b", "", String(v))); return e; }));
}

function drawWaveform() {
  const canvas = $("waveform");
  const g = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  g.clearRect(0, 0, w, h);
  const levels = selected.levels;
  const bw = w / HISTORY_TICKS;
  levels.forEach(([inDb, outDb], k) => {
    const x = w - (levels.length - k) * bw;
    const a = (pct(inDb) / 100) * (h / 2 - 2);
    const b = (pct(outDb) / 100) * (h / 2 - 2);
    g.fillStyle = "#2d6cdf"; g.fillRect(x, h / 2 - a, bw - 1, a);
    g.fillStyle = "#1f9d74"; g.fillRect(x, h / 2, bw - 1, b);
  });
}

// ---- the softphone -------------------------------------------------------------------

const phone = new Softphone({
  onState: (state, detail) => {
    $("phone-state").textContent = detail ? `${state}: ${detail}` : state;
    $("call-button").disabled = state === "starting" || state === "live";
    $("hangup-button").disabled = state !== "live";
  },
  onLevel: (inPeak, outPeak) => {
    $("mic-level").style.width = `${Math.min(100, inPeak * 140)}%`;
    $("spk-level").style.width = `${Math.min(100, outPeak * 140)}%`;
  },
  onCall: (sid) => { if (calls.has(sid)) select(sid); else pendingSelect = sid; },
});
// ---- telephony actions on the selected call (POST /calls/{sid}/transfer, /hangup) ----

async function callAction(what, body) {
  if (!selected) return;
  const sid = selected.sid;
  $("action-state").textContent = `${what}…`;
  const res = await fetch(`calls/${encodeURIComponent(sid)}/${what}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const text = (await res.text()).trim();
  if (selected && selected.sid === sid) $("action-state").textContent = res.ok ? `${what}: done` : `${what}: ${res.status} ${text.slice(0, 160)}`;
}

$("call-actions").onsubmit = (ev) => {
  ev.preventDefault();
  const to = $("transfer-to").value.trim();
  callAction("transfer", { mode: $("transfer-mode").value, ...(to ? { to } : {}) });
};
$("end-call-button").onclick = () => callAction("hangup", { reason: "the operator hung up" });
$("call-button").onclick = () => phone.start();
$("hangup-button").onclick = () => phone.hangUp();
$("mute").onchange = (e) => phone.mute(e.target.checked);
window.callbridgeSoftphone = phone; // for the end-to-end test and the curious

connect();
