// Mesh Panel: one websocket, a snapshot then deltas; no libraries, works offline.
"use strict";

// hosted: peers' tasks this node runs, from the transaction log's entries that carry an
// origin_node (task_received, execution_started/completed/failed), keyed by task id.
const state = { status: null, peers: new Map(), tasks: new Map(), tx: [], resources: null, logs: new Map(), selected: null, history: [], hosted: new Map() };
const $ = (id) => document.getElementById(id);
const TX_MAX = 200, LOG_LINES_MAX = 500;

const vibe = (value) => {
  const n = Number(value || 0);
  return n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }) + " VIBE";
};
const bytes = (n) => {
  n = Number(n || 0);
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
};
const relative = (iso) => {
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 5) return "just now";
  if (seconds < 60) return Math.floor(seconds) + " s ago";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
  return Math.floor(seconds / 3600) + " h ago";
};
const duration = (s) => {
  s = Math.floor(s || 0);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
};
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };

function renderStatus() {
  const s = state.status; if (!s) return;
  $("node-id").textContent = s.node_id;
  $("peer-count").textContent = state.peers.size;
  $("uptime").textContent = duration(s.uptime_s);
  $("relay-state").textContent = s.relay;
  $("balance").textContent = vibe(s.balance);
  $("escrowed").textContent = vibe(s.escrowed);
  if (s.settlement) $("settlement").textContent = s.settlement;
  document.title = `APN ${s.node_id}`;
}

function renderPeers() {
  const body = $("peers-list");
  body.replaceChildren();
  const peers = [...state.peers.values()].sort((a, b) => a.node_id.localeCompare(b.node_id));
  for (const p of peers) {
    const row = el("tr"); row.dataset.peerId = p.peer_id;
    row.append(el("td", "mono", p.node_id));
    const path = el("td"); path.append(el("span", "pill " + p.path, p.connected ? "direct" : p.path)); row.append(path);
    row.append(el("td", "", p.latency_ms == null ? "–" : p.latency_ms.toFixed(1) + " ms"));
    row.append(el("td", "", (p.executor_profiles || []).join(", ") || "–"));
    row.append(el("td", "", (p.capabilities || []).join(", ") || "–"));
    row.append(el("td", "", bytes(p.bytes_in) + " / " + bytes(p.bytes_out)));
    const seen = el("td", "", relative(p.last_seen)); seen.title = new Date(p.last_seen).toLocaleString(); row.append(seen);
    body.append(row);
  }
  if (!peers.length) { const row = el("tr"); const cell = el("td", "empty", "No peers yet."); cell.colSpan = 7; row.append(cell); body.append(row); }
  $("peer-count").textContent = state.peers.size;
}

const TX_STYLE = {
  task_distributed: ["↗", "t-distributed", "Task distributed"], task_received: ["↘", "t-received", "Task received"],
  execution_started: ["▶", "t-started", "Execution started"], execution_completed: ["✓", "t-completed", "Execution completed"],
  execution_failed: ["✗", "t-failed", "Execution failed"], bandwidth_contributed: ["⇅", "t-contributed", "Bandwidth contributed"],
  compute_contributed: ["⚙", "t-contributed", "Compute contributed"], vibe_earned: ["+", "t-earned", "VIBE earned"], vibe_spent: ["−", "t-spent", "VIBE spent"],
};

