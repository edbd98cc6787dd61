// The chat: one module behind the full page at `/` and the widget `/widget.js` embeds.
//
//   import { mountChat } from "https://<parley>/static/chat.js";
//   mountChat(element, { base: "https://<parley>/", agentId: "...", mode: "widget" });
//
// It speaks the smooth-operator protocol (shared/PROTOCOL.md) over `${base}ws`: sessions kept
// in localStorage (a reload or reconnect resumes the conversation and re-attaches to a turn
// that is still running, or just finished), streamed replies rendered as safe Markdown,
// tools under customer-facing labels, approval and question cards, sources, friendly errors
// with Retry. Everything from the model or the visitor enters the page as text, never HTML.

import { ApprovalCard, InteractionCard, decisionCard } from "./cards.js";
import { Connection, newId } from "./client.js";
import { h, icon, ICONS, pretty } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

const STYLESHEET = new URL("./chat.css", import.meta.url).href;
const SUPPORTS = ["identity_form", "choice_chips"];
const RAISE_TOOLS = new Set(["request_identity_intake", "request_choices"]);
const DEFAULT_GREETING = "Hi! How can I help you today?";
const MAX_PARTIALS = 20;

// What a visitor reads for each error code (the code and the server's words only in debug).
const FRIENDLY = {
  TURN_IN_PROGRESS: "I'm still answering your previous message. Send this one when I'm done.",
  RATE_LIMITED: "You're sending messages faster than I can answer. Please wait a moment, then try again.",
  BUDGET_EXCEEDED: "I can't answer right now. Please try again later.",
  LLM_UNAVAILABLE: "I can't answer right now. Please try again later.",
  AGENT_ERROR: "Sorry, something went wrong while I was answering.",
  STORAGE_ERROR: "Sorry, something went wrong on our side.",
  INTERNAL_ERROR: "Sorry, something went wrong on our side.",
  VALIDATION_ERROR: "That message couldn't be sent.",
  SKILL_NOT_FOUND: "That message couldn't be sent.",
  SESSION_NOT_FOUND: "Your chat session had expired, so I started a new one. Please send your message again.",
  ORIGIN_NOT_ALLOWED: "This chat isn't available on this site.",
  AGENT_NOT_AUTHORIZED: "This chat isn't available on this site.",
  AUTH_CONTEXT_INVALID: "We couldn't confirm that you're signed in.",
  DISCONNECTED: "Not sent: the connection dropped.",
};
const UNAVAILABLE = new Set(["ORIGIN_NOT_ALLOWED", "AGENT_NOT_AUTHORIZED"]);
// What an agent id may be (the gateway's rule): any other names no chat, so none starts.
const AGENT_ID = /^[\w.:-]{1,128}$/;
const NO_SUCH_CHAT = "This chat isn't available.";
// Errors that answer a card's submit_interaction (it carries the turn's requestId), not the turn.
const SUBMISSION_ERRORS = new Set(["NO_PENDING_INTERACTION", "INTERACTION_MISMATCH", "VALIDATION_ERROR",
  "SESSION_NOT_FOUND", "RATE_LIMITED", "INTERNAL_ERROR"]);
const STATUS_TEXT = {
  connecting: "Connecting…",
  online: "Online",
  offline: "Reconnecting…",
  idle: "Paused while you're away",
  unavailable: "Unavailable",
  refused: "Not connected",
};
// What a visitor reads when the server keeps turning the connection down: with a token,
// the token (expired, or not valid); without one, a server that wants one, or too many
// connections from this address.
const REFUSED_SIGNED_IN = "You need to sign in again to chat. Sign in, then press Retry.";
const REFUSED = "The chat couldn't connect. Please try again later.";

/**
 * Mount the chat into `container` (an element, typically inside a shadow root).
 *
 * options: `base` (the Parley server's URL, default: this module's), `agentId`, `mode`
 * ("page" | "widget"), `debug` (show tool names, arguments, results and error codes),
 * `authContext` (an async function returning `{userId, signature, timestamp}` or null),
 * `token` (the visitor's JWT, or a function returning it or a Promise of it; null: signed
 * out. Asked before every (re)connect, sent as `?token=` on the socket's URL only),
 * `profile` (a promise of the agent's widget profile, else fetched), `heartbeat`
 * ({interval, timeout} in ms), `onClose` (the widget's close button and Escape),
 * `onReply` (a reply finished). Returns the chat, with `focus()`.
 */
export function mountChat(container, options) {
  return new Chat(container, options);
}

function friendly(code, message, debug) {
  const text = FRIENDLY[code] || "Sorry, something went wrong.";
  return debug && code ? `${text} [${code}: ${message}]` : text;
}

class Store {
  constructor(prefix) {
    this.prefix = prefix;
  }

  get(name) {
    try { return localStorage.getItem(this.prefix + name); } catch { return null; }
  }

  set(name, value) {
    try {
      if (value === null || value === undefined) localStorage.removeItem(this.prefix + name);
      else localStorage.setItem(this.prefix + name, value);
    } catch { /* storage disabled: the chat still works, without resuming */ }
  }

  getJSON(name) {
    try { return JSON.parse(this.get(name) || "null"); } catch { return null; }
  }

  setJSON(name, value) {
    this.set(name, value === null ? null : JSON.stringify(value));
  }
}

