// The console's Setpoints panel: the writable points of the caller's assets
// (GET /points/writable), their shadow (GET /assets/{asset}/shadow: reported,
// desired, delta) and a write form per point (POST /points/{asset}/{parameter}/write,
// the same route as `otgate write`). A point whose role the caller lacks has its
// Write button greyed out; the server decides all the same (403, audited).

import { byId, el } from "./dom.js";

const show = (v) => String(v ?? ""); // a setpoint as written: no rounding

const WAIT_S = 10; // the write route answers with the result when it comes within this
const POLL_MS = 1000; // then the page asks GET /commands/{id} until it is final
const POLL_MAX = 120;

// Text typed in the form as the value the point gets: true/false, a number, or text.
export function parseValue(text) {
  const t = text.trim();
  if (t === "true" || t === "false") return t === "true";
  if (t !== "" && !Number.isNaN(Number(t))) return Number(t);
  return t;
}

function limits(p) {
  const parts = [];
  if (p.min !== null || p.max !== null) parts.push(`${p.min ?? "…"} … ${p.max ?? "…"}`);
  if (p.allowed) parts.push(`one of ${p.allowed.map(show).join(", ")}`);
  parts.push(`role ${p.role}`);
  return parts.join("; ");
}

function resultText(doc) {
  const rb = doc.read_back !== undefined && doc.read_back !== null ? ` (read back ${show(doc.read_back)})` : "";
  return `${doc.status}${rb}${doc.detail ? ": " + doc.detail : ""}`;
}

export class Setpoints {
  constructor(api, notice) {
    this.api = api; // (method, path, body) -> {status, doc}
    this.notice = notice;
    this.shape = ""; // the points the table shows, so a refresh keeps typed values
    this.rows = new Map(); // "asset/parameter" -> its <tr>
  }

  clear() {
    this.shape = "";
    this.rows.clear();
    byId("setpoints").tBodies[0].replaceChildren();
  }

  async load() {
    const r = await this.api("GET", "/points/writable");
    if (r.status !== 200) {
      this.notice(`setpoints: ${r.status} ${r.doc}`, true);
      return;
    }
    const points = r.doc.points;
    const shape = JSON.stringify(points);
    if (shape !== this.shape) this.build(points, shape);
    byId("setpoint-count").textContent = `(${points.length})`;
    byId("no-setpoints").hidden = points.length > 0;
    for (const asset of new Set(points.map((p) => p.asset_id))) await this.refresh(asset);
  }

  build(points, shape) {
    this.shape = shape;
    this.rows.clear();
    const tbody = byId("setpoints").tBodies[0];
    tbody.replaceChildren();
    for (const p of points) {
      const id = `${p.asset_id}/${p.parameter}`;
      const input = el("input", { type: "text", "aria-label": `value for ${id}`, placeholder: "value" });
      const write = el("button", {
        type: "button", text: "Write", "data-action": "point.write", disabled: !p.can_write,
        title: p.can_write ? `write ${id}` : `needs role ${p.role}`,
      });
      const tr = el("tr", { "data-id": id },
        el("td", { text: `${p.asset_id} / ${p.parameter}` }),
        el("td", { class: "reported" }),
        el("td", { class: "desired" }),
        el("td", { text: limits(p) }),
        el("td", {}, input, " ", write),
        el("td", { class: "result" }));
      write.addEventListener("click", () => this.write(p, input, write, tr));
      tbody.append(tr);
      this.rows.set(id, tr);
    }
  }

  async refresh(asset) {
    const r = await this.api("GET", `/assets/${encodeURIComponent(asset)}/shadow`);
    if (r.status !== 200) return;
    for (const [id, tr] of this.rows) {
      if (!id.startsWith(asset + "/")) continue;
      const param = id.slice(asset.length + 1);
      const got = r.doc.reported[param];
      const want = r.doc.desired[param];
      tr.querySelector(".reported").textContent = got ? show(got.value) : "";
      const desired = tr.querySelector(".desired");
      desired.replaceChildren(want ? `${show(want.value)} (${want.status}, ${want.by})` : "");
      if (param in r.doc.delta) desired.append(el("span", { class: "delta", text: "≠ reported" }));
      tr.dataset.delta = String(param in r.doc.delta);
    }
  }

  async write(p, input, button, tr) {
    const id = `${p.asset_id}/${p.parameter}`;
    const path = `/points/${encodeURIComponent(p.asset_id)}/${encodeURIComponent(p.parameter)}/write`;
    const cell = tr.querySelector(".result");
    button.disabled = true;
    cell.className = "result";
    cell.textContent = "sent";
    try {
      let r = await this.api("POST", path, { value: parseValue(input.value), wait_s: WAIT_S });
      for (let i = 0; r.status === 202 && i < POLL_MAX; i++) {
        cell.textContent = `${r.doc.status}…`;
        await new Promise((ok) => setTimeout(ok, POLL_MS));
        const now = await this.api("GET", `/commands/${encodeURIComponent(r.doc.request_id)}`);
        if (now.status === 200 && now.doc.final) r = now;
      }
      const doc = typeof r.doc === "object" ? r.doc : { status: String(r.status), detail: r.doc };
      cell.className = `result ${doc.status}`;
      cell.textContent = resultText(doc);
      tr.dataset.status = doc.status;
      this.notice(`write ${id}: ${resultText(doc)}`, doc.status !== "WRITTEN");
    } finally {
      button.disabled = !p.can_write;
    }
    await this.refresh(p.asset_id);
  }
}
