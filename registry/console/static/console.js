// The supervision console's page: reads /api/* (same origin) and draws it.
// Every piece of data goes into the page with textContent or as an SVG attribute value,
// never as HTML; charts are inline SVG drawn here (no library, no external fetch).
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    node.setAttribute(name, String(value));
  }
  return node;
}

function showError(message) {
  const box = document.getElementById("errors");
  box.hidden = false;
  box.appendChild(el("span", message));
  box.appendChild(document.createElement("br"));
}

async function getJson(path) {
  const response = await fetch(path, {
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  const body = await response.json();
  if (!response.ok) throw new Error(path + ": " + (body.error || response.status));
  return body;
}

function day(iso) {
  return iso ? iso.slice(0, 10) : "—";
}

function fillTable(section, rows, cells, emptyText) {
  const body = document.querySelector("#" + section + " tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    const row = el("tr");
    const cell = el("td", emptyText, "empty");
    cell.colSpan = document.querySelectorAll("#" + section + " thead th").length;
    row.appendChild(cell);
    body.appendChild(row);
    return;
  }
  for (const item of rows) {
    const row = el("tr");
    for (const cell of cells(item)) {
      row.appendChild(cell instanceof Node ? wrap(cell) : el("td", cell));
    }
    body.appendChild(row);
  }
}

function wrap(node) {
  const cell = el("td");
  cell.appendChild(node);
  return cell;
}

function setField(section, field, text) {
  document.querySelector("#" + section + ' [data-field="' + field + '"]').textContent = text;
}

// ------------------------------------------------------------------ sections

function drawWhoami(me) {
  const scope = me.scope ? "province " + me.scope : "the whole federation";
  document.getElementById("whoami").textContent =
    me.name + " (" + me.role + "), seeing " + scope;
}

function drawDirectory(data) {
  fillTable("directory", data.nodes, (n) => {
    const health = el("span", n.health, "health " + n.health);
    health.title = n.health_reason;
    return [
      n.node_id,
      n.region_code,
      n.display_name,
      n.status,
      health,
      day(n.certificate_expires_at) + " (" + Math.floor(n.certificate_days_left) + " days)",
      n.last_cosigned_size === null ? "never" : "size " + n.last_cosigned_size + ", " +
        day(n.last_cosigned_at),
    ];
  }, "No nodes enrolled in this scope.");
}

function drawCheckpoint(data) {
  setField("checkpoint", "origin", data.origin);
  setField("checkpoint", "size", data.size);
  setField("checkpoint", "root_hash", data.root_hash);
  setField("checkpoint", "witnesses", String(data.cosignatures.length));
  const list = document.querySelector("#checkpoint ul.cosignatures");
  list.replaceChildren();
  for (const c of data.cosignatures) {
    list.appendChild(el("li", c.node_id + " cosigned at " + c.timestamp));
  }
}

// A grouped bar chart: one group per key, one bar per series (trades, exports); the bars
// carry their data (data-key, data-series, data-value), labels show format(value).
function barChart(figureId, points, series, format = String) {
  const figure = document.getElementById(figureId);
  figure.querySelector("svg")?.remove();
  const barWidth = 20;
  // Wide enough for a month or region label under every group.
  const groupWidth = Math.max(60, series.length * (barWidth + 4) + 12);
  const width = Math.max(260, 80 + points.length * groupWidth);
  const height = 220;
  const left = 60, bottom = 40, top = 16;
  const plot = height - bottom - top;
  const max = Math.max(1, ...points.flatMap((p) => series.map((s) => p[s])));
  const chart = svg("svg", {
    class: "chart", width, height, viewBox: "0 0 " + width + " " + height, role: "img",
    "data-points": points.length,
  });
  chart.appendChild(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plot }));
  chart.appendChild(svg("line", {
    class: "axis", x1: left, y1: top + plot, x2: width - 8, y2: top + plot,
  }));
  const maxLabel = svg("text", { x: left - 6, y: top + 4, "text-anchor": "end" });
  maxLabel.textContent = format(max);
  chart.appendChild(maxLabel);
  points.forEach((point, index) => {
    const x0 = left + 10 + index * groupWidth;
    series.forEach((name, s) => {
      const value = point[name];
      const barHeight = Math.round((value / max) * plot);
      const bar = svg("rect", {
        class: "bar " + name,
        x: x0 + s * (barWidth + 4),
        y: top + plot - barHeight,
        width: barWidth,
        height: barHeight,
        "data-key": point.key,
        "data-series": name,
        "data-value": value,
      });
      const tip = svg("title");
      tip.textContent = point.key + ": " + format(value) + " " + SERIES_NAMES[name];
      bar.appendChild(tip);
      chart.appendChild(bar);
      const label = svg("text", {
        class: "value", x: x0 + s * (barWidth + 4) + barWidth / 2,
        y: top + plot - barHeight - 3, "text-anchor": "middle",
      });
      label.textContent = format(value);
      chart.appendChild(label);
    });
    const keyLabel = svg("text", {
      x: x0 + (series.length * (barWidth + 4) - 4) / 2, y: top + plot + 16,
      "text-anchor": "middle",
    });
    keyLabel.textContent = point.key;
    chart.appendChild(keyLabel);
  });
  if (points.length === 0) {
    const none = svg("text", { x: left + 10, y: top + plot / 2 });
    none.textContent = "no trades yet";
    chart.appendChild(none);
  }
  figure.appendChild(chart);
}