class Chat {
  constructor(container, options) {
    this.opts = options;
    this.mode = options.mode || "page";
    this.debug = !!options.debug;
    this.base = new URL(options.base || new URL("..", import.meta.url).href);
    this.agentId = options.agentId;
    this.store = new Store(`parley:${this.agentId}:`);
    this.fingerprint = this.store.get("browser") || newId();
    this.store.set("browser", this.fingerprint);
    this.agentName = "Assistant";
    this.labels = {};
    this.sessionId = null;
    this.ready = false;
    this.turns = new Map(); // requestId -> Turn
    this.active = null; // the session's running turn, as this page knows it
    this.ignored = new Set(); // turns of a conversation the visitor left
    this.knownIds = new Set(); // message ids on screen (history, finished replies)
    this.resuming = null; // {step, requestId, question} while re-attaching after a (re)connect
    this.olderCursor = null;
    this.unavailable = false;
    this.build(container);
    const valid = AGENT_ID.test(this.agentId || "");
    // Labels are needed before the history shows.
    this.profileLoaded = valid ? this.loadProfile() : Promise.resolve();
    this.signedIn = false; // the last connection attempt carried a token
    this.conn = new Connection({
      url: () => this.socketUrl(),
      health: new URL("healthz", this.base).href,
      heartbeat: options.heartbeat,
      onOpen: (generation) => this.start(generation),
      onEvent: (event) => this.handle(event),
      onState: (state) => this.connectionState(state),
    });
    if (valid) {
      this.conn.start();
    } else { // nothing to connect to: say so, rather than "Connecting…" and a failed start
      this.conn.close();
      this.showUnavailable(NO_SUCH_CHAT, "its id is not valid");
    }
  }

  // ------------------------------------------------------------------------------ layout

  build(container) {
    const rootNode = container.getRootNode();
    const styled = rootNode.querySelector?.("link[data-parley-css]");
    this.root = h("div", { className: "parley", attrs: { "data-mode": this.mode, "data-debug": this.debug || null } });
    this.shown = Promise.resolve();
    if (!styled) {
      // Shown once its styles are in (no flash of an unstyled chat).
      this.root.hidden = true;
      const link = h("link", { rel: "stylesheet", href: STYLESHEET, attrs: { "data-parley-css": "" } });
      this.shown = new Promise((resolve) => {
        const show = () => { this.root.hidden = false; resolve(); };
        link.addEventListener("load", show);
        link.addEventListener("error", show);
      });
      container.append(link);
    }
    this.avatar = h("span", { className: "avatar", attrs: { "aria-hidden": "true" } });
    this.nameEl = h("h2", { className: "name", textContent: this.agentName });
    this.statusEl = h("p", { className: "status", attrs: { "data-state": "connecting" }, textContent: STATUS_TEXT.connecting });
    this.avatar.textContent = "A";
    const newChat = this.newChatButton = h("button", { type: "button", className: "icon-button new-chat", title: "New conversation",
      attrs: { "aria-label": "Start a new conversation" }, on: { click: () => this.newConversation() } }, icon(ICONS.plus));
    const close = this.mode === "widget"
      ? h("button", { type: "button", className: "icon-button close", title: "Close",
        attrs: { "aria-label": "Close chat" }, on: { click: () => this.opts.onClose?.() } }, icon(ICONS.close))
      : null;
    const header = h("header", { className: "head" }, this.avatar,
      h("div", { className: "head-text" }, this.nameEl, this.statusEl), newChat, close);

    this.bannerText = h("span");
    this.bannerButton = h("button", { type: "button", textContent: "Retry now", on: { click: () => this.conn.reconnectNow() } });
    this.banner = h("div", { className: "banner", attrs: { role: "status" } }, this.bannerText, this.bannerButton);
    this.banner.hidden = true;

    this.older = h("button", { type: "button", className: "older", textContent: "Load earlier messages",
      on: { click: () => this.loadOlder() } });
    this.older.hidden = true;
    this.greetingEl = h("div", { className: "bubble md" });
    this.starters = h("div", { className: "starters", attrs: { role: "group", "aria-label": "Suggested questions" } });
    this.welcome = h("div", { className: "welcome" },
      h("div", { className: "msg out" }, h("span", { className: "sr-only", textContent: "Assistant:" }), this.greetingEl),
      this.starters);
    this.thread = h("div", { className: "thread" });
    this.log = h("div", { className: "log", tabIndex: 0, attrs: { role: "region", "aria-label": "Conversation" },
      on: { scroll: () => this.onScroll() } }, this.older, this.welcome, this.thread);
    this.jump = h("button", { type: "button", className: "jump", on: { click: () => this.scrollToEnd(true) } },
      icon(ICONS.down), "Jump to latest");
    this.jump.hidden = true;

    this.alertText = h("span", { className: "alert-text" });
    this.alertRetry = h("button", { type: "button", className: "alert-retry", textContent: "Retry",
      on: { click: () => this.retryAlert() } });
    this.alertClose = h("button", { type: "button", className: "icon-button", title: "Dismiss",
      attrs: { "aria-label": "Dismiss" }, on: { click: () => this.clearAlert(true) } }, icon(ICONS.close));
    this.alert = h("div", { className: "alert", attrs: { role: "alert" } }, this.alertText, this.alertRetry, this.alertClose);
    this.alert.hidden = true;

    this.input = h("textarea", { className: "input", rows: 1, maxLength: 10000, placeholder: "Type your message…",
      attrs: { "aria-label": "Message", enterkeyhint: "send" },
      on: { input: () => this.composerChanged(), keydown: (e) => this.composerKey(e) } });
    this.sendButton = h("button", { type: "submit", className: "send primary", disabled: true,
      attrs: { "aria-label": "Send" }, title: "Send (Enter)" }, icon(ICONS.send));
    this.stopButton = h("button", { type: "button", className: "stop",
      attrs: { "aria-label": "Stop the reply" }, title: "Stop (Esc)", on: { click: () => this.stop() } }, icon(ICONS.stop), "Stop");
    this.stopButton.hidden = true;
    this.composer = h("form", { className: "composer", on: { submit: (e) => { e.preventDefault(); this.sendFromComposer(); } } },
      this.input, this.sendButton, this.stopButton);
    this.hint = h("p", { className: "composer-hint", textContent: "Enter to send · Shift+Enter for a new line" });

    this.politeRegion = h("div", { className: "sr-only", attrs: { "aria-live": "polite", "aria-atomic": "true" } });
    this.root.append(header, this.banner, this.log, this.jump, this.alert, this.composer, this.hint, this.politeRegion);
    this.root.addEventListener("keydown", (event) => this.rootKey(event));
    container.append(this.root);
    this.showGreeting(DEFAULT_GREETING, []);
  }

