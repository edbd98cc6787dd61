// A safe Markdown subset for model replies, built as DOM nodes.
//
// Every piece of the reply's text goes into the page through textContent or a text node:
// nothing is ever parsed as HTML, so markup in a reply shows as text and cannot run. Links
// keep only http(s) and mailto targets and open in a new tab without the opener.
//
// Blocks: paragraphs (a single newline is a line break), headings, fenced code (with a copy
// button), block quotes, bullet and numbered lists (nested by indentation), tables, rules.
// Inline: **bold**, *italic*, ~~strike~~, `code`, [links](https://...), <https://...> and
// bare https:// URLs, backslash escapes.
//
// Rendering is pure and cheap enough to redo on every streamed token: an unfinished code
// fence renders as code to the end of the text.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])[ \t]+(.*)$/;
const TABLE_RULE = /^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$/;
const SAFE_SCHEMES = new Set(["http:", "https:", "mailto:"]);

/** The Markdown `text` as a DocumentFragment. */
export function renderMarkdown(text, doc = document) {
  const fragment = doc.createDocumentFragment();
  blocks(doc, fragment, String(text ?? "").replace(/\r\n?/g, "\n").split("\n"));
  return fragment;
}

/** A link target the chat may open, or null: http(s) and mailto only. */
export function safeUrl(raw) {
  let url;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  return SAFE_SCHEMES.has(url.protocol) ? url.href : null;
}

function el(doc, tag, className) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  return node;
}

// ------------------------------------------------------------------------------- blocks

function blocks(doc, parent, lines) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i += 1; continue; }
    let m;
    if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i += 1;
      while (i < lines.length && !closesFence(lines[i], fence)) body.push(lines[i++]);
      i += 1; // the closing fence (or the end of an unfinished one)
      parent.append(codeBlock(doc, body.join("\n"), m[2]));
    } else if ((m = HEADING.exec(line))) {
      const heading = el(doc, `h${Math.min(6, m[1].length + 2)}`);
      inline(doc, heading, m[2]);
      parent.append(heading);
      i += 1;
    } else if (RULE.test(line)) {
      parent.append(el(doc, "hr"));
      i += 1;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) { body.push(m[1]); i += 1; }
      const quote = el(doc, "blockquote");
      blocks(doc, quote, body);
      parent.append(quote);
    } else if (ITEM.test(line)) {
      i = list(doc, parent, lines, i);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1])
               && lines[i + 1].includes("-")) {
      i = table(doc, parent, lines, i);
    } else {
      const body = [];
      while (i < lines.length && lines[i].trim() && !startsBlock(lines, i)) body.push(lines[i++].trim());
      const paragraph = el(doc, "p");
      body.forEach((text, n) => {
        if (n) paragraph.append(el(doc, "br"));
        inline(doc, paragraph, text);
      });
      parent.append(paragraph);
    }
  }
}

function startsBlock(lines, i) {
  const line = lines[i];
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line)
    || ITEM.test(line);
}

function closesFence(line, fence) {
  const trimmed = line.trim();
  return trimmed.length >= fence.length && trimmed === fence[0].repeat(trimmed.length);
}

function codeBlock(doc, code, language) {
  const box = el(doc, "div", "code");
  const bar = el(doc, "div", "code-bar");
  const lang = el(doc, "span", "code-lang");
  lang.textContent = language || "code";
  const copy = el(doc, "button", "copy");
  copy.type = "button";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", "Copy code");
  copy.addEventListener("click", () => copyText(code, copy));
  bar.append(lang, copy);
  const pre = el(doc, "pre");
  const codeEl = el(doc, "code");
  codeEl.textContent = code;
  pre.append(codeEl);
  box.append(bar, pre);
  return box;
}

async function copyText(text, button) {
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch {
    // No async clipboard (an insecure context, or denied): copy through a selection.
    const area = button.ownerDocument.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.setProperty("position", "fixed");
    area.style.setProperty("opacity", "0");
    button.parentNode.append(area);
    area.select();
    try { copied = button.ownerDocument.execCommand("copy"); } catch { copied = false; }
    area.remove();
  }
  button.textContent = copied ? "Copied" : "Copy failed";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

// A list and its items; an item holds the lines indented under it (nested lists included).
function list(doc, parent, lines, start) {
  const first = ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const node = el(doc, ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  let i = start;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const contentIndent = m[1].length + m[2].length + 1;
    const body = [m[3]];
    i += 1;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) {
        // A blank line ends the item unless the next line is indented under it.
        const next = lines[i + 1];
        if (next !== undefined && next.trim() && leading(next) >= contentIndent) { body.push(""); i += 1; continue; }
        break;
      }
      const nested = ITEM.exec(line);
      if (nested && nested[1].length <= indent) break;
      if (!nested && leading(line) < Math.min(contentIndent, indent + 2) && startsBlock(lines, i)) break;
      body.push(line.slice(Math.min(leading(line), contentIndent)));
      i += 1;
    }
    const item = el(doc, "li");
    if (body.some((l) => !l.trim())) {
      blocks(doc, item, body); // a loose item: paragraphs
    } else { // a tight item: its text (lines broken), then any nested blocks
      let n = 0;
      while (n < body.length && (n === 0 || !startsBlock(body, n))) {
        if (n) item.append(el(doc, "br"));
        inline(doc, item, body[n].trim());
        n += 1;
      }
      blocks(doc, item, body.slice(n));
    }
    node.append(item);
    while (i < lines.length && !lines[i].trim()) {
      const next = lines[i + 1];
      const m2 = next === undefined ? null : ITEM.exec(next);
      if (m2 && m2[1].length === indent) { i += 1; break; }
      return finish();
    }
  }
  return finish();

  function finish() {
    parent.append(node);
    return i;
  }
}

