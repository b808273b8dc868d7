// otgate operator console: renders /health and the live stream, and calls the
// same operator routes as the CLI (bearer token, X-Otgate-Surface: console).
// The server decides every permission; greyed-out buttons only spare a 403.
// (An ES module: strict, deferred, run once the document is parsed.)

import { HISTORY, ago, byId, el, show, sparkline } from "./dom.js";
import { Setpoints } from "./setpoints.js";

const FEED_MAX = 100;
const RATE_KEYS = ["readings_published", "delivered_total", "consumed_total", "windows_emitted_total"];
const SHELVE_FOR = [["1 h", 3600], ["8 h", 28800], ["24 h", 86400]];

const ui = {
  token: sessionStorage.getItem("otgate.token") || "",
  who: null, // GET /whoami: name, role, can{action: bool}
  history: new Map(), // component path -> [{t, m}]
  alarms: [],
  pending: new Map(), // alarm id -> text shown until the table says it happened
  stream: null, // AbortController of the live stream
  poll: null,
  dlqAt: 0, // when the dead letters were last loaded (they refresh every DLQ_EVERY_MS)
  setpointsAt: 0, // when the setpoints were last loaded (every SETPOINTS_EVERY_MS)
};
const DLQ_EVERY_MS = 10000;
const SETPOINTS_EVERY_MS = 3000;
const DLQ_ROWS = 20; // the oldest first; the CLI and the HTTP API page through the rest

function can(action) {
  return Boolean(ui.who && ui.who.can[action]);
}

function actionButton(label, action, onclick, extra = {}) {
  const allowed = can(action) && !extra.disabled;
  const why = ui.who ? `role ${ui.who.role} cannot ${action}` : "log in first";
  return el("button", {
    type: "button", text: label, disabled: !allowed, "data-action": action,
    title: can(action) ? extra.title : why, onclick,
  });
}

async function api(method, path, body) {
  const headers = { "X-Otgate-Surface": "console" };
  if (ui.token) headers.Authorization = "Bearer " + ui.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  let doc = text;
  try { doc = JSON.parse(text); } catch (_) { /* an error text */ }
  return { status: resp.status, doc };
}

function notice(text, isError = false) {
  const box = byId("notice");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = false;
}

const setpoints = new Setpoints(api, notice);

function loadSetpoints() {
  if (!ui.who) return;
  ui.setpointsAt = Date.now();
  setpoints.load();
}

function clock(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "";
}

// -- health: tree, rates and sparklines ---------------------------------------------
// Node ids repeat down the tree (bulkhead "a" runs session "a"): a path names one node.
function* walk(nodes, depth = 0, parent = "") {
  for (const n of nodes) {
    const path = parent ? `${parent}/${n.id}` : n.id;
    yield [n, depth, path];
    yield* walk(n.children || [], depth + 1, path);
  }
}

function remember(health) {
  for (const [n, , path] of walk(health.components)) {
    const h = ui.history.get(path) || [];
    h.push({ t: health.time, m: n.metrics || {} });
    if (h.length > HISTORY) h.shift();
    ui.history.set(path, h);
  }
}

function rates(id, key) {
  const h = ui.history.get(id) || [];
  const out = [];
  for (let i = 1; i < h.length; i++) {
    const dt = h[i].t - h[i - 1].t;
    const dv = (h[i].m[key] ?? 0) - (h[i - 1].m[key] ?? 0);
    if (dt > 0) out.push(Math.max(0, dv / dt)); // a restart resets counters
  }
  return out;
}

function gauge(id, key) {
  return (ui.history.get(id) || []).map((s) => s.m[key] ?? 0);
}

function rateKey(node) {
  return RATE_KEYS.find((k) => node.metrics && k in node.metrics);
}