  async loadProfile() {
    let profile = null;
    try {
      profile = await (this.opts.profile || fetchProfile(this.base, this.agentId));
    } catch { /* no profile: defaults */ }
    if (!profile) return;
    this.labels = profile.toolLabels || {};
    if (profile.name) this.setName(profile.name);
    if (profile.accent) applyAccent(this.root, profile.accent);
    this.showGreeting(profile.greeting || DEFAULT_GREETING, profile.starters || []);
  }

  setName(name) {
    this.agentName = name;
    this.nameEl.textContent = name;
    this.avatar.textContent = (name.trim()[0] || "?").toUpperCase();
    if (this.mode === "page") document.title = name;
  }

  showGreeting(greeting, starters) {
    this.greetingEl.replaceChildren(renderMarkdown(greeting));
    this.starters.replaceChildren(...starters.map((text) =>
      h("button", { type: "button", className: "starter", textContent: text, on: { click: () => this.send(text) } })));
    this.updateComposer();
  }

  focus() {
    this.shown.then(() => this.input.focus());
  }

  announce(text) {
    this.politeRegion.textContent = "";
    setTimeout(() => { this.politeRegion.textContent = text; }, 50);
  }

  /** The socket's URL, with the visitor's token when the host page gives one. */
  async socketUrl() {
    const url = new URL("ws", this.base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const token = await this.token();
    this.signedIn = !!token;
    if (token) url.searchParams.set("token", token);
    return url.href;
  }

  async token() {
    const hook = this.opts.token;
    try {
      const token = await (typeof hook === "function" ? hook() : hook);
      return typeof token === "string" && token.trim() ? token.trim() : null;
    } catch (err) {
      console.warn("Parley: the token hook failed; connecting signed out.", err);
      return null;
    }
  }

  connectionState(state) {
    if (this.unavailable) return;
    if (state !== "online") this.ready = false;
    if (state === "online") this.wasOnline = true;
    // Once connected, every attempt until the next success is a reconnection.
    const shown = state === "connecting" && this.wasOnline ? "offline" : state;
    // No network at all (the browser says so): nothing to retry until it is back.
    const noNetwork = shown === "offline" && navigator.onLine === false;
    this.statusEl.dataset.state = shown;
    this.statusEl.textContent = noNetwork ? "Offline" : STATUS_TEXT[shown] || shown;
    this.banner.hidden = shown !== "offline";
    this.bannerText.textContent = noNetwork
      ? "You're offline. The chat reconnects when your network is back."
      : "Connection lost. Reconnecting…";
    if (state === "refused") this.showAlert(this.signedIn ? REFUSED_SIGNED_IN : REFUSED, "start");
    this.updateComposer();
  }

  // ------------------------------------------------------------------------------ scrolling

  atBottom() {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 60;
  }

  /** Apply a change, keeping the view at the end if it was there; else offer to jump. */
  follow(change) {
    const pinned = this.atBottom();
    change();
    if (pinned) this.log.scrollTop = this.log.scrollHeight;
    else this.jump.hidden = false;
  }

  scrollToEnd(focus = false) {
    this.log.scrollTop = this.log.scrollHeight;
    this.jump.hidden = true;
    if (focus) this.input.focus();
  }

  onScroll() {
    if (this.atBottom()) this.jump.hidden = true;
  }

  // ------------------------------------------------------------------------------ session

  /** On every (re)connect: find or create the session, show the conversation, and
   *  re-attach to a turn that is still running or has just finished. */
  async start(generation) {
    const current = () => generation === this.conn.generation;
    let session;
    try {
      session = await this.session();
    } catch (err) {
      if (!current() || err.code === "DISCONNECTED") return;
      this.startFailed(err);
      return;
    }
    if (!current()) return;
    this.sessionId = session.sessionId;
    this.store.set("sessionId", session.sessionId);
    this.store.set("conversationId", session.conversationId);
    if (session.agentName && this.agentName === "Assistant") this.setName(session.agentName);
    let history;
    try {
      history = await this.history();
    } catch (err) {
      if (!current() || err.code === "DISCONNECTED") return;
      this.startFailed(err);
      return;
    }
    await this.profileLoaded;
    if (!current()) return;
    this.render(history);
    this.ready = true;
    this.conn.established();
    this.clearAlert(false, "start");
    this.updateComposer();
    this.resume(history.messages);
  }

  async session() {
    const auth = await this.authContext();
    const known = this.store.get("userId");
    if ((auth?.userId || null) !== known) { // another visitor signed in (or out) here
      this.forgetConversation();
      this.store.set("userId", auth?.userId || null);
    }
    const saved = this.store.get("sessionId");
    if (saved) {
      try {
        const reply = await this.conn.request({ action: "get_session", sessionId: saved });
        if (reply.data.agentId === this.agentId && reply.data.status !== "ended") return reply.data;
      } catch (err) {
        if (err.code !== "SESSION_NOT_FOUND") throw err;
      }
    }
    const frame = { action: "create_conversation_session", agentId: this.agentId,
      browserFingerprint: this.fingerprint, supports: SUPPORTS };
    const conversationId = this.store.get("conversationId");
    if (conversationId) frame.conversationId = conversationId;
    if (auth) frame.authContext = auth;
    return (await this.conn.request(frame)).data;
  }

  async authContext() {
    if (typeof this.opts.authContext !== "function") return null;
    try {
      const auth = await this.opts.authContext();
      if (auth && typeof auth.userId === "string" && typeof auth.signature === "string"
          && Number.isInteger(auth.timestamp)) {
        return { userId: auth.userId, signature: auth.signature, timestamp: auth.timestamp };
      }
    } catch (err) {
      console.warn("Parley: the authContext hook failed; continuing signed out.", err);
    }
    return null;
  }

  startFailed(err) {
    if (UNAVAILABLE.has(err.code)) {
      this.showUnavailable(friendly(err.code, err.message, this.debug),
        `it may not be embedded on ${location.origin} (${err.code})`);
      return;
    }
    this.showAlert(err.code === "AUTH_CONTEXT_INVALID"
      ? `${friendly(err.code, err.message, this.debug)} Retry, or reload the page.`
      : `${friendly(err.code, err.message, this.debug)} The chat couldn't start.`, "start");
  }

  /** No chat here, for good: `text` instead of the conversation, nothing to type into. */
  showUnavailable(text, why) {
    this.unavailable = true;
    this.statusEl.dataset.state = "unavailable";
    this.statusEl.textContent = STATUS_TEXT.unavailable;
    this.banner.hidden = true;
    this.thread.replaceChildren(h("p", { className: "unavailable", attrs: { role: "alert" }, textContent: text }));
    this.starters.replaceChildren();
    this.welcome.hidden = true;
    this.composer.hidden = this.hint.hidden = this.newChatButton.hidden = true;
    console.warn(`Parley: agent ${String(this.agentId).slice(0, 140)} has no chat here: ${why}.`);
  }

  async history(cursor) {
    const frame = { action: "get_conversation_messages", sessionId: this.sessionId, limit: 50 };
    if (cursor) frame.cursor = cursor;
    return (await this.conn.request(frame)).data;
  }

  render(page) {
    this.turns.clear();
    this.active = null;
    this.knownIds.clear();
    this.claimStopped(page.messages);
    const pinned = this.atBottom() || !this.thread.childElementCount;
    const messages = page.messages.slice().reverse();
    this.thread.replaceChildren(...messages.map((m) => this.historyEl(m)));
    this.olderCursor = page.hasMore ? page.nextCursor : null;
    this.older.hidden = !this.olderCursor;
    this.welcome.hidden = !!this.olderCursor;
    this.updateComposer();
    if (pinned) this.scrollToEnd();
  }

  async loadOlder() {
    this.older.disabled = true;
    try {
      const page = await this.history(this.olderCursor);
      const before = this.log.scrollHeight;
      this.thread.prepend(...page.messages.slice().reverse().map((m) => this.historyEl(m)));
      this.log.scrollTop += this.log.scrollHeight - before;
      this.olderCursor = page.hasMore ? page.nextCursor : null;
      this.older.hidden = !this.olderCursor;
      this.welcome.hidden = !!this.olderCursor;
    } catch (err) {
      this.showAlert("Couldn't load earlier messages.", "older");
    } finally {
      this.older.disabled = false;
    }
  }

  /** After the history: the question this browser sent last, if its answer is not there,
   *  is re-attached by its requestId (running, or finished within the linger); a question
   *  from elsewhere without an answer, by the session's running turn. */
  resume(messages) {
    this.resuming = null;
    this.attach(messages);
    this.updateComposer();
  }

  attach(messages) {
    const pending = this.store.getJSON("pending");
    const last = messages[0]; // newest first
    const unanswered = last && last.direction === "inbound";
    if (pending) {
      const asked = messages.findIndex((m) => m.direction === "inbound" && m.content.text === pending.text);
      if (asked > 0) { // something follows it: answered already, nothing to resume
        this.store.setJSON("pending", null);
      } else {
        this.resuming = { step: "request", requestId: pending.requestId, question: pending.text, stored: asked === 0 };
        this.conn.send({ action: "resume_turn", sessionId: this.sessionId, requestId: pending.requestId });
        return;
      }
    }
    if (unanswered) {
      this.resuming = { step: "session", question: last.content.text, stored: true };
      this.conn.send({ action: "resume_turn", sessionId: this.sessionId });
    }
  }

  /** `NO_ACTIVE_TURN`: nothing to re-attach to. The answer may have been stored since the
   *  history was read: read it again. A question never stored goes back in the composer. */
  async notResumed() {
    const resuming = this.resuming;
    this.resuming = null;
    if (!resuming) return;
    if (resuming.step === "request" && resuming.stored) {
      this.resuming = { ...resuming, step: "session" };
      this.conn.send({ action: "resume_turn", sessionId: this.sessionId });
      return;
    }
    const page = await this.currentPage();
    if (!page) return;
    this.render(page);
    const pending = this.store.getJSON("pending");
    this.store.setJSON("pending", null);
    const stored = page.messages.some((m) => m.direction === "inbound" && m.content.text === resuming.question);
    if (!stored && pending) {
      if (!this.input.value.trim()) this.setComposer(pending.text);
      this.showAlert("Your last message didn't reach us. It's back in the message box.", "composer");
    } else if (page.messages[0]?.direction === "inbound") {
      this.thread.lastElementChild?.append(h("p", { className: "note", textContent: "No reply was recorded for this message." }),
        h("button", { type: "button", className: "link-button", textContent: "Ask again",
          on: { click: () => this.send(resuming.question) } }));
    }
  }

  /** Show the conversation as the server has it now, and attach to its running turn. */
  async resync() {
    const page = await this.currentPage();
    if (!page) return;
    this.render(page);
    this.resume(page.messages);
  }

  /** The history as the server has it now; null when reading it failed or the socket was
   *  replaced meanwhile (the new one reads its own). */
  async currentPage() {
    const generation = this.conn.generation;
    try {
      const page = await this.history();
      return generation === this.conn.generation ? page : null;
    } catch {
      return null;
    }
  }

  forgetConversation() {
    for (const id of this.turns.keys()) this.ignored.add(id);
    this.store.set("sessionId", null);
    this.store.set("conversationId", null);
    this.store.setJSON("pending", null);
  }

  newConversation() {
    this.forgetConversation();
    this.ready = false;
    this.thread.replaceChildren();
    this.turns.clear();
    this.active = null;
    this.clearAlert(true);
    this.welcome.hidden = false;
    this.older.hidden = true;
    this.updateComposer();
    if (this.conn.open) this.start(this.conn.generation);
    else this.conn.reconnectNow();
    this.input.focus();
  }

  // ------------------------------------------------------------------------------ history

  userEl(text, createdAt) {
    const box = h("div", { className: "msg in" },
      h("span", { className: "sr-only", textContent: "You:" }),
      h("div", { className: "bubble", textContent: text }));
    if (createdAt) box.title = new Date(createdAt).toLocaleString();
    return box;
  }

  agentBox() {
    const parts = h("div", { className: "parts" });
    const box = h("div", { className: "msg out" }, h("span", { className: "sr-only", textContent: `${this.agentName}:` }), parts);
    box.parts = parts;
    return box;
  }

  // A message of the history. An agent reply's structuredResponse says what the turn did:
  // its tools and their results, the decisions, its sources, a hand-off to a person, and
  // whether it was stopped or failed (then its text is only a notice).
  historyEl(m) {
    if (m.id) this.knownIds.add(m.id);
    if (m.direction === "inbound") return this.userEl(m.content.text, m.createdAt);
    const record = m.content.structuredResponse || null;
    const box = this.agentBox();
    if (m.id) box.dataset.messageId = m.id;
    if (m.createdAt) box.title = new Date(m.createdAt).toLocaleString();
    const status = record?.status;
    const cut = status === "cancelled" || status === "failed";
    const partial = cut && status === "cancelled" ? this.partials()[m.id] : null;
    const text = cut ? partial : m.content.text;
    const bubble = (t) => { if (t) box.parts.append(h("div", { className: "bubble md" }, renderMarkdown(t))); };
    const calls = record?.toolCalls || [];
    const decisions = new Map((record?.decisions || []).map((d) => [d.toolCallId, d]));
    const texts = !cut && Array.isArray(record?.texts) ? record.texts : null;
    if (texts) { // each model call's text, then the tools it called: the order they happened
      texts.forEach((t, i) => {
        bubble(t);
        for (const call of calls) if (call.iteration === i) this.recordedCallEls(call, decisions.get(call.id), box);
      });
      for (const call of calls) if (!(call.iteration < texts.length)) this.recordedCallEls(call, decisions.get(call.id), box);
    } else { // a record kept before the order was (or a stopped reply): tools, then the text
      for (const call of calls) this.recordedCallEls(call, decisions.get(call.id), box);
      bubble(text);
    }
    if (record?.citations?.length) box.append(this.sourcesEl(record.citations));
    if (record?.needsEscalation) box.append(handoffEl());
    if (status === "cancelled") box.append(h("p", { className: "note", textContent: "You stopped this reply." }));
    if (status === "failed") box.append(h("p", { className: "note error", textContent: "Sorry, this reply couldn't be completed." }));
    if (record?.truncated && !cut) box.append(h("p", { className: "note", textContent: "This reply was cut short." }));
    return box;
  }

  /** A recorded tool call's card (its decision's, when a person was asked) into `box`. */
  recordedCallEls(call, decision, box) {
    const state = !("result" in call) ? "skipped" : call.isError ? "error" : "done";
    if (decision) {
      box.parts.append(decisionCard(decision, { label: this.labels[call.name], failed: call.isError }));
      if (this.debug) box.parts.append(this.stepEl(call.name, call.arguments, state, call.result));
    } else if (!RAISE_TOOLS.has(call.name) || this.debug) {
      const step = this.stepEl(call.name, call.arguments, state, call.result);
      if (step) box.parts.append(step);
    }
  }

  /** A tool step as customers see it: its label (none: not shown), or everything in debug. */
  stepEl(name, args, state, result) {
    const label = this.labels[name];
    const stateText = { running: "…", done: "", error: " didn't work", skipped: " (not run)" }[state];
    if (this.debug) {
      const summary = h("summary", {}, h("code", { textContent: name }), ` ${compactArgs(args)}`,
        h("span", { className: "step-state", textContent: ` · ${state}` }));
      const details = h("details", { className: "step debug", attrs: { "data-state": state } }, summary,
        h("pre", { textContent: pretty(args || {}) }));
      if (result !== undefined) details.append(h("pre", { className: "step-result", textContent: pretty(result) }));
      return details;
    }
    if (!label) return null;
    const glyph = state === "running" ? h("span", { className: "spinner", attrs: { "aria-hidden": "true" } })
      : icon(state === "done" ? ICONS.check : state === "error" ? ICONS.alert : ICONS.cross);
    return h("div", { className: "step", attrs: { "data-state": state } }, glyph,
      h("span", { className: "step-label", textContent: label + stateText }));
  }

  sourcesEl(citations) {
    const list = h("ol", { className: "sources-list" });
    citations.forEach((c, index) => {
      const title = c.title || c.id || `Source ${index + 1}`;
      const number = h("span", { className: "source-number", textContent: String(index + 1) });
      const details = h("details", { className: "source" },
        h("summary", {}, number, h("span", { className: "source-title", textContent: title })));
      if (c.snippet) details.append(h("p", { className: "snippet", textContent: c.snippet }));
      if (c.url && /^https?:\/\//i.test(c.url)) {
        details.append(h("a", { href: c.url, target: "_blank", rel: "noopener noreferrer", className: "source-link",
          textContent: "Open the source" }));
      }
      list.append(h("li", {}, details));
    });
    return h("section", { className: "sources", attrs: { "aria-label": "Sources" } },
      h("p", { className: "sources-title", textContent: "Sources" }), list);
  }

  partials() {
    return this.store.getJSON("partials") || {};
  }

  /** Keep a stopped reply's partial text, to show again in place of the notice the server
   *  stores for it (a reload then shows what the visitor saw). Kept at once, then tied to
   *  the notice's id as soon as the history has it. */
  async rememberPartial(turn) {
    const text = turn.text();
    if (!text.trim() || !turn.question) return;
    this.store.setJSON("stopped", { question: turn.question, text: text.slice(0, 20000) });
    let page;
    try {
      page = await this.history();
    } catch {
      return; // tied by the next history read
    }
    const id = this.claimStopped(page.messages);
    if (id) turn.box.dataset.messageId = id;
  }

  /** The newest stopped-reply notice answering the question a partial text was kept for
   *  (messages newest first) gets that text; returns its id. */
  claimStopped(messages) {
    const stopped = this.store.getJSON("stopped");
    if (!stopped) return null;
    const partials = this.partials();
    const index = messages.findIndex((m, i) => m.direction === "outbound"
      && m.content.structuredResponse?.status === "cancelled" && !(m.id in partials)
      && messages[i + 1]?.direction === "inbound" && messages[i + 1].content.text === stopped.question);
    if (index < 0) return null;
    const { id } = messages[index];
    partials[id] = stopped.text;
    const ids = Object.keys(partials);
    for (const old of ids.slice(0, Math.max(0, ids.length - MAX_PARTIALS))) delete partials[old];
    this.store.setJSON("partials", partials);
    this.store.setJSON("stopped", null);
    this.knownIds.add(id);
    return id;
  }

  // ------------------------------------------------------------------------------ events

  handle(event) {
    const id = typeof event.requestId === "string" ? event.requestId : null;
    if (id && this.ignored.has(id)) return;
    switch (event.type) {
      case "immediate_response":
        if (event.status === 202) this.turns.get(id)?.accepted();
        else if (event.status === 200) this.turns.get(id)?.interactionAck();
        return;
      case "stream_token":
        this.turnFor(id)?.token(event.token);
        return;
      case "stream_chunk":
        this.turnFor(id)?.chunk(event.node, event.data?.state?.rawResponse || {});
        return;
      case "write_confirmation_required":
        this.turnFor(id)?.confirm(event.data?.data || {});
        return;
      case "interaction_required":
        this.turnFor(id)?.interaction(event.data?.data || {});
        return;
      case "interaction_invalid":
        this.turns.get(id)?.interactionInvalid(event.data?.data || {});
        return;
      case "eventual_response":
        this.turnFor(id)?.finish(event.data?.data || {});
        return;
      case "cancelled":
        this.turnFor(id)?.stopped();
        return;
      case "error":
        this.onError(id, event.error || {});
        return;
      default: // keepalive, and anything newer than this page
    }
  }

  onError(id, { code, message }) {
    if (code === "NO_ACTIVE_TURN") {
      this.notResumed();
      return;
    }
    // A turn re-attached by resume_turn may have nothing left to replay but its failure.
    const turn = id ? this.turns.get(id) || (this.resuming ? this.turnFor(id) : null) : null;
    if (turn && !turn.done) {
      turn.error(code, message);
      return;
    }
    if (this.debug) this.showAlert(friendly(code, message, true), null);
  }

  /** The turn an event belongs to; a turn this page did not start (a resumed one) gets a
   *  reply of its own. Events of a finished turn are dropped. */
  turnFor(id) {
    if (!id) return null;
    let turn = this.turns.get(id);
    if (!turn) {
      const resuming = this.resuming;
      this.resuming = null;
      let questionEl = null;
      if (resuming && !resuming.stored && resuming.question) { // sent, not yet in the history
        questionEl = this.userEl(resuming.question);
        this.follow(() => this.thread.append(questionEl));
      }
      turn = new Turn(this, id, { question: resuming?.question, questionEl, accepted: true });
      this.active = turn;
      this.updateComposer();
    }
    return turn.done ? null : turn;
  }

  // ------------------------------------------------------------------------------ composer

  composerChanged() {
    this.input.style.setProperty("height", "auto");
    this.input.style.setProperty("height", `${Math.min(this.input.scrollHeight + 2, 180)}px`);
    this.updateComposer();
  }

  setComposer(text) {
    this.input.value = text;
    this.composerChanged();
  }

  composerKey(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      this.sendFromComposer();
    }
  }