function leading(line) {
  return line.length - line.trimStart().length;
}

function table(doc, parent, lines, start) {
  const cells = (line) => {
    let text = line.trim();
    if (text.startsWith("|")) text = text.slice(1);
    if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
    return text.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
  };
  const aligns = cells(lines[start + 1]).map((c) =>
    c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : "");
  const wrap = el(doc, "div", "table");
  const node = el(doc, "table");
  const head = el(doc, "thead");
  const row = (values, tag) => {
    const tr = el(doc, "tr");
    aligns.forEach((align, n) => {
      const cell = el(doc, tag);
      if (align) cell.style.setProperty("text-align", align);
      inline(doc, cell, values[n] ?? "");
      tr.append(cell);
    });
    return tr;
  };
  head.append(row(cells(lines[start]), "th"));
  const body = el(doc, "tbody");
  let i = start + 2;
  while (i < lines.length && lines[i].trim() && lines[i].includes("|")) body.append(row(cells(lines[i++]), "td"));
  node.append(head, body);
  wrap.append(node);
  parent.append(wrap);
  return i;
}

// ------------------------------------------------------------------------------- inline

const ESCAPABLE = /[\\`*_{}[\]()#+\-.!|~<>]/;
const LINK = /^\[((?:[^\[\]\\]|\\.)*)\]\(\s*<?([^\s<>()]*(?:\([^\s<>()]*\)[^\s<>()]*)*)>?(?:\s+"[^"]*")?\s*\)/;
const AUTOLINK = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/i;
const BARE_URL = /^https?:\/\/[^\s<>]*[^\s<>.,:;"'!?)\]*_~]/i;

function inline(doc, parent, text) {
  let plain = "";
  const flush = () => { if (plain) { parent.append(doc.createTextNode(plain)); plain = ""; } };
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    const rest = text.slice(i);
    let m;
    if (ch === "\\" && ESCAPABLE.test(text[i + 1] ?? "")) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (ch === "`") {
      const run = /^`+/.exec(rest)[0];
      const close = text.indexOf(run, i + run.length);
      if (close > 0) {
        flush();
        const code = el(doc, "code");
        let body = text.slice(i + run.length, close);
        if (/^ .* $/.test(body)) body = body.slice(1, -1);
        code.textContent = body;
        parent.append(code);
        i = close + run.length;
        continue;
      }
      plain += run;
      i += run.length;
      continue;
    }
    if (ch === "[" && (m = LINK.exec(rest))) {
      flush();
      parent.append(link(doc, m[2], m[1], (node, label) => inline(doc, node, label)));
      i += m[0].length;
      continue;
    }
    if (ch === "<" && (m = AUTOLINK.exec(rest))) {
      flush();
      parent.append(link(doc, m[1], m[1]));
      i += m[0].length;
      continue;
    }
    if ((ch === "h" || ch === "H") && !/[\w/]/.test(text[i - 1] ?? "") && (m = BARE_URL.exec(rest))) {
      flush();
      parent.append(link(doc, m[0], m[0]));
      i += m[0].length;
      continue;
    }
    if (ch === "*" || ch === "_" || ch === "~") {
      const span = emphasis(text, i);
      if (span) {
        flush();
        const node = el(doc, span.tag);
        inline(doc, node, text.slice(span.start, span.end));
        parent.append(node);
        i = span.next;
        continue;
      }
    }
    plain += ch;
    i += 1;
  }
  flush();
}

// **strong**, __strong__, *em*, _em_, ~~del~~ starting at text[i], or null.
function emphasis(text, i) {
  const ch = text[i];
  const double = text[i + 1] === ch;
  if (ch === "~" && !double) return null;
  const marker = double ? ch + ch : ch;
  const start = i + marker.length;
  const after = text[start];
  if (after === undefined || /\s/.test(after)) return null;
  // `_` does not open or close inside a word (snake_case stays as it is).
  if (ch === "_" && /\w/.test(text[i - 1] ?? "")) return null;
  let from = start + 1;
  while (from <= text.length) {
    const close = text.indexOf(marker, from);
    if (close < 0) return null;
    const before = text[close - 1];
    const next = text[close + marker.length];
    const ok = !/\s/.test(before) && before !== "\\"
      && !(ch === "_" && /\w/.test(next ?? ""))
      && !(!double && text[close + 1] === ch && ch !== "~"); // *a **b*: not this one
    if (ok && close > start) {
      const tag = ch === "~" ? "del" : double ? "strong" : "em";
      return { tag, start, end: close, next: close + marker.length };
    }
    from = close + 1;
  }
  return null;
}

function link(doc, target, label, renderLabel) {
  const href = safeUrl(target.replace(/\\(.)/g, "$1"));
  if (!href) { // not a link the chat will open: its text only
    const span = el(doc, "span");
    if (renderLabel) renderLabel(span, label);
    else span.textContent = label;
    return span;
  }
  const a = el(doc, "a");
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  if (renderLabel && label.trim()) renderLabel(a, label);
  else a.textContent = label.trim() ? label : target;
  return a;
}
