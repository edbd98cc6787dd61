// The full-page chat at `/`: the widget's chat module, mounted on the whole page.
// `/?agent=<id>` talks to another agent (e.g. one registered with `parley agent`), and
// `/?debug=1` shows tool names, arguments, results and error codes. `window.ParleyWidget`
// (set by a script that runs first) takes the widget's hooks: `token`, `authContext` and
// `heartbeat` (see widget.js).

import { mountChat } from "./chat.js";

// The demo agent (`parley dev`).
const DEMO_AGENT_ID = "5f3c2a1e-7b8d-4e6f-9a0b-1c2d3e4f5a6b";

const params = new URLSearchParams(location.search);
const host = document.getElementById("chat");
const shadow = host.attachShadow({ mode: "open" });
const page = document.createElement("div");
page.className = "page";
shadow.append(page);
const config = window.ParleyWidget || {};
const chat = mountChat(page, {
  base: new URL(".", location.href).href,
  agentId: params.get("agent") || DEMO_AGENT_ID,
  mode: "page",
  debug: params.get("debug") === "1",
  heartbeat: config.heartbeat,
  authContext: () => (typeof config.authContext === "function" ? config.authContext() : config.authContext || null),
  token: () => (typeof config.token === "function" ? config.token() : config.token || null),
});
chat.focus();