  rootKey(event) {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    if (this.active) {
      event.preventDefault();
      this.stop();
    } else if (this.mode === "widget" && this.opts.onClose) {
      event.preventDefault();
      this.opts.onClose();
    }
  }

  updateComposer() {
    const busy = !!this.active;
    this.sendButton.disabled = !this.ready || busy || !!this.resuming || !this.input.value.trim();
    this.sendButton.hidden = busy;
    this.stopButton.hidden = !busy;
    this.stopButton.disabled = !this.ready || !busy || (this.active && this.active.stopping);
    const empty = !this.thread.querySelector(".msg");
    this.starters.hidden = !empty || busy;
    for (const starter of this.starters.children) starter.disabled = !this.ready;
    // Sending again waits until it can go (a reply still running, a reconnection).
    const blocked = !this.ready || busy || !!this.resuming;
    this.alertRetry.disabled = this.alertKind === "composer" && blocked;
  }

  sendFromComposer() {
    const text = this.input.value.trim();
    if (!text || !this.ready || this.active) return;
    if (this.send(text)) this.setComposer("");
  }

  /** Send a message as a new turn; false when it could not be sent at all. */
  send(text) {
    text = text.trim();
    if (!text || !this.ready || this.active || this.resuming) return false;
    this.clearAlert(true);
    const requestId = newId();
    const questionEl = this.userEl(text);
    this.follow(() => this.thread.append(questionEl));
    this.scrollToEnd();
    const turn = new Turn(this, requestId, { question: text, questionEl });
    this.active = turn;
    if (!this.conn.send({ action: "send_message", requestId, sessionId: this.sessionId, message: text })) {
      turn.error("DISCONNECTED", "not connected");
      return false;
    }
    this.store.setJSON("pending", { requestId, text });
    this.updateComposer();
    return true;
  }