const SERIES_NAMES = { trades: "trades", exports: "exports", value_fen: "traded value" };

function yuan(fen) {
  return "¥" + (fen / 100).toLocaleString("en", { maximumFractionDigits: 0 });
}

function drawStatistics(data) {
  setField("statistics", "scope", data.scope ? "Trades whose seller is in region " +
    data.scope + "*" : "Trades of every province");
  barChart("chart-month", data.by_month, ["trades", "exports"]);
  barChart("chart-region", data.by_region, ["trades", "exports"]);
  barChart("chart-grade", data.by_grade, ["trades", "exports"]);
  barChart("chart-value", data.by_month, ["value_fen"], yuan);
}

function drawFrozen(data) {
  fillTable("frozen", data.members, (m) => [
    m.credit_code, m.name, m.region_code, m.node_id, m.reason, m.actor, day(m.frozen_at),
  ], "No member is frozen.");
}

function drawOverdue(data) {
  fillTable("overdue", data.assessments, (a) => [
    a.holder, a.node_id, day(a.period_start) + " – " + day(a.period_end), a.state,
    a.assessment_id,
  ], "No risk assessment is overdue.");
}

function treeList(nodes) {
  const list = el("ul");
  for (const node of nodes) {
    const item = el("li");
    item.dataset.code = node.code;
    const label = el("span");
    label.appendChild(el("span", node.segment, "code"));
    if (node.entry) {
      label.appendChild(el("span", " " + node.entry.title_zh + " · " + node.entry.title_en));
      label.appendChild(el("span", node.entry.min_grade + ", cross-border " +
        node.entry.cross_border + (node.entry.tradable ? "" : ", not tradable"), "grade"));
    }
    if (node.children.length > 0) {
      const details = el("details");
      const summary = el("summary");
      summary.appendChild(label);
      details.appendChild(summary);
      details.appendChild(treeList(node.children));
      item.appendChild(details);
    } else {
      item.appendChild(label);
    }
    list.appendChild(item);
  }
  return list;
}

function drawCatalog(data) {
  setField("catalog", "release", "Release " + data.version + ", " + data.entries +
    " categories, published " + day(data.published_at) + " by " + data.published_by);
  document.querySelector("#catalog .tree").replaceChildren(treeList(data.tree));
}

// ------------------------------------------------------------------ start

const SECTIONS = [
  ["/api/whoami", drawWhoami],
  ["/api/directory", drawDirectory],
  ["/api/checkpoint", drawCheckpoint],
  ["/api/statistics", drawStatistics],
  ["/api/frozen", drawFrozen],
  ["/api/overdue", drawOverdue],
  ["/api/catalog", drawCatalog],
];

async function load() {
  const results = await Promise.allSettled(
    SECTIONS.map(async ([path, draw]) => draw(await getJson(path))),
  );
  for (const result of results) {
    if (result.status === "rejected") showError(String(result.reason.message || result.reason));
  }
  document.body.dataset.loaded = results.every((r) => r.status === "fulfilled") ? "ok" : "errors";
}

document.addEventListener("DOMContentLoaded", load);
