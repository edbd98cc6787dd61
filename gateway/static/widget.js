/*
 * Parley's chat widget. Embed it with one script tag:
 *
 *   <script src="https://<parley>/widget.js" data-agent-id="<agent id>" async></script>
 *
 * It adds a launcher button and a chat panel to the page, inside a shadow root (the page's
 * CSS does not reach in), and loads the chat module from the same Parley server. The chat
 * connects from this page, so the agent's embed policy decides whether this site may.
 *
 * Signed-in customers: before this script runs, give it a function that returns an
 * authContext your backend signed (HMAC-SHA256 of "userId:timestamp" with the agent's key):
 *
 *   window.ParleyWidget = { authContext: async () => (await fetch("/parley-auth")).json() };
 *
 * or, when the gateway verifies JWTs (PARLEY_AUTH=jwt), the customer's token: a string, or a
 * function returning one or a Promise of one (null: signed out). It is asked before every
 * (re)connect, since tokens expire, and sent only as `?token=` on the WebSocket's URL:
 *
 *   window.ParleyWidget = { token: async () => (await fetch("/parley-token")).text() };
 *
 * When the gateway keeps refusing the connection (an expired or invalid token under
 * PARLEY_AUTH_STRICT), the chat stops after a few tries and asks the customer to sign in
 * again; its Retry button asks the hook for a fresh token.
 *
 * Then `ParleyWidget.open()`, `.close()` and `.toggle()` drive the panel. Attributes:
 * `data-agent-id` (required), `data-debug` (show tool names, arguments and error codes).
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.src || window.__parleyWidget) return;
  window.__parleyWidget = true;
  var agentId = script.getAttribute("data-agent-id");
  if (!agentId) {
    console.warn("Parley: the widget's script tag needs a data-agent-id attribute.");
    return;
  }
  var base = new URL(".", script.src).href;
  var debug = script.hasAttribute("data-debug") && script.getAttribute("data-debug") !== "false";
  var config = window.ParleyWidget = window.ParleyWidget || {};
  var openKey = "parley:" + agentId + ":open";
  var SVG = "http://www.w3.org/2000/svg";

  function icon(paths) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("class", "icon");
    paths.forEach(function (d) {
      var path = document.createElementNS(SVG, "path");
      path.setAttribute("d", d);
      svg.appendChild(path);
    });
    return svg;
  }
  var CHAT = ["M5 5h14a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2h-7l-5 4v-4H5a2 2 0 0 1-2-2V7a2 2 0 0 1 2-2z"];
  var CLOSE = ["M6 6l12 12", "M18 6L6 18"];

  var host = document.createElement("div");
  host.setAttribute("data-parley-widget", "");
  var shadow = host.attachShadow({ mode: "open" });
  var link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = base + "static/chat.css";
  link.setAttribute("data-parley-css", "");
  var widget = document.createElement("div");
  widget.className = "widget";
  widget.hidden = true;
  widget.setAttribute("data-open", "false");
  var panel = document.createElement("div");
  panel.className = "panel";
  panel.id = "parley-panel";
  panel.hidden = true;
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", "Chat");
  var launcher = document.createElement("button");
  launcher.type = "button";
  launcher.className = "launcher";
  launcher.setAttribute("aria-expanded", "false");
  launcher.setAttribute("aria-controls", panel.id);
  launcher.setAttribute("aria-label", "Open chat");
  launcher.appendChild(icon(CHAT));
  var unread = document.createElement("span");
  unread.className = "unread";
  unread.hidden = true;
  launcher.appendChild(unread);
  widget.appendChild(panel);
  widget.appendChild(launcher);
  shadow.appendChild(link);
  shadow.appendChild(widget);

  // The profile says who the agent is, and (403) when this site may not embed it: then no
  // launcher is shown (ParleyWidget.open() still opens a panel that says so). Too many
  // page views from this address (429) show the launcher without the profile: the socket
  // still tells whether this site may embed the agent.
  var profile = fetch(base + "widget/agents/" + encodeURIComponent(agentId), { credentials: "omit" })
    .then(function (response) {
      if (response.ok) return response.json();
      // The refusal says why (readable across origins): the console shows it.
      return response.json().catch(function () { return {}; }).then(function (body) {
        var reason = typeof body.error === "string" ? ": " + body.error.slice(0, 200) : "";
        var err = new Error("HTTP " + response.status + reason);
        err.status = response.status;
        throw err;
      });
    });
  var styled = new Promise(function (resolve) {
    link.addEventListener("load", resolve);
    link.addEventListener("error", resolve);
  });
  var shown = profile.catch(function (err) {
    if (err.status !== 429) throw err;
    console.warn("Parley: too many requests for the agent's profile; the chat shows without it.");
    return {};
  });
  Promise.all([shown, styled]).then(function (results) {
    var p = results[0];
    var name = p.name || "Chat";
    launcher.setAttribute("aria-label", "Chat with " + name);
    launcher.title = "Chat with " + name;
    panel.setAttribute("aria-label", "Chat with " + name);
    if (/^#[0-9a-f]{6}$/i.test(p.accent || "")) {
      widget.style.setProperty("--accent", p.accent);
    }
    widget.hidden = false;
    if (readOpen()) open(false);
  }, function (err) {
    console.warn("Parley: this site may not embed agent " + agentId + " (" + err.message + ").");
    styled.then(function () { widget.hidden = false; launcher.hidden = true; });
  });

  var chat = null;
  var loading = null;

  function readOpen() {
    try { return localStorage.getItem(openKey) === "1"; } catch (e) { return false; }
  }

  function saveOpen(value) {
    try { localStorage.setItem(openKey, value ? "1" : "0"); } catch (e) { /* disabled */ }
  }

  function authContext() {
    var hook = (window.ParleyWidget || {}).authContext;
    return typeof hook === "function" ? hook() : hook || null;
  }

  function token() {
    var hook = (window.ParleyWidget || {}).token;
    return typeof hook === "function" ? hook() : hook || null;
  }

  function mount() {
    if (!loading) {
      loading = import(base + "static/chat.js").then(function (module) {
        chat = module.mountChat(panel, {
          base: base,
          agentId: agentId,
          mode: "widget",
          debug: debug,
          profile: profile,
          authContext: authContext,
          token: token,
          heartbeat: config.heartbeat,
          onClose: close,
          onReply: function () { if (panel.hidden) unread.hidden = false; },
        });
        return chat;
      });
    }
    return loading;
  }

  function open(focus) {
    widget.hidden = false;
    panel.hidden = false;
    widget.setAttribute("data-open", "true");
    launcher.setAttribute("aria-expanded", "true");
    launcher.replaceChild(icon(CLOSE), launcher.firstChild);
    unread.hidden = true;
    saveOpen(true);
    mount().then(function (c) { if (focus !== false) c.focus(); });
  }

  function close() {
    panel.hidden = true;
    widget.setAttribute("data-open", "false");
    launcher.setAttribute("aria-expanded", "false");
    launcher.replaceChild(icon(CHAT), launcher.firstChild);
    saveOpen(false);
    if (!launcher.hidden) launcher.focus();
  }

  launcher.addEventListener("click", function () {
    if (panel.hidden) open(); else close();
  });
  config.open = function () { open(); };
  config.close = close;
  config.toggle = function () { if (panel.hidden) open(); else close(); };

  function attach() { document.body.appendChild(host); }
  if (document.body) attach(); else document.addEventListener("DOMContentLoaded", attach);
})();