  stop() {
    const turn = this.active;
    if (!turn || turn.stopping) return;
    // The server answers with `cancelled`, or says nothing when the turn already ended.
    if (this.conn.send({ action: "cancel", requestId: turn.requestId, sessionId: this.sessionId })) {
      turn.stopping = true;
      this.updateComposer();
    }
    this.input.focus();
  }

  turnEnded(turn) {
    if (this.active === turn) this.active = null;
    const pending = this.store.getJSON("pending");
    if (pending?.requestId === turn.requestId) this.store.setJSON("pending", null);
    this.updateComposer();
  }

  // ------------------------------------------------------------------------------ alerts

  showAlert(text, retry) {
    this.alertKind = retry;
    this.alertText.textContent = text;
    this.alertRetry.hidden = !retry || retry === "older";
    this.alert.hidden = false;
    this.updateComposer();
  }

  clearAlert(always = false, kind = null) {
    if (always || this.alertKind === kind) this.alert.hidden = true;
  }

  retryAlert() {
    const kind = this.alertKind;
    this.clearAlert(true);
    if (kind === "composer") this.sendFromComposer();
    else if (kind === "start") {
      if (this.conn.open) this.start(this.conn.generation);
      else this.conn.reconnectNow();
    }
    this.input.focus();
  }
}

