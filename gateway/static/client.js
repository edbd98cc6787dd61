// The socket to Parley's /ws: connect, notice a dead connection within seconds, reconnect
// quickly, and pair each request with its reply. What the events mean is chat.js's business.

/** An `error` event (or a dropped connection: code "DISCONNECTED") as an exception. */
export class ProtocolError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** A v4 UUID (crypto.randomUUID needs a secure context; this does not). */
export function newId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// Reconnect at once, then quickly, never waiting more than about 3 s.
const BACKOFF_MS = [0, 250, 500, 1000, 2000, 3000];
// Upgrades turned down in a row by a server that is up (401 with PARLEY_AUTH_STRICT, or
// too many sockets from this address) before the connection gives up and says "refused".
const MAX_REFUSALS = 3;
const WAKE_EVENTS = ["pointerdown", "keydown", "focusin", "visibilitychange"];

/**
 * One logical connection that survives its sockets.
 *
 * `url` is the socket's URL, or a function returning it (or a Promise of it), asked again
 * before every attempt (a token in it may have expired since the last one). `health` is a
 * URL that answers 200 while the server is up.
 *
 * `onOpen(generation)` runs for each new socket (start or resume the session there);
 * `onEvent(event)` gets every event no request is waiting for; `onState(state)` hears
 * "connecting", "online", "offline" (reconnecting), "idle" (closed by the server for
 * inactivity: it reconnects when the visitor is back) and "refused" (the server is up but
 * turned the upgrade down `MAX_REFUSALS` times in a row: no more tries until
 * `reconnectNow()`). A browser does not say why an upgrade failed, so a refusal is a socket
 * that never opened while `health` answered.
 *
 * Heartbeat: a `ping` every `interval` ms; when nothing at all arrives within `timeout` ms
 * of one, the socket is taken for dead (a half-open connection says nothing) and replaced.
 */
