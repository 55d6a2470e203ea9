// shardmq console: polls the JSON API (/api/v1/) every two seconds. No framework, no
// build step; the browser's HTTP basic login carries the credentials.
"use strict";

const api = (path, options) =>
  fetch("/api/v1/" + path, Object.assign({ credentials: "same-origin" }, options || {}));
const $ = (id) => document.getElementById(id);
let mayWrite = false;
let tab = "overview";
const history = []; // [received/s, sent/s]
let last = null;

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  row.appendChild(td);
  return td;
}

function fill(tableId, rows, columns, action) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const c of columns) cell(tr, typeof c === "function" ? c(r) : r[c]);
    if (action) {
      const td = cell(tr, "");
      const b = document.createElement("button");
      b.textContent = action.label;
      b.disabled = !mayWrite;
      b.title = mayWrite ? "" : "read-only user (http_acl write grants actions)";
      b.dataset.key = action.key(r);
      b.addEventListener("click", () => action.run(r, b));
      td.appendChild(b);
    }
    body.appendChild(tr);
  }
}

function status(text) {
  $("status").textContent = text;
}

function drawRates() {
  const c = $("rates");
  const g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const max = Math.max(1, ...history.flat());
  g.strokeStyle = "#e3e6ea";
  g.beginPath();
  for (let i = 1; i < 4; i++) {
    g.moveTo(0, (c.height * i) / 4);
    g.lineTo(c.width, (c.height * i) / 4);
  }
  g.stroke();
  g.fillStyle = "#555";
  g.fillText(max.toFixed(0) + "/s", 4, 12);
  ["#3b5bdb", "#e8590c"].forEach((color, k) => {
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    history.forEach((h, i) => {
      const x = (i / 59) * c.width;
      const y = c.height - (h[k] / max) * (c.height - 16);
      if (i === 0) g.moveTo(x, y);
      else g.lineTo(x, y);
    });
    g.stroke();
  });
}

async function overview() {
  const o = await (await api("overview")).json();
  mayWrite = o.may_write;
  $("version").textContent = o.version;
  $("uptime").textContent = "up " + o.uptime_seconds + " s";
  $("user").textContent = o.user + (o.may_write ? " (read-write)" : " (read-only)");
  const t = o.totals;
  const cards = $("totals");
  cards.replaceChildren();
  for (const [k, v] of Object.entries(t)) {
    const d = document.createElement("div");
    d.className = "card";
    const b = document.createElement("b");
    b.textContent = v;
    d.append(b, k.replace(/_/g, " "));
    cards.appendChild(d);
  }
  const now = Date.now();
  if (last) {
    const dt = (now - last.at) / 1000;
    history.push([
      Math.max(0, (t.publish_received - last.rx) / dt),
      Math.max(0, (t.publish_sent - last.tx) / dt),
    ]);
    if (history.length > 60) history.shift();
  }
  last = { at: now, rx: t.publish_received, tx: t.publish_sent };
  drawRates();
  fill("shards", o.shards, ["shard", "connections", "sessions", "subscriptions", "inflight",
    "queued", "mailbox_backlog",
    (s) => (s.loop_lag_iterations ? (s.loop_lag_sum_us / s.loop_lag_iterations).toFixed(1) : "")]);
}

async function connections() {
  const q = encodeURIComponent($("conn-search").value);
  const r = await (await api("connections?search=" + q)).json();
  fill("conns", r.connections, ["client_id", "username", "address",
    (c) => ({ 3: "3.1", 4: "3.1.1", 5: "5.0" })[c.protocol] || c.protocol,
    "keep_alive", "inflight", "queued", "bytes_out", "shard"], {
    label: "disconnect",
    key: (c) => c.client_id,
    run: async (c, b) => {
      b.disabled = true;
      const res = await api("connections/" + encodeURIComponent(c.client_id), { method: "DELETE" });
      status(res.ok ? "disconnecting " + c.client_id : "disconnect refused: " + res.status);
      setTimeout(refresh, 300);
    },
  });
}

async function subscriptions() {
  const q = encodeURIComponent($("sub-search").value);
  const r = await (await api("subscriptions?search=" + q)).json();
  fill("subs", r.subscriptions, ["filter", "client_id", "qos", "shared_group",
    (s) => (s.online ? "yes" : "no"), "shard"]);
}

async function retained() {
  const q = encodeURIComponent($("ret-search").value);
  const r = await (await api("retained?search=" + q)).json();
  fill("rets", r.retained, ["topic", "qos", "bytes", "preview"], {
    label: "delete",
    key: (m) => m.topic,
    run: async (m, b) => {
      b.disabled = true;
      const res = await api("retained/" + encodeURIComponent(m.topic), { method: "DELETE" });
      status(res.ok ? "deleting " + m.topic : "delete refused: " + res.status);
      setTimeout(refresh, 300);
    },
  });
}

async function listeners() {
  const r = await (await api("listeners")).json();
  fill("lsts", r.listeners, ["listener", "protocol", "port"]);
}

const views = { overview, connections, subscriptions, retained, listeners };

async function refresh() {
  try {
    if (tab !== "overview") await overview();
    await views[tab]();
    document.body.dataset.loaded = tab;
  } catch (e) {
    status("cannot reach the broker: " + e);
  }
}

function show(name) {
  if (!views[name]) name = "overview";
  tab = name;
  for (const s of document.querySelectorAll("main section")) s.hidden = s.id !== name;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.tab === name);
  refresh();
}

window.addEventListener("hashchange", () => show(location.hash.slice(1)));
for (const id of ["conn-search", "sub-search", "ret-search"]) $(id).addEventListener("input", refresh);
show(location.hash.slice(1));
setInterval(refresh, 2000);