// ------------------------------------------------------------------------------ a turn

/** One reply being received: its text segments (Markdown), tool steps and cards. */
class Turn {
  constructor(chat, requestId, { question, questionEl, accepted = false }) {
    this.chat = chat;
    this.requestId = requestId;
    this.question = question;
    this.questionEl = questionEl;
    this.acceptedYet = accepted;
    this.done = false;
    this.stopping = false;
    this.segments = []; // {text, el}
    this.segment = null; // the text written since the last chunk or card
    this.tools = []; // {name, step, card, out}
    this.cards = [];
    this.submission = null; // the card whose answer is in flight
    this.renderTimer = null;
    this.box = chat.agentBox();
    this.box.classList.add("live");
    this.typing = h("div", { className: "typing" }, h("span", { className: "dots", attrs: { "aria-hidden": "true" } }, h("i"), h("i"), h("i")),
      h("span", { className: "typing-text", textContent: "" }));
    this.box.append(this.typing);
    chat.turns.set(requestId, this);
    chat.follow(() => chat.thread.append(this.box));
  }

  accepted() {
    this.acceptedYet = true;
  }

  waiting(text = "") {
    this.typing.hidden = false;
    this.typing.querySelector(".typing-text").textContent = text;
  }

  idle() {
    this.typing.hidden = true;
  }

