// Small DOM helpers of the console: elements, text formats, sparklines.

export const HISTORY = 121; // samples kept per component: two minutes at one per second

export const byId = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "indent") node.style.paddingLeft = `${8 + v * 18}px`; // CSSOM: allowed by the CSP
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids) node.append(kid);
  return node;
}

export function show(value) {
  return typeof value === "number" && !Number.isInteger(value) ? value.toPrecision(6) : String(value ?? "");
}

export function ago(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

export function sparkline(values, cls = "") {
  const w = 120, hgt = 22;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark " + cls);
  svg.setAttribute("width", w);
  svg.setAttribute("height", hgt);
  if (values.length > 1) {
    const max = Math.max(...values) || 1;
    const step = w / (HISTORY - 2);
    const x0 = w - step * (values.length - 1);
    const pts = values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(hgt - 1 - (v / max) * (hgt - 2)).toFixed(1)}`);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.append(line);
  }
  return svg;
}