// An entry is the seed's TransactionLog: { id, seq, timestamp, type, details, description }.
const txPeer = (d) => d.origin_node || d.peer_node || (d.executor_node && d.executor_node !== "local" ? d.executor_node : null) || d.target_node;
const txAmount = (type, d) => {
  const value = d.vibe_spent ?? d.vibe_paid ?? d.vibe_earned ?? d.reward_vibe;
  if (value == null) return "";
  const expected = (type === "task_received" || type === "execution_started") && d.vibe_earned != null;
  return (expected ? "~" : type === "vibe_spent" ? "−" : type === "vibe_earned" ? "+" : "") + vibe(value);
};
function txItem(entry) {
  const [icon, cls, label] = TX_STYLE[entry.type] || ["•", "", entry.type];
  const d = entry.details || {};
  const li = el("li", cls); li.dataset.type = entry.type; li.dataset.seq = entry.seq; li.dataset.id = entry.id;
  li.append(el("span", "tx-icon", icon), el("span", "tx-type", label));
  const peer = txPeer(d);
  const text = entry.description + (peer && !entry.description.includes(peer) ? ` · ${peer}` : "");
  const detail = el("span", "tx-detail", text); detail.title = text;
  const amount = el("span", "tx-amount", txAmount(entry.type, d));
  const time = el("span", "tx-time", relative(entry.timestamp)); time.title = new Date(entry.timestamp).toLocaleString(); time.dataset.at = entry.timestamp;
  li.append(detail, amount, time);
  return li;
}

// A run this node does for a peer, as its log entries tell it.
const HOSTED_STATUS = { task_received: "pending", execution_started: "running", execution_completed: "completed", execution_failed: "failed" };
function trackHosted(entry) {
  const d = entry.details || {};
  const status = HOSTED_STATUS[entry.type];
  if (!status || !d.origin_node || !d.task_id) return false;
  const run = state.hosted.get(d.task_id) || { id: d.task_id, created_at: entry.timestamp };
  Object.assign(run, { title: d.task_title, origin: d.origin_node, status, earning: d.vibe_earned ?? run.earning, time_ms: d.execution_time_ms ?? run.time_ms, updated_at: entry.timestamp });
  state.hosted.set(d.task_id, run);
  return true;
}

function renderTransactions() {
  const list = $("tx-log");
  list.replaceChildren(...state.tx.map(txItem));
  if (!state.tx.length) list.append(el("li", "empty", "Nothing yet: entries appear as tasks and credits move."));
}

function renderResources() {
  const r = state.resources; if (!r) return;
  const limit = r.bandwidth.limit_mbps || 1;
  $("bw-up-text").textContent = r.bandwidth.upload_mbps.toFixed(2) + " Mbps";
  $("bw-down-text").textContent = r.bandwidth.download_mbps.toFixed(2) + " Mbps";
  $("bw-up-bar").style.width = Math.min(100, r.bandwidth.upload_mbps / limit * 100) + "%";
  $("bw-down-bar").style.width = Math.min(100, r.bandwidth.download_mbps / limit * 100) + "%";
  $("compute-text").textContent = `${r.compute.active} / ${r.compute.max} · ${r.compute.completed_today} done today`;
  $("compute-bar").style.width = (r.compute.max ? r.compute.active / r.compute.max * 100 : 0) + "%";
  $("resource-totals").textContent = `today: ${bytes(r.bandwidth.bytes_out_today)} up, ${bytes(r.bandwidth.bytes_in_today)} down, ${Number(r.compute.cpu_seconds_today).toFixed(1)} cpu s given`;
  state.history = r.bandwidth.history || [];
  drawChart();
}