  text() {
    return this.segments.map((s) => s.text).join("");
  }

  token(text) {
    if (typeof text !== "string") return;
    if (!this.segment) {
      this.segment = { text: "", el: h("div", { className: "bubble md", attrs: { "aria-busy": "true" } }) };
      this.segments.push(this.segment);
      this.chat.follow(() => this.box.parts.append(this.segment.el));
    }
    this.idle();
    this.segment.text += text;
    this.scheduleRender();
  }

  scheduleRender() {
    if (this.renderTimer) return;
    this.renderTimer = setTimeout(() => this.render(), 30);
  }

  render() {
    clearTimeout(this.renderTimer);
    this.renderTimer = null;
    this.chat.follow(() => {
      for (const segment of this.segments) {
        if (segment.rendered !== segment.text) {
          segment.el.replaceChildren(renderMarkdown(segment.text));
          segment.rendered = segment.text;
        }
      }
    });
  }

  endSegment() {
    if (this.segment) this.segment.el.setAttribute("aria-busy", "false");
    this.render();
    this.segment = null;
  }

  chunk(node, raw) {
    if (node === "stream_reset" && !raw.toolCall && !raw.toolResult) {
      // A retried model call: its partial text is about to be sent again.
      if (this.segment) { this.segment.text = ""; this.render(); }
      return;
    }
    this.endSegment();
    if (raw.toolCall) this.toolCall(raw.toolCall);
    else if (raw.toolResult) this.toolResult(raw.toolResult);
  }

  toolCall({ name, arguments: args }) {
    // A card asked just before this call (approval, question) stands for it.
    const card = this.cards.find((c) => c.toolId === name && !c.called);
    if (card) card.called = true;
    const tool = { name, args, card: card || null, step: null, out: false };
    if (!card || this.chat.debug) {
      tool.step = this.chat.stepEl(name, args, "running");
      if (tool.step) this.chat.follow(() => this.box.parts.append(tool.step));
    }
    this.tools.push(tool);
    if (!card) this.waiting(tool.step ? "" : "Working on it…");
  }

  toolResult({ name, isError, result, actionDescription }) {
    let tool = this.tools.find((t) => t.name === name && !t.out);
    if (!tool) { this.toolCall({ name, arguments: {} }); tool = this.tools[this.tools.length - 1]; }
    tool.out = true;
    if (tool.step) {
      const step = this.chat.stepEl(name, tool.args, isError ? "error" : "done", result);
      tool.step.replaceWith(step);
      tool.step = step;
    }
    tool.card?.card.result({ isError, result, actionDescription });
    this.waiting();
  }