function renderHealth(health) {
  remember(health);
  const badge = byId("rollup");
  badge.textContent = health.status;
  badge.className = "badge " + health.status.toLowerCase();
  byId("uptime").textContent = `up ${ago(health.uptime_s).replace(" ago", "")}`;
  const tbody = byId("tree").tBodies[0];
  tbody.replaceChildren();
  for (const [n, depth, path] of walk(health.components)) {
    const key = rateKey(n);
    const series = key ? rates(path, key) : [];
    const age = n.last_error_at ? health.time - n.last_error_at : null;
    const recovered = n.last_error && n.state === "RUNNING" && age !== null && age > 10;
    const err = n.last_error ? `${n.last_error}${age !== null ? ` (${ago(age)})` : ""}` : "";
    const restart = depth === 0
      ? actionButton("Restart", "component.restart", () => restartComponent(n.id))
      : "";
    tbody.append(el("tr", { "data-id": path, "data-state": n.state },
      el("td", { indent: depth, text: n.id }),
      el("td", { text: n.kind }),
      el("td", {}, el("span", { class: `state ${n.state}`, text: n.state })),
      el("td", { text: n.pid ?? "" }),
      el("td", { text: n.restarts }),
      el("td", { text: series.length ? series[series.length - 1].toFixed(1) : "" }),
      el("td", {}, key ? sparkline(series) : ""),
      el("td", { class: "error" + (recovered ? " recovered" : ""), text: err }),
      el("td", {}, restart)));
  }
  renderSinks(health);
}

function renderSinks(health) {
  const tbody = byId("sinks").tBodies[0];
  tbody.replaceChildren();
  for (const [n, , path] of walk(health.components)) {
    if (!n.metrics || !("lag_records" in n.metrics)) continue;
    const pts = rates(path, "delivered_total");
    const lag = gauge(path, "lag_records");
    tbody.append(el("tr", { "data-id": path },
      el("td", { text: n.id }),
      el("td", { text: pts.length ? pts[pts.length - 1].toFixed(1) : "" }),
      el("td", {}, sparkline(pts)),
      el("td", { text: lag.length ? String(lag[lag.length - 1]) : "" }),
      el("td", {}, sparkline(lag, "lag"))));
  }
  byId("no-sinks").hidden = tbody.rows.length > 0;
}

async function restartComponent(id) {
  const r = await api("POST", `/components/${encodeURIComponent(id)}/restart`);
  notice(r.status === 200 ? `${id}: ${r.doc.result}` : `restart ${id}: ${r.status} ${r.doc}`, r.status !== 200);
}

// -- alarms ---------------------------------------------------------------------------
function renderAlarms(alarms, total) {
  ui.alarms = alarms;
  byId("alarm-count").textContent = total > alarms.length ? `(${alarms.length} of ${total})` : `(${total})`;
  const tbody = byId("alarms").tBodies[0];
  tbody.replaceChildren();
  for (const a of alarms) {
    const wait = ui.pending.get(a.alarm_id);
    if (wait && wait.done(a)) ui.pending.delete(a.alarm_id);
    const pending = ui.pending.get(a.alarm_id);
    const choice = el("select", { "aria-label": "shelve for", disabled: !can("alarms.shelve") },
      ...SHELVE_FOR.map(([label, s]) => el("option", { value: s, text: label })));
    tbody.append(el("tr", { "data-id": a.alarm_id, "data-state": a.state },
      el("td", {}, el("span", { class: `sev ${a.severity}`, text: a.severity })),
      el("td", { title: a.message, text: a.alarm_id }),
      el("td", { text: `${a.asset_id} / ${a.parameter}` }),
      el("td", {}, el("span", { class: `state ${a.state}`, text: a.state }),
        pending ? el("span", { class: "pending", text: pending.text }) : ""),
      el("td", { text: show(a.value) }),
      el("td", { text: a.raised_time ? clock(a.raised_time / 1e9) : "" }),
      el("td", {},
        actionButton("Ack", "alarms.ack", () => alarmAction("ack", a.alarm_id, 0, a.occurrence_id),
          { disabled: a.acked || pending }),
        " ", ...(a.state === "SHELVED"
          ? [actionButton("Unshelve", "alarms.unshelve", () => alarmAction("unshelve", a.alarm_id), { disabled: pending })]
          : [choice, " ", actionButton("Shelve", "alarms.shelve",
            () => alarmAction("shelve", a.alarm_id, Number(choice.value)), { disabled: pending })]))));
  }
}