function drawChart() {
  const canvas = $("bw-chart"); const ctx = canvas.getContext("2d");
  const w = canvas.width = canvas.clientWidth * devicePixelRatio || 600, h = canvas.height = 120 * devicePixelRatio;
  ctx.clearRect(0, 0, w, h);
  const points = state.history; if (points.length < 2) { ctx.fillStyle = "#8b949e"; ctx.font = `${12 * devicePixelRatio}px system-ui`; ctx.fillText("collecting bandwidth samples…", 10, h / 2); return; }
  const max = Math.max(0.01, ...points.map((p) => Math.max(p.upload_mbps, p.download_mbps)));
  const line = (key, color) => {
    ctx.strokeStyle = color; ctx.lineWidth = 2 * devicePixelRatio; ctx.beginPath();
    points.forEach((p, i) => { const x = i / (points.length - 1) * w, y = h - (p[key] / max) * (h - 10) - 5; i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
    ctx.stroke();
  };
  line("upload_mbps", "#58a6ff"); line("download_mbps", "#bc8cff");
}

// "· N files" once the run has reported changed files (while it runs, from its progress
// reports; once completed, the result's); a cut report counts the files it left out.
function filesText(t) {
  const n = (t.files_modified || []).length + (t.files_omitted || 0);
  return n ? ` · ${n} file${n === 1 ? "" : "s"}` : "";
}

function hostedCard(run) {
  const card = el("div", "exec hosted " + run.status + (state.selected === run.id ? " selected" : "")); card.dataset.taskId = run.id; card.dataset.origin = run.origin;
  const head = el("div", "exec-head");
  head.append(el("span", "exec-title", run.title), el("span", "exec-meta", run.status + " here · from " + run.origin));
  const earning = run.status === "completed" ? `earns ${vibe(run.earning)} once verified` : run.status === "failed" ? "nothing earned" : `earning ~${vibe(run.earning)}`;
  const took = run.time_ms == null ? "" : ` · ${(run.time_ms / 1000).toFixed(1)} s`;
  const meta = el("div", "exec-meta", `run for a peer · ${earning}${took}`);
  const bar = el("div", "bar"); const fill = el("div", "fill"); fill.style.width = (run.status === "completed" || run.status === "failed" ? 100 : run.status === "running" ? 50 : 0) + "%"; bar.append(fill);
  card.append(head, meta, bar);
  card.onclick = () => { state.selected = run.id; renderExecutions(); renderLog(); };
  return card;
}

function renderExecutions() {
  const box = $("executions");
  // This node's own tasks and the runs it does for peers, newest first.
  const items = [...state.tasks.values()].map((t) => ({ at: t.created_at, task: t }))
    .concat([...state.hosted.values()].filter((r) => !state.tasks.has(r.id)).map((r) => ({ at: r.created_at, hosted: r })))
    .sort((a, b) => b.at.localeCompare(a.at)).slice(0, 8);
  const tasks = items.filter((i) => i.task).map((i) => i.task);
  box.replaceChildren();
  if (!items.length) { box.append(el("p", "empty", "No executions yet.")); return; }
  for (const item of items) {
    if (item.hosted) { box.append(hostedCard(item.hosted)); continue; }
    const t = item.task;
    const card = el("div", "exec " + t.status + (state.selected === t.id ? " selected" : "")); card.dataset.taskId = t.id;
    const head = el("div", "exec-head");
    head.append(el("span", "exec-title", t.title), el("span", "exec-meta", t.status + (t.assigned_node ? " on " + t.assigned_node : "")));
    const meta = el("div", "exec-meta", `${t.stage || "pending"} · ${t.progress_percent}% · reward ${vibe(t.reward)}${filesText(t)}${t.current_action ? " · " + t.current_action : ""}${t.error ? " · " + t.error : ""}`);
    const bar = el("div", "bar"); const fill = el("div", "fill"); fill.style.width = (t.status === "completed" ? 100 : t.progress_percent) + "%"; bar.append(fill);
    card.append(head, meta, bar);
    card.onclick = () => { state.selected = t.id; renderExecutions(); renderLog(); };
    box.append(card);
  }
  if (!state.selected && tasks.length) { state.selected = tasks[0].id; renderLog(); }
}

// A task's diff is not in the websocket's messages (only its size, diff_bytes): it is
// fetched when asked for, from GET /api/tasks/{id}.
const diffView = { taskId: null, text: null };
function renderLog() {
  const task = state.tasks.get(state.selected);
  const button = $("diff-button");
  const showing = diffView.taskId === state.selected && diffView.text !== null;
  button.hidden = !(task && task.diff_bytes > 0);
  if (task) button.textContent = showing ? "Show log" : `Show diff (${task.diff_bytes} B)`;
  const view = $("log-view");
  if (showing) { view.textContent = diffView.text; return; }
  const lines = state.logs.get(state.selected) || [];
  view.textContent = lines.join("\n");
  view.scrollTop = view.scrollHeight;
}
$("diff-button").onclick = async () => {
  const id = state.selected;
  if (diffView.taskId === id && diffView.text !== null) { diffView.taskId = null; diffView.text = null; renderLog(); return; }
  try {
    const response = await fetch(`/api/tasks/${encodeURIComponent(id)}`, { credentials: "same-origin" });
    const task = await response.json();
    diffView.taskId = id; diffView.text = response.ok ? (task.diff || "") : `could not fetch the diff: ${task.detail || response.status}`;
  } catch (e) { diffView.taskId = id; diffView.text = `could not fetch the diff: ${e}`; }
  renderLog();
};

function onExecution(event) {
  const task = state.tasks.get(event.task_id);
  if (event.type === "log") {
    const lines = state.logs.get(event.task_id) || [];
    lines.push((event.line.stream === "stderr" ? "! " : "") + event.line.line);
    if (lines.length > LOG_LINES_MAX) lines.splice(0, lines.length - LOG_LINES_MAX);
    state.logs.set(event.task_id, lines);
    if (state.selected === event.task_id) renderLog();
    return;
  }
  if (task && event.type === "progress") {
    task.stage = event.stage; task.progress_percent = event.percent; if (event.action) task.current_action = event.action;
    if (Array.isArray(event.files_modified)) { task.files_modified = event.files_modified; task.files_omitted = event.files_omitted || 0; }
  }
  if (task && event.type === "started") { task.status = "running"; task.assigned_node = event.executor; }
  if (task && event.type === "finished") { task.status = event.succeeded ? "completed" : "failed"; }
  renderExecutions();
}

function apply(message) {
  switch (message.type) {
    case "snapshot":
      state.status = message.status;
      state.peers = new Map(message.peers.map((p) => [p.peer_id, p]));
      state.tx = message.transactions;
      state.hosted = new Map();
      for (const entry of [...state.tx].reverse()) trackHosted(entry);
      state.resources = message.resources;
      state.tasks = new Map(message.tasks.map((t) => [t.id, t]));
      renderStatus(); renderPeers(); renderTransactions(); renderResources(); renderExecutions();
      break;
    case "refresh":
      state.status = message.status; state.resources = message.resources;
      // Only the tasks that changed since the last refresh, and the ids of those gone.
      for (const t of message.tasks) state.tasks.set(t.id, t);
      for (const id of message.removed || []) state.tasks.delete(id);
      renderStatus(); renderResources(); renderExecutions();
      if (message.tasks.some((t) => t.id === state.selected)) renderLog();
      break;
    case "peer_updated": state.peers.set(message.peer.peer_id, message.peer); renderPeers(); break;
    case "peer_removed": state.peers.delete(message.peer_id); renderPeers(); break;
    case "relay": if (state.status) { state.status.relay = message.state; renderStatus(); } break;
    case "transaction":
      state.tx.unshift(message.entry); if (state.tx.length > TX_MAX) state.tx.length = TX_MAX; renderTransactions();
      if (trackHosted(message.entry)) renderExecutions();
      break;
    case "execution": onExecution(message.event); break;
  }
}

let socket = null, backoff = 500;
function connect() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  socket = new WebSocket(url);
  socket.onopen = () => { backoff = 500; const b = $("conn-badge"); b.textContent = "ONLINE"; b.className = "badge online"; };
  socket.onmessage = (event) => { try { apply(JSON.parse(event.data)); } catch (e) { console.warn("bad message", e); } };
  socket.onclose = () => {
    const b = $("conn-badge"); b.textContent = "OFFLINE"; b.className = "badge offline";
    setTimeout(connect, backoff); backoff = Math.min(backoff * 2, 10000);
  };
}

setInterval(() => {
  for (const t of document.querySelectorAll(".tx-time")) t.textContent = relative(t.dataset.at);
  if (state.status) { state.status.uptime_s += 1; $("uptime").textContent = duration(state.status.uptime_s); }
}, 1000);
window.addEventListener("resize", drawChart);
if (document.body.dataset.login === "needed") {
  // No session cookie: the live view needs the login URL the node logs at start.
  const b = $("conn-badge"); b.textContent = "LOG IN"; b.className = "badge offline";
  b.title = "Open the URL with ?token=… that the node logged at start (apn demo prints it).";
} else {
  connect();
}