  confirm({ toolId, actionDescription }) {
    this.endSegment();
    this.idle();
    const card = new ApprovalCard({
      description: actionDescription || "The assistant wants to take an action.",
      label: this.chat.labels[toolId],
      announce: (text) => this.chat.announce(text),
      decide: (approved) => this.chat.conn.request({ action: "confirm_tool_action", sessionId: this.chat.sessionId, approved }),
      afterDecision: () => this.chat.input.focus(),
    });
    this.cards.push({ toolId, card, called: false });
    this.chat.follow(() => this.box.parts.append(card.node));
  }

  interaction({ interactionId, kind, spec, reason }) {
    this.endSegment();
    this.idle();
    const card = new InteractionCard({
      interactionId, kind, spec, reason,
      announce: (text) => this.chat.announce(text),
      submit: (answer) => {
        this.submission = card;
        return this.chat.conn.send({ action: "submit_interaction", requestId: this.requestId,
          sessionId: this.chat.sessionId, interactionId, kind, ...answer });
      },
    });
    const toolId = kind === "identity_intake" ? "request_identity_intake" : "request_choices";
    this.cards.push({ toolId, card, called: false });
    this.chat.follow(() => this.box.parts.append(card.node));
  }

  interactionAck() {
    const card = this.submission;
    this.submission = null;
    card?.accepted();
    if (card) { this.waiting(); this.chat.input.focus(); }
  }

  interactionInvalid({ errors }) {
    (this.submission || this.cards.map((c) => c.card).find((c) => c instanceof InteractionCard && !c.settled))?.invalid(errors);
    this.submission = null;
  }

  finish(data) {
    const chat = this.chat;
    if (data.messageId && chat.knownIds.has(data.messageId)) { // already on screen (history)
      this.box.remove();
      this.end();
      return;
    }
    const text = (data.response?.responseParts || []).join("");
    // Not streamed (or not all of it): show the reply. The reply's paragraphs between tool
    // calls were streamed as separate segments, so whitespace does not count.
    const bare = (t) => t.replace(/\s+/g, "");
    if (bare(this.text()) !== bare(text)) {
      for (const segment of this.segments) segment.el.remove();
      this.segments = [];
      this.segment = null;
      if (text) this.token(text);
    }
    this.endSegment();
    if (data.messageId) {
      chat.knownIds.add(data.messageId);
      this.box.dataset.messageId = data.messageId;
    }
    chat.follow(() => {
      if (data.citations?.length) this.box.append(chat.sourcesEl(data.citations));
      if (data.needsEscalation) this.box.append(handoffEl());
    });
    this.end("ended");
    const plain = this.box.parts.textContent.trim();
    chat.announce(`${chat.agentName} replied: ${plain.length > 600 ? `${plain.slice(0, 600)}…` : plain}`);
    chat.opts.onReply?.();
  }

  stopped() {
    this.endSegment();
    this.chat.follow(() => this.box.append(h("p", { className: "note", textContent: "You stopped this reply." })));
    this.end("cancelled");
    this.chat.announce("Stopped.");
    this.chat.rememberPartial(this);
  }

  /** An `error` for this turn: a refusal before the 202 (nothing started: the message goes
   *  back into the composer), a failed submission of a card's answer, or the turn failing. */
  error(code, message) {
    const chat = this.chat;
    if (this.submission && SUBMISSION_ERRORS.has(code)) {
      const card = this.submission;
      this.submission = null;
      card.refused(code);
      return;
    }
    if (!this.acceptedYet) {
      this.box.remove();
      this.questionEl?.remove();
      this.end();
      chat.turns.delete(this.requestId);
      if (!chat.input.value.trim()) chat.setComposer(this.question || "");
      chat.showAlert(friendly(code, message, chat.debug), "composer");
      chat.input.focus();
      if (code === "TURN_IN_PROGRESS") { // another tab's turn: show it here too
        chat.resync();
      } else if (code === "SESSION_NOT_FOUND") {
        chat.store.set("sessionId", null);
        chat.ready = false;
        if (chat.conn.open) chat.start(chat.conn.generation);
      }
      return;
    }
    this.endSegment();
    const retry = this.question
      ? h("button", { type: "button", className: "retry", textContent: "Try again",
        on: { click: () => { retry.disabled = true; chat.send(this.question); } } })
      : null;
    chat.follow(() => this.box.append(h("div", { className: "note error", attrs: { role: "alert" } },
      h("span", { textContent: friendly(code, message, chat.debug) }), retry ? " " : null, retry)));
    this.end("failed");
    chat.input.focus();
  }

  end(outcome) {
    this.done = true;
    clearTimeout(this.renderTimer);
    this.idle();
    this.box.classList.remove("live");
    for (const { card } of this.cards) if (!card.settled) card.end(outcome === "cancelled" ? "cancelled" : "ended");
    this.chat.turnEnded(this);
  }
}

// ------------------------------------------------------------------------------ helpers

function handoffEl() {
  return h("p", { className: "handoff", attrs: { role: "status" } }, icon(ICONS.person),
    "A person from our team will follow up in this conversation.");
}

function compactArgs(args) {
  const text = Object.entries(args || {}).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(", ");
  return text.length > 120 ? `${text.slice(0, 120)}…` : text;
}

/** The agent's widget profile: name, greeting, starters, accent and tool labels. */
export async function fetchProfile(base, agentId) {
  const response = await fetch(new URL(`widget/agents/${encodeURIComponent(agentId)}`, base), { credentials: "omit" });
  if (!response.ok) {
    const error = new Error(`profile: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

/** Use `accent` (#rrggbb) for buttons and the visitor's bubbles, with a readable text colour. */
export function applyAccent(element, accent) {
  if (!/^#[0-9a-f]{6}$/i.test(accent)) return;
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(accent.slice(i, i + 2), 16) / 255)
    .map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
  const luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  element.style.setProperty("--accent", accent);
  element.style.setProperty("--accent-text", luminance > 0.45 ? "#111418" : "#ffffff");
}
