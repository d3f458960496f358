// Small hand-written charts for the pages (/ and /ops): one card per metric, an SVG area
// sparkline of its last values, the latest value as text and the range shown. No library, no
// canvas: SVG scales with the card and is read by assistive technology through its aria-label.

const SVG_NS = "http://www.w3.org/2000/svg";
export const HISTORY = 120; // points kept per metric, unless the card is given `history`
const WIDTH = 120; // viewBox units; the SVG stretches to the card (preserveAspectRatio none)
const HEIGHT = 40;

/** A number for display: at most 4 significant digits after the point, no exponent for
 * everyday magnitudes. */
export function formatValue(value) {
  const abs = Math.abs(value);
  if (abs !== 0 && (abs >= 1e9 || abs < 1e-3)) return value.toExponential(2);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  return value.toLocaleString("en", { maximumFractionDigits: abs >= 100 ? 1 : 2 });
}

function svg(name, attrs) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

/** One metric: its history and its card. `draw()` repaints from the history.
 * Options: `title` (the heading; default the subject), `label` (what the chart's aria-label
 * names; default the subject), `id` (unique in the page; default from the subject), `history`
 * (points kept; default HISTORY), `format` (value -> text; default formatValue), `level` (of
 * its heading, 2..6; default 3). */
export class MetricCard {
  constructor(subject, options = {}) {
    this.subject = subject;
    this.label = options.label ?? subject;
    this.history = options.history ?? HISTORY;
    this.format = options.format ?? formatValue;
    this.values = []; // newest last, at most this.history
    this.unit = "";
    this.lastId = "";

    this.el = document.createElement("article");
    this.el.className = "metric";
    this.el.dataset.subject = subject;
    const headingId = `metric-${(options.id ?? subject).replace(/[^A-Za-z0-9_-]/g, "_")}`;
    this.el.setAttribute("aria-labelledby", headingId);

    const level = Math.min(6, Math.max(2, options.level ?? 3));
    const head = document.createElement(`h${level}`);
    head.id = headingId;
    head.textContent = options.title ?? subject;
    this.valueEl = document.createElement("p");
    this.valueEl.className = "metric-value";
    this.rangeEl = document.createElement("p");
    this.rangeEl.className = "metric-range";

    this.svg = svg("svg", {
      class: "spark",
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      preserveAspectRatio: "none",
      role: "img",
    });
    this.area = svg("path", { class: "spark-area" });
    this.line = svg("polyline", { class: "spark-line", "vector-effect": "non-scaling-stroke" });
    this.svg.append(this.area, this.line);
    this.el.append(head, this.valueEl, this.svg, this.rangeEl);
  }

  push(value, unit) {
    this.values.push(value);
    if (this.values.length > this.history) this.values.splice(0, this.values.length - this.history);
    if (unit) this.unit = unit;
  }

  get latest() {
    return this.values.at(-1);
  }

  draw() {
    const vs = this.values;
    if (vs.length === 0) return;
    let min = Math.min(...vs);
    let max = Math.max(...vs);
    const unit = this.unit ? ` ${this.unit}` : "";
    const f = this.format;
    this.valueEl.textContent = `${f(this.latest)}${unit}`;
    this.rangeEl.textContent = `min ${f(min)} · max ${f(max)}`;
    this.svg.setAttribute(
      "aria-label",
      `${this.label}: ${vs.length} value${vs.length === 1 ? "" : "s"}, ` +
        `from ${f(min)} to ${f(max)}, latest ${f(this.latest)}${unit}`,
    );
    if (min === max) {
      min -= 1; // a flat line in the middle
      max += 1;
    }
    // The x axis is the order of arrival, oldest at the left edge, newest at the right.
    const step = WIDTH / Math.max(vs.length - 1, 1);
    const pad = 2; // keep the stroke inside the box
    const y = (v) => pad + (HEIGHT - 2 * pad) * (1 - (v - min) / (max - min));
    const points = vs.map((v, i) => `${(i * step).toFixed(2)},${y(v).toFixed(2)}`);
    if (points.length === 1) points.push(`${WIDTH},${y(vs[0]).toFixed(2)}`); // a flat line
    this.line.setAttribute("points", points.join(" "));
    this.area.setAttribute("d", `M0,${HEIGHT} L${points.join(" L")} L${WIDTH},${HEIGHT} Z`);
  }
}

/**
 * The view kept in `views` under `key`, made by `make(key)` and put into `container` in key
 * order when it is new; null once `max` views exist (a hostile feed of endless new subjects or
 * nodes must not grow the page without bound). `empty`, the "nothing yet" note, is hidden by
 * the first view. A view has an `el`.
 */
export function sortedView(views, key, { max, make, container, empty }) {
  let view = views.get(key);
  if (view || views.size >= max) return view ?? null;
  view = make(key);
  views.set(key, view);
  // Before the first view whose key sorts after it.
  let after = null;
  for (const [k, v] of views) if (k > key && (after === null || k < after[0])) after = [k, v];
  container.insertBefore(view.el, after ? after[1].el : null);
  empty.hidden = true;
  return view;
}
