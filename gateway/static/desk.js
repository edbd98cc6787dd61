// The approvals desk page (desk.html): its own file, so the page's Content-Security-Policy
// (script-src 'self') needs no inline script.
"use strict";
(() => {
  // A long poll answers as soon as the pending set changes (the server waits up to
  // WAIT_S for it); the slow poll only covers a long poll that silently died.
  const WAIT_S = 25, FALLBACK_MS = 30000, RETRY_MS = 3000;
  const $ = (id) => document.getElementById(id);
  const list = $("list"), status = $("status");
  const cards = new Map(); // approval id -> {node, item, inputs, busy}
  let token = sessionStorage.getItem("parley:desk:token") || "";
  let timers = [], version = null, running = 0, aborter = null;

  function el(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  function setStatus(text, state) {
    status.textContent = text;
    status.dataset.state = state;
  }

  async function api(path, options = {}) {
    const response = await fetch(path, {
      signal: aborter ? aborter.signal : undefined,
      ...options,
      headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json" },
    });
    let body = {};
    try { body = await response.json(); } catch { /* an empty body */ }
    return { status: response.status, body };
  }

  function when(iso) {
    const d = new Date(iso);
    return d.toLocaleString();
  }

  function remaining(iso) {
    const ms = new Date(iso) - Date.now();
    if (ms <= 0) return "expired";
    const min = Math.floor(ms / 60000), sec = Math.floor((ms % 60000) / 1000);
    return min >= 60 ? `${Math.floor(min / 60)} h ${min % 60} min left` : `${min} min ${sec} s left`;
  }

  // One input per top-level argument the schema describes; anything else as JSON.
  function argumentFields(item) {
    const props = (item.schema && item.schema.properties) || {};
    const names = [...new Set([...Object.keys(props), ...Object.keys(item.arguments)])];
    const inputs = new Map();
    const fieldset = el("fieldset", {}, el("legend", { textContent: "Arguments (edit before approving)" }));
    for (const name of names) {
      const type = (props[name] && props[name].type) || "json";
      const value = item.arguments[name];
      const id = `arg-${item.id}-${name}`;
      const input = el("input", { id, name });
      input.dataset.arg = name;
      input.dataset.type = type;
      if (type === "boolean") { input.type = "checkbox"; input.checked = !!value; }
      else if (type === "integer" || type === "number") { input.type = "number"; input.step = type === "integer" ? "1" : "any"; input.value = value ?? ""; }
      else if (type === "string") { input.type = "text"; input.value = value ?? ""; }
      else { input.type = "text"; input.value = value === undefined ? "" : JSON.stringify(value); }
      const error = el("p", { className: "field-error", id: `${id}-error` });
      input.setAttribute("aria-describedby", error.id);
      fieldset.append(el("div", { className: "field" }, el("label", { htmlFor: id, textContent: name }), input, error));
      inputs.set(name, { input, error, type, original: value });
    }
    return { fieldset, inputs };
  }

  function readArguments(inputs) {
    const out = {};
    for (const [name, { input, type, original }] of inputs) {
      const raw = input.value;
      if (type === "boolean") out[name] = input.checked;
      else if (raw === "" && original === undefined) continue;
      else if (type === "integer" || type === "number") out[name] = raw === "" ? null : Number(raw);
      else if (type === "string") out[name] = raw;
      else { try { out[name] = JSON.parse(raw); } catch { out[name] = raw; } }
    }
    return out;
  }

  // The server shortens each excerpt message (`truncated`, with its full `length`): say so.
  function excerptLine(m) {
    const who = el("span", { className: "who", textContent: m.role === "user" ? "Visitor:" : "Agent:" });
    const cut = m.truncated ? el("span", { className: "cut", textContent: `(shortened from ${m.length.toLocaleString("en")} characters)` }) : null;
    return el("p", {}, who, m.text, cut);
  }

  function render(item) {
    const { fieldset, inputs } = argumentFields(item);
    const note = el("textarea", { id: `note-${item.id}`, rows: 2, maxLength: 2000, placeholder: "A note for the record (optional)" });
    const approve = el("button", { type: "button", className: "primary", textContent: "Approve" });
    const decline = el("button", { type: "button", textContent: "Decline" });
    const extend = el("button", { type: "button", textContent: "+15 min" });
    const outcome = el("p", { className: "outcome", role: "status" });
    const formError = el("p", { className: "field-error" });
    const deadline = el("span", { className: "deadline", textContent: remaining(item.deadline) });
    const excerpt = el("div", { className: "excerpt", ariaLabel: "Conversation excerpt" },
      ...item.excerpt.map(excerptLine));
    const requester = item.requester.name || item.requester.userId || "anonymous visitor";
    // Four eyes: the server refuses a decision on your own request; say so up front.
    const own = item.ownRequest ? el("p", { className: "own", textContent: "This is your own request: a colleague must decide or extend it." }) : null;
    const node = el("article", { className: "approval" },
      el("h2", { textContent: item.sentence }),
      el("p", { className: "meta" }, `${item.tool} · requested by ${requester} at ${when(item.requestedAt)} · `, deadline),
      excerpt, fieldset,
      el("div", { className: "field" }, el("label", { htmlFor: note.id, textContent: "Note" }), note),
      formError, own,
      el("div", { className: "actions" }, approve, decline, extend), outcome);
    node.dataset.approval = item.id;
    const card = { node, item, inputs, approve, decline, extend, outcome, formError, deadline, busy: false, done: false };
    setBusy(card, false);
    approve.onclick = () => decide(card, true);
    decline.onclick = () => decide(card, false);
    extend.onclick = () => extendCard(card);
    return card;
  }

  function edited(card) {
    const args = readArguments(card.inputs);
    return JSON.stringify(args) === JSON.stringify(card.item.arguments) ? null : args;
  }

  function setBusy(card, busy) {
    card.busy = busy;
    card.approve.disabled = card.decline.disabled = card.extend.disabled = busy || !!card.item.ownRequest;
  }

  async function decide(card, approved) {
    for (const { error } of card.inputs.values()) error.textContent = "";
    card.formError.textContent = "";
    const body = { approved };
    const args = approved ? edited(card) : null;
    if (args) body.arguments = args;
    const note = card.node.querySelector("textarea").value.trim();
    if (note) body.note = note;
    setBusy(card, true);
    let answer;
    try {
      answer = await api(`/api/approvals/${encodeURIComponent(card.item.id)}/decision`, { method: "POST", body: JSON.stringify(body) });
    } catch {
      setBusy(card, false);
      card.formError.textContent = "Could not reach the server; try again.";
      return;
    }
    if (answer.status === 200) {
      card.done = true;
      const d = answer.body;
      const text = d.decision === "approved" ? (d.edited ? "Approved with your changes." : "Approved.") : "Declined.";
      card.outcome.textContent = text;
      card.outcome.className = "outcome ok";
      const shown = Object.entries(d.arguments || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
      $("decided").append(el("p", { textContent: `${text} ${card.item.tool} (${shown})` }));
      setTimeout(() => { card.node.remove(); cards.delete(card.item.id); showEmpty(); }, 1500);
      return;
    }
    setBusy(card, false);
    if (answer.status === 422 && Array.isArray(answer.body.errors)) {
      const rest = [];
      for (const { field, message } of answer.body.errors) {
        const f = card.inputs.get(field);
        if (f) f.error.textContent = f.error.textContent ? `${f.error.textContent}; ${message}` : message;
        else rest.push(field ? `${field}: ${message}` : message);
      }
      card.formError.textContent = rest.join("; ");
      return;
    }
    if (answer.status === 409 || answer.status === 404) {
      card.done = true;
      setBusy(card, true);
      card.outcome.textContent = "Someone else decided this first (or it expired).";
      card.outcome.className = "outcome error";
      return;
    }
    card.formError.textContent = answer.body.error || `Refused (${answer.status}).`;
  }

  async function extendCard(card) {
    setBusy(card, true);
    let answer;
    try {
      answer = await api(`/api/approvals/${encodeURIComponent(card.item.id)}/extend`, { method: "POST", body: JSON.stringify({ seconds: 900 }) });
    } catch {
      setBusy(card, false);
      card.formError.textContent = "Could not reach the server; try again.";
      return;
    }
    setBusy(card, false);
    if (answer.status === 200) {
      card.item.deadline = answer.body.deadline;
      card.deadline.textContent = remaining(card.item.deadline);
    } else {
      card.formError.textContent = answer.body.error || `Refused (${answer.status}).`;
    }
  }

  function showEmpty() {
    const empty = list.querySelector(".empty");
    if (cards.size === 0 && !empty) list.append(el("p", { className: "empty", textContent: "Nothing waits for you." }));
    if (cards.size > 0 && empty) empty.remove();
  }

  // One listing: at once, or (wait) a long poll that answers when the set differs from
  // the version last seen. Returns whether to go on polling at once.
  async function refresh(wait = false) {
    const run = running;
    const query = wait && version ? `&wait=${WAIT_S}&since=${encodeURIComponent(version)}` : "";
    let answer;
    try {
      answer = await api(`/api/approvals?status=pending${query}`);
    } catch {
      if (run === running) setStatus("Offline: retrying", "error");
      return false;
    }
    if (run !== running) return false; // signed out (or in again) meanwhile
    if (answer.status !== 200) {
      setStatus(answer.body.error || `Refused (${answer.status})`, "error");
      if (answer.status === 401 || answer.status === 403) stop();
      return false;
    }
    version = answer.body.version;
    setStatus(`Signed in · ${answer.body.org} · ${answer.body.approvals.length} pending`, "online");
    const seen = new Set();
    for (const item of answer.body.approvals) {
      seen.add(item.id);
      const known = cards.get(item.id);
      if (known) { // keep what the approver typed; only the deadline moves
        known.item.deadline = item.deadline;
        continue;
      }
      const card = render(item);
      cards.set(item.id, card);
      list.append(card.node);
    }
    for (const [id, card] of cards) {
      if (!seen.has(id) && !card.done && !card.busy) { card.node.remove(); cards.delete(id); }
    }
    tick();
    showEmpty();
    return true;
  }

  function tick() {
    for (const card of cards.values()) {
      card.deadline.textContent = remaining(card.item.deadline);
      card.deadline.classList.toggle("soon", new Date(card.item.deadline) - Date.now() < 120000);
    }
  }

  function pause(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(() => { timers = timers.filter((x) => x !== t); resolve(); }, ms);
      timers.push(t);
    });
  }

  async function longPoll(run) {
    while (run === running) {
      if (!(await refresh(true)) && run === running) await pause(RETRY_MS);
    }
  }

  function stop() {
    running += 1;
    for (const t of timers) { clearInterval(t); clearTimeout(t); }
    timers = [];
    if (aborter) aborter.abort();
    aborter = null;
    version = null;
  }

  function start() {
    stop();
    aborter = new AbortController();
    longPoll(running);
    timers.push(setInterval(() => refresh(false), FALLBACK_MS), setInterval(tick, 1000));
  }

  $("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem("parley:desk:token", token);
    $("token").value = "";
    start();
  });
  $("signout").addEventListener("click", () => {
    stop();
    token = "";
    sessionStorage.removeItem("parley:desk:token");
    for (const card of cards.values()) card.node.remove();
    cards.clear();
    setStatus("Signed out", "signed-out");
  });
  if (token) start();
})();
