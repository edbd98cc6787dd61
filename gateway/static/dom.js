// Small DOM helpers: every text goes in as text, never as markup.

/** An element with properties (className, textContent, type, ...), attributes in `attrs`,
 *  and children (nodes or strings; null and false are skipped). */
export function h(tag, props = {}, ...children) {
  const { attrs, on, ...rest } = props || {};
  const node = document.createElement(tag);
  Object.assign(node, rest);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const [type, handler] of Object.entries(on || {})) node.addEventListener(type, handler);
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

let counter = 0;

/** A document-unique id for aria references. */
export function uid(prefix = "p") {
  counter += 1;
  return `parley-${prefix}-${counter}`;
}

/** Pretty JSON (or the string itself), cut at `limit` characters. */
export function pretty(value, limit = 4000) {
  const text = typeof value === "string" ? value : (JSON.stringify(value, null, 2) ?? String(value));
  return text.length > limit ? `${text.slice(0, limit)}…` : text;
}

const SVG = "http://www.w3.org/2000/svg";

/** A small inline icon (24x24 viewBox, stroked paths), hidden from screen readers. */
export function icon(paths, className = "icon") {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.setAttribute("class", className);
  for (const d of paths) {
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

export const ICONS = {
  send: ["M4 12l16-8-6 16-2.5-6.5z", "M11.5 13.5L20 4"],
  stop: ["M7 7h10v10H7z"],
  close: ["M6 6l12 12", "M18 6L6 18"],
  chat: ["M5 5h14a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2h-7l-5 4v-4H5a2 2 0 0 1-2-2V7a2 2 0 0 1 2-2z"],
  plus: ["M12 5v14", "M5 12h14"],
  down: ["M12 5v14", "M6 13l6 6 6-6"],
  check: ["M5 12.5l4.5 4.5L19 7.5"],
  cross: ["M7 7l10 10", "M17 7L7 17"],
  alert: ["M12 4l9 16H3z", "M12 10v4", "M12 17v.5"],
  clock: ["M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18z", "M12 7v5l3 2"],
  shield: ["M12 3l8 3v6c0 4.5-3.4 8-8 9-4.6-1-8-4.5-8-9V6z"],
  question: ["M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18z", "M9.5 9.5a2.5 2.5 0 1 1 3.5 2.3c-.7.3-1 .9-1 1.7", "M12 16.5v.5"],
  person: ["M12 4a4 4 0 1 0 0 8a4 4 0 1 0 0-8z", "M4 20c1.5-3.5 4.5-5 8-5s6.5 1.5 8 5"],
};