const DONE = {
  ack: (a) => a.acked,
  shelve: (a) => a.state === "SHELVED",
  unshelve: (a) => a.state !== "SHELVED",
};

// An ack names the activation the row shows: if the alarm cleared and was raised again
// meanwhile, the evaluator refuses it instead of acknowledging an activation nobody saw.
async function alarmAction(action, id, duration, occurrence) {
  const body = { alarm_ids: [id], wait_s: 2 };
  if (duration) body.duration_s = duration;
  if (occurrence) body.occurrence_ids = { [id]: occurrence };
  const r = await api("POST", `/alarms/${action}`, body);
  if (r.status === 202) {
    // On the log, not yet applied by the evaluator: show it on the row until the table moves.
    ui.pending.set(id, { text: `${action} sent`, done: DONE[action] });
    notice(`${action} ${id}: accepted, waiting for the alarm evaluator`);
  } else if (r.status === 200) {
    const refused = Object.values(r.doc.refused || {}).join("; ");
    notice(`${action} ${id}: ${r.doc.status}${refused ? ` (${refused})` : ""}`, r.doc.status === "refused");
  } else {
    notice(`${action} ${id}: ${r.status} ${r.doc}`, true);
  }
  renderAlarms(ui.alarms, ui.alarms.length);
}

// -- dead letters ---------------------------------------------------------------------
async function loadDlq() {
  if (!ui.who) return;
  ui.dlqAt = Date.now();
  const disposition = byId("dlq-disposition").value;
  const q = new URLSearchParams({ limit: String(DLQ_ROWS) });
  if (disposition) q.set("disposition", disposition);
  const r = await api("GET", `/dlq?${q}`);
  const tbody = byId("dlq").tBodies[0];
  tbody.replaceChildren();
  if (r.status !== 200) {
    notice(`dead letters: ${r.status} ${r.doc}`, true);
    return;
  }
  const shown = r.doc.letters.length;
  byId("dlq-total").textContent = r.doc.total > shown ? `(${shown} of ${r.doc.total})` : `(${r.doc.total})`;
  for (const v of r.doc.letters) {
    const rd = v.letter.reading;
    const open = v.disposition === "PENDING";
    tbody.append(el("tr", { "data-id": v.id, "data-disposition": v.disposition },
      el("td", {}, el("a", { href: "#", text: v.id, onclick: (e) => { e.preventDefault(); showLetter(v.id); } })),
      el("td", { text: `${rd.asset_id} / ${rd.parameter}` }),
      el("td", { text: show(rd.value) }),
      el("td", { text: (v.last && v.last.reason) || v.letter.reason }),
      el("td", { text: v.disposition }),
      el("td", { text: clock(v.letter.gateway_time / 1e9) }),
      el("td", {},
        actionButton("Reprocess", "dlq.reprocess", () => dlqAction("reprocess", v.id), { disabled: !open }), " ",
        actionButton("Discard", "dlq.discard", () => dlqAction("discard", v.id), { disabled: !open }))));
  }
}

async function showLetter(id) {
  const r = await api("GET", `/dlq/${id}`);
  const pre = byId("dlq-detail");
  pre.textContent = r.status === 200 ? JSON.stringify(r.doc, null, 2) : `${r.status} ${r.doc}`;
  pre.hidden = false;
}

async function dlqAction(action, id) {
  const r = await api("POST", `/dlq/${action}`, { ids: [id] });
  if (r.status === 200) {
    const o = r.doc.outcomes[0];
    notice(`${id}: ${o.result}${o.reason ? " (" + o.reason + ")" : ""}`, o.result === "refused");
  } else {
    notice(`${action} ${id}: ${r.status} ${r.doc}`, true);
  }
  await loadDlq();
}