export class Connection {
  constructor({ url, health, onOpen, onEvent, onState, heartbeat = {} }) {
    this.url = url;
    this.health = health;
    this.onOpen = onOpen;
    this.onEvent = onEvent;
    this.onState = onState;
    this.interval = heartbeat.interval ?? 10000;
    this.timeout = heartbeat.timeout ?? 5000;
    this.ws = null;
    this.generation = 0;
    this.retries = 0;
    this.refusals = 0;
    this.attempt = 0;
    this.pending = new Map(); // requestId -> {resolve, reject}
    this.timers = { reconnect: null, beat: null, deadline: null };
    this.lastFrameAt = 0;
    this.stopped = false;
    this.state = "connecting";
    this._online = () => this.reconnectNow();
    // The browser lost its network: say so now, not when the heartbeat next goes unanswered
    // (up to interval + timeout later); `online` reconnects.
    this._offline = () => { if (!this.stopped) this.drop("lost"); };
    this._visible = () => { if (document.visibilityState === "visible") this.beat(); };
    window.addEventListener("online", this._online);
    window.addEventListener("offline", this._offline);
    document.addEventListener("visibilitychange", this._visible);
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  start() {
    this.connect();
  }

  close() {
    this.stopped = true;
    window.removeEventListener("online", this._online);
    window.removeEventListener("offline", this._offline);
    document.removeEventListener("visibilitychange", this._visible);
    this.drop("closed");
  }

  setState(state) {
    this.state = state;
    this.onState(state);
  }

  async connect() {
    clearTimeout(this.timers.reconnect);
    if (this.stopped) return;
    const attempt = ++this.attempt; // a later attempt supersedes this one while it waits
    this.setState("connecting");
    let url;
    try {
      url = typeof this.url === "function" ? await this.url() : this.url;
    } catch {
      url = null;
    }
    if (this.stopped || attempt !== this.attempt || this.ws) return;
    let socket;
    try {
      socket = new WebSocket(url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = socket;
    const generation = ++this.generation;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.refusals = 0;
      this.lastFrameAt = Date.now();
      this.startHeartbeat();
      Promise.resolve(this.onOpen(generation)).catch(() => {});
    };
    socket.onmessage = (message) => {
      this.lastFrameAt = Date.now();
      clearTimeout(this.timers.deadline);
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      if (event && typeof event === "object") this.dispatch(event);
    };
    socket.onclose = (close) => {
      if (socket !== this.ws) return;
      if (opened) {
        this.drop(close.code === 1001 && close.reason === "idle timeout" ? "idle" : "lost");
      } else {
        this.notOpened(socket);
      }
    };
  }

  /** The socket closed before it opened: the network, or a refusal by a server that is up. */
  async notOpened(socket) {
    this.refusals += 1;
    if (this.refusals < MAX_REFUSALS || !(await this.serverUp())) {
      if (socket === this.ws) this.drop("lost");
      return;
    }
    if (socket !== this.ws) return; // Retry or a new attempt came first
    this.drop("refused");
  }

  async serverUp() {
    if (!this.health) return false;
    try {
      const response = await fetch(this.health, { credentials: "omit", cache: "no-store" });
      return response.ok;
    } catch {
      return false;
    }
  }

  /** The session is usable on this socket: back-off starts again from zero. */
  established() {
    this.retries = 0;
    this.setState("online");
  }

  dispatch(event) {
    const id = typeof event.requestId === "string" ? event.requestId : null;
    const waiter = id ? this.pending.get(id) : null;
    if (waiter && (event.type === "immediate_response" || event.type === "error")) {
      this.pending.delete(id);
      if (event.type === "error") waiter.reject(new ProtocolError(event.error?.code, event.error?.message));
      else waiter.resolve(event);
      return;
    }
    if (event.type === "pong") return;
    this.onEvent(event);
  }

  /** Send a frame; false when there is no open socket. */
  send(frame) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Send an action and wait for its immediate_response (resolves) or error (rejects). */
  request(frame) {
    const requestId = newId();
    return new Promise((resolve, reject) => {
      this.pending.set(requestId, { resolve, reject });
      if (!this.send({ ...frame, requestId })) {
        this.pending.delete(requestId);
        reject(new ProtocolError("DISCONNECTED", "not connected"));
      }
    });
  }

  startHeartbeat() {
    clearInterval(this.timers.beat);
    this.timers.beat = setInterval(() => this.beat(), this.interval);
  }

  /** Ping, and give up on the socket if nothing arrives in time. */
  beat() {
    if (!this.open || this.timers.deadline) return;
    const sentAt = Date.now();
    this.send({ action: "ping", requestId: `hb-${sentAt}` });
    this.timers.deadline = setTimeout(() => {
      this.timers.deadline = null;
      if (this.lastFrameAt < sentAt) this.drop("lost"); // half-open: replace it now
    }, this.timeout);
  }

  /** Forget the current socket; reconnect unless told why not to. */
  drop(why) {
    const socket = this.ws;
    this.ws = null;
    clearInterval(this.timers.beat);
    clearTimeout(this.timers.deadline);
    this.timers.deadline = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      try { socket.close(); } catch { /* already closing */ }
    }
    for (const waiter of this.pending.values()) {
      waiter.reject(new ProtocolError("DISCONNECTED", "the connection dropped"));
    }
    this.pending.clear();
    if (this.stopped || why === "closed") return;
    if (why === "refused") {
      this.setState("refused");
      return;
    }
    if (why === "idle") {
      this.setState("idle");
      const wake = () => {
        for (const type of WAKE_EVENTS) window.removeEventListener(type, wake, true);
        if (!this.ws) this.reconnectNow();
      };
      for (const type of WAKE_EVENTS) window.addEventListener(type, wake, true);
      return;
    }
    this.setState("offline");
    if (navigator.onLine === false) { // no network: tries would fail; `online` reconnects
      clearTimeout(this.timers.reconnect);
      return;
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    const base = BACKOFF_MS[Math.min(this.retries, BACKOFF_MS.length - 1)];
    this.retries += 1;
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = setTimeout(() => this.connect(), base * (0.75 + Math.random() / 2));
  }

  /** Try again now (the Retry button, the browser coming back online). */
  reconnectNow() {
    if (this.stopped || this.open) return;
    this.retries = 0;
    this.refusals = 0;
    if (this.ws) {
      this.drop("lost");
    } else {
      this.connect();
    }
  }
}