// -- events and logs ------------------------------------------------------------------
function addFeed(listId, entries, line) {
  const list = byId(listId);
  for (const e of entries) list.prepend(el("li", { class: e.level, "data-seq": e.seq, text: line(e) }));
  while (list.children.length > FEED_MAX) list.lastChild.remove();
}

// -- the live stream (server-sent events read with fetch, to send the token) -----------
async function follow() {
  const ctl = new AbortController();
  ui.stream = ctl;
  while (ui.stream === ctl) {
    try {
      const resp = await fetch("/console/events", {
        headers: { Authorization: "Bearer " + ui.token, "X-Otgate-Surface": "console" },
        signal: ctl.signal,
      });
      if (resp.status === 401 || resp.status === 403) {
        logout(`live stream refused: ${resp.status}`);
        return;
      }
      if (!resp.ok) throw new Error(String(resp.status));
      setLive(true);
      // A new stream starts with everything its rings hold: the lists start afresh.
      byId("events").replaceChildren();
      byId("logs").replaceChildren();
      await readEvents(resp.body);
    } catch (_) {
      if (ctl.signal.aborted) return;
    }
    setLive(false);
    await new Promise((ok) => setTimeout(ok, 2000));
  }
}

async function readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const event = (frame.match(/^event: (.*)$/m) || [])[1] || "message";
      const data = frame.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (event === "closed") notice("the gateway is stopping", true);
      else if (data) onMessage(JSON.parse(data));
    }
  }
}

function onMessage(msg) {
  renderHealth(msg.health);
  renderAlarms(msg.alarms, msg.alarms_total);
  addFeed("events", msg.events, (e) => `${clock(e.t)} ${e.kind}: ${e.message}`);
  addFeed("logs", msg.logs, (e) => `${clock(e.t)} ${e.level} ${e.message}`);
  if (Date.now() - ui.dlqAt > DLQ_EVERY_MS) loadDlq();
  if (Date.now() - ui.setpointsAt > SETPOINTS_EVERY_MS) loadSetpoints();
}

function setLive(on) {
  const live = byId("live");
  live.textContent = on ? "live" : "not live";
  live.className = "live " + (on ? "on" : "off");
}

// -- login ----------------------------------------------------------------------------
async function login(token) {
  ui.token = token;
  const r = await api("GET", "/whoami");
  if (r.status !== 200) {
    logout(`token refused: ${r.status}`);
    return;
  }
  ui.who = r.doc;
  sessionStorage.setItem("otgate.token", token);
  byId("who-name").textContent = r.doc.name;
  byId("who-role").textContent = r.doc.role;
  byId("who").hidden = false;
  byId("login").hidden = true;
  document.body.classList.add("logged-in");
  clearInterval(ui.poll);
  follow();
  loadDlq();
  loadSetpoints();
}

function logout(why) {
  if (ui.stream) ui.stream.abort();
  ui.stream = null;
  ui.token = "";
  ui.who = null;
  ui.pending.clear();
  setpoints.clear();
  sessionStorage.removeItem("otgate.token");
  byId("who").hidden = true;
  byId("login").hidden = false;
  document.body.classList.remove("logged-in");
  setLive(false);
  if (why) notice(why, true);
  pollHealth();
}

// Before login the page still shows the tree: /health needs no token.
function pollHealth() {
  const once = async () => {
    const r = await api("GET", "/health");
    if (r.status === 200 || r.status === 503) renderHealth(r.doc);
  };
  once();
  clearInterval(ui.poll);
  ui.poll = setInterval(once, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  byId("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = byId("token");
    login(input.value.trim());
    input.value = "";
  });
  byId("logout").addEventListener("click", () => logout(""));
  byId("dlq-refresh").addEventListener("click", loadDlq);
  byId("dlq-disposition").addEventListener("change", loadDlq);
  if (ui.token) login(ui.token);
  else pollHealth();
});
