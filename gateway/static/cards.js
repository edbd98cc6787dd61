// The cards a turn shows when it waits for the visitor: an approval (Approve / Decline), an
// identity form, choice chips. Each ends in a clear, final state that says what happened,
// and tells screen readers (through `announce`) when it appears and when it is settled.

import { h, icon, ICONS, uid } from "./dom.js";

const TONE_ICON = { pending: ICONS.shield, ok: ICONS.check, neutral: ICONS.cross, bad: ICONS.alert, wait: ICONS.clock, ask: ICONS.question };

/** The frame every card shares: a caption, a state title, a text, a body, a result line. */
class Card {
  constructor({ kind, caption, title, text, tone, announce }) {
    this.announce = announce;
    this.settled = false;
    const titleId = uid("card");
    this.iconBox = h("span", { className: "card-icon" });
    this.captionEl = h("span", { className: "card-caption", textContent: caption || "" });
    this.titleEl = h("span", { className: "card-title", id: titleId, textContent: title });
    this.textEl = h("p", { className: "card-text", textContent: text || "" });
    this.textEl.hidden = !text;
    this.body = h("div", { className: "card-body" });
    this.resultEl = h("p", { className: "card-result" });
    this.resultEl.hidden = true;
    this.node = h("section", { className: `card ${kind}`, attrs: { "aria-labelledby": titleId } },
      h("div", { className: "card-head" }, this.iconBox,
        h("div", { className: "card-heading" }, this.captionEl, this.titleEl)),
      this.textEl, this.body, this.resultEl);
    this.setTone(tone);
  }

  setTone(tone) {
    this.node.dataset.state = tone;
    this.iconBox.replaceChildren(icon(TONE_ICON[tone] || ICONS.shield));
  }

  /** Show progress or a problem without ending the card. */
  status(text, isError = false) {
    this.resultEl.hidden = !text;
    this.resultEl.textContent = text || "";
    this.resultEl.classList.toggle("error", isError);
  }

  /** The final state: the actions go, what happened stays. */
  settle(title, detail, tone) {
    if (this.settled) return;
    this.settled = true;
    this.titleEl.textContent = title;
    this.setTone(tone);
    this.body.replaceChildren();
    this.body.hidden = true;
    this.status(detail);
    this.resultEl.classList.remove("error");
    this.announce(`${this.captionEl.textContent ? `${this.captionEl.textContent}: ` : ""}${title}. ${detail || ""}`);
  }
}

// ------------------------------------------------------------------------------ approvals

// A tool whose approvers are a team (not the visitor): the server's sentence says so.
const TEAM_PREFIX = "Waiting for a team member to approve: ";

const TEAM_ENDINGS = {
  done: ["Done", "A team member approved this, and it's done.", "ok"],
  denied: ["Declined", "A team member declined this, so nothing was done.", "neutral"],
  failed: ["Not completed", "It was approved, but it couldn't be completed.", "bad"],
};

const APPROVAL_ENDINGS = {
  done: ["Done", "You approved this, and it's done.", "ok"],
  denied: ["You declined", "Nothing was done.", "neutral"],
  expired: ["Expired", "Nobody approved this in time, so nothing was done.", "wait"],
  failed: ["Not completed", "You approved this, but it couldn't be completed.", "bad"],
  cancelled: ["Stopped", "The reply was stopped before a decision, so nothing was done.", "neutral"],
  stale: ["No longer waiting", "This was already decided, or the reply ended.", "neutral"],
  ended: ["Not done", "The reply ended before a decision.", "neutral"],
};

/**
 * A write the agent wants to do, waiting for the visitor. `decide(approved)` sends the
 * verdict and resolves on the server's ack (rejects with a ProtocolError).
 */
export class ApprovalCard extends Card {
  constructor({ description, label, decide, announce, afterDecision }) {
    const team = description.startsWith(TEAM_PREFIX);
    const text = team ? description.slice(TEAM_PREFIX.length) : description;
    super({ kind: "approval", caption: label || "Action",
      title: team ? "Waiting for approval" : "Approval needed", text, tone: "pending", announce });
    this.decideFn = decide;
    this.afterDecision = afterDecision;
    this.verdict = null;
    this.team = false;
    this.approve = h("button", { type: "button", className: "primary", textContent: "Approve",
      on: { click: () => this.decide(true) } });
    this.decline = h("button", { type: "button", textContent: "Decline",
      on: { click: () => this.decide(false) } });
    this.actions = h("div", { className: "actions" }, this.approve, this.decline);
    this.body.append(this.actions);
    if (team) this.waitForTeam();
    else announce(`Approval needed: ${text}. Approve or decline.`);
  }

  /** Someone on the company's team decides (the desk): nothing for the visitor to click. */
  waitForTeam() {
    this.team = true;
    this.titleEl.textContent = "Waiting for approval";
    this.actions.remove();
    this.status("A team member will review this. You can keep this page open or come back later.");
  }

  async decide(approved) {
    if (this.settled || this.verdict !== null) return;
    this.approve.disabled = this.decline.disabled = true;
    this.status("Sending…");
    try {
      await this.decideFn(approved);
      this.verdict = approved;
      if (approved) {
        this.titleEl.textContent = "Approved";
        this.body.replaceChildren();
        this.body.hidden = true;
        this.status("Working on it…");
        this.announce("Approved. Working on it.");
      } else {
        this.end("denied");
      }
    } catch (err) {
      if (err.code === "NO_PENDING_CONFIRMATION") {
        this.end("stale");
      } else if (err.code === "NOT_AUTHORIZED_TO_APPROVE") {
        this.waitForTeam();
      } else {
        this.approve.disabled = this.decline.disabled = false;
        this.status(err.code === "DISCONNECTED"
          ? "Not sent: the connection dropped. Try again in a moment."
          : "That didn't go through. Please try again.", true);
      }
    }
    this.afterDecision?.();
  }

  /** The tool's result arrived: it ran (or was refused, or expired). `actionDescription`:
   * what ran, when the approver changed the action the card asked about. */
  result({ isError, result, actionDescription }) {
    if (typeof actionDescription === "string" && actionDescription) {
      this.textEl.textContent = actionDescription;
      this.textEl.hidden = false;
    }
    if (!isError) return this.end("done");
    if (this.team) return this.end(/expired/i.test(String(result)) ? "expired" : "denied");
    if (this.verdict === true) return this.end("failed");
    if (this.verdict === false) return this.end("denied");
    return this.end(/expired/i.test(String(result)) ? "expired" : "denied");
  }

  end(outcome) {
    const endings = this.team ? { ...APPROVAL_ENDINGS, ...TEAM_ENDINGS } : APPROVAL_ENDINGS;
    const [title, detail, tone] = endings[outcome] || APPROVAL_ENDINGS.ended;
    this.settle(title, detail, tone);
  }
}

// --------------------------------------------------------------------------- interactions

const FIELD_DEFAULTS = {
  name: { label: "Name", type: "text", autocomplete: "name" },
  email: { label: "Email", type: "email", autocomplete: "email" },
  phone: { label: "Phone number", type: "tel", autocomplete: "tel" },
};

/**
 * A structured question (PROTOCOL.md, rich interactions): an identity form or choice chips.
 * `submit({values} | {declined: true})` sends the answer; the turn then routes the server's
 * ack (`accepted`), an `interaction_invalid` (`invalid`) or an error (`refused`) back here.
 */
export class InteractionCard extends Card {
  constructor({ interactionId, kind, spec, reason, submit, announce }) {
    const identity = kind === "identity_intake";
    super({ kind: `interaction ${identity ? "identity" : "choices"}`,
      caption: identity ? "Your details" : "Quick question",
      title: identity ? "Share your contact details?" : "Pick an answer",
      text: reason || "", tone: "ask", announce });
    this.interactionId = interactionId;
    this.kind = kind;
    this.spec = spec || {};
    this.submitFn = submit;
    this.inFlight = false;
    this.answer = null;
    this.fields = new Map(); // field key (or question header) -> {input(s), error}
    this.form = h("form", { className: "card-form", noValidate: true,
      on: { submit: (event) => { event.preventDefault(); this.send(); } } });
    this.formError = h("p", { className: "form-error", attrs: { role: "alert" } });
    this.formError.hidden = true;
    if (identity) this.buildIdentity();
    else this.buildChoices();
    this.submitButton = h("button", { type: "submit", className: "primary",
      textContent: identity ? "Share" : "Send answer" });
    this.declineButton = h("button", { type: "button", textContent: "No thanks",
      on: { click: () => this.send(true) } });
    this.form.append(this.formError, h("div", { className: "actions" }, this.submitButton, this.declineButton));
    this.body.append(this.form);
    announce(`${identity ? "The assistant asks for your contact details" : "The assistant asks a question"}${reason ? `: ${reason}` : ""}.`);
  }

  buildIdentity() {
    for (const field of this.spec.fields || []) {
      const known = FIELD_DEFAULTS[field.key] || { label: field.key, type: "text" };
      const id = uid("field");
      const errorId = `${id}-error`;
      const input = h("input", { id, name: field.key, type: known.type,
        attrs: { autocomplete: known.autocomplete, "aria-describedby": errorId,
          "aria-required": field.required ? "true" : null } });
      const error = h("p", { className: "field-error", id: errorId });
      error.hidden = true;
      const label = h("label", { htmlFor: id }, field.label || known.label,
        field.required ? null : h("span", { className: "optional", textContent: " (optional)" }));
      this.form.append(h("div", { className: "field" }, label, input, error));
      this.fields.set(field.key, { inputs: [input], error, focus: input });
      input.addEventListener("input", () => this.clearError(field.key));
    }
  }

  buildChoices() {
    (this.spec.questions || []).forEach((question, index) => {
      const multi = !!question.multiSelect;
      const name = uid(`q${index}`);
      const errorId = `${name}-error`;
      const error = h("p", { className: "field-error", id: errorId });
      error.hidden = true;
      const chips = h("div", { className: "chips" });
      const inputs = [];
      for (const option of question.options || []) {
        const input = h("input", { type: multi ? "checkbox" : "radio", name, value: option.label });
        inputs.push(input);
        chips.append(h("label", { className: "chip", title: option.description || "" }, input,
          h("span", { textContent: option.label })));
      }
      const other = h("input", { type: multi ? "checkbox" : "radio", name, value: "", className: "other-choice" });
      const otherText = h("input", { type: "text", className: "other-text", maxLength: 500,
        attrs: { "aria-label": `Other answer: ${question.question}` } });
      otherText.hidden = true;
      chips.append(h("label", { className: "chip" }, other, h("span", { textContent: "Other…" })));
      chips.addEventListener("change", (event) => {
        this.clearError(question.header);
        otherText.hidden = !other.checked;
        if (event.target === other && other.checked) otherText.focus(); // type it right away
      });
      const descriptions = (question.options || []).filter((o) => o.description);
      const fieldset = h("fieldset", { className: "question", attrs: { "aria-describedby": errorId } },
        h("legend", {}, question.header ? h("span", { className: "q-header", textContent: question.header }) : null,
          h("span", { className: "q-text", textContent: question.question })),
        multi ? h("p", { className: "hint", textContent: "Choose all that apply." }) : null,
        chips, otherText,
        descriptions.length ? h("ul", { className: "option-notes" },
          ...descriptions.map((o) => h("li", {}, h("strong", { textContent: `${o.label}: ` }), o.description))) : null,
        error);
      this.form.append(fieldset);
      this.fields.set(question.header, { inputs, other, otherText, error, focus: inputs[0] || other, question });
    });
  }

  values() {
    if (this.kind === "identity_intake") {
      const values = {};
      for (const [key, { inputs }] of this.fields) {
        const value = inputs[0].value.trim();
        if (value) values[key] = value;
      }
      return values;
    }
    const answers = [];
    for (const [header, { inputs, other, otherText }] of this.fields) {
      const answer = { header };
      const picked = inputs.filter((i) => i.checked).map((i) => i.value);
      if (picked.length) answer.options = picked;
      if (other.checked && otherText.value.trim()) answer.other = otherText.value.trim();
      if (answer.options || answer.other) answers.push(answer); // unanswered: left out
    }
    return { answers };
  }

  send(declined = false) {
    if (this.settled || this.inFlight) return;
    this.clearErrors();
    const frame = declined ? { declined: true } : { values: this.values() };
    this.answer = frame;
    if (!this.submitFn(frame)) {
      this.status("Not sent: the connection dropped. Try again in a moment.", true);
      return;
    }
    this.inFlight = true;
    this.submitButton.disabled = this.declineButton.disabled = true;
    this.status("Sending…");
  }

  clearErrors() {
    this.formError.hidden = true;
    for (const key of this.fields.keys()) this.clearError(key);
  }

  clearError(key) {
    const { inputs, error, otherText } = this.fields.get(key);
    error.hidden = true;
    error.textContent = "";
    for (const input of [...inputs, otherText].filter(Boolean)) input.removeAttribute("aria-invalid");
  }

  /** The server accepted the answer (or the refusal). */
  accepted() {
    this.inFlight = false;
    if (this.answer?.declined) {
      this.settle("You declined", "The assistant won't ask again in this conversation.", "neutral");
    } else {
      this.settle(this.kind === "identity_intake" ? "Details shared" : "Answered", this.summary(), "ok");
    }
  }

  /** `interaction_invalid`: per-field messages; the card stays open. */
  invalid(errors) {
    this.inFlight = false;
    this.submitButton.disabled = this.declineButton.disabled = false;
    this.status("");
    let first = null;
    for (const { field, message } of errors || []) {
      const target = this.fields.get(field);
      if (!target) {
        this.formError.hidden = false;
        this.formError.textContent = field === "values" && this.kind === "identity_intake"
          ? "Please fill in at least one field, or choose No thanks." : sentence(message);
        continue;
      }
      target.error.hidden = false;
      target.error.textContent = sentence(message);
      for (const input of [...target.inputs, target.otherText].filter(Boolean)) input.setAttribute("aria-invalid", "true");
      first = first || target.focus;
    }
    this.announce("Some answers need attention.");
    (first || this.submitButton).focus();
  }

  /** The submission was refused (an error event, not a rule): nothing is waiting, or the
   *  answer could not be read. */
  refused(code) {
    this.inFlight = false;
    if (code === "NO_PENDING_INTERACTION" || code === "INTERACTION_MISMATCH") {
      this.settle("No longer waiting", "This question was already answered, or the reply ended.", "neutral");
      return;
    }
    this.submitButton.disabled = this.declineButton.disabled = false;
    this.status(code === "RATE_LIMITED"
      ? "That's a few tries already. Please check your answers, or choose No thanks."
      : "That didn't go through. Please try again.", true);
  }

  /** The raise tool's result: settles a card answered elsewhere, or one that expired. */
  result({ result }) {
    const status = result && typeof result === "object" ? result.status : null;
    if (status === "no_response") this.settle("No answer in time", "The assistant carried on without it.", "wait");
    else if (status === "declined") this.settle("You declined", "The assistant won't ask again in this conversation.", "neutral");
    else if (status === "submitted") this.settle(this.kind === "identity_intake" ? "Details shared" : "Answered", this.summary(), "ok");
  }

  end(outcome) {
    if (outcome === "cancelled") this.settle("Stopped", "The reply was stopped before you answered.", "neutral");
    else this.settle("No longer waiting", "The reply ended before an answer.", "neutral");
  }

  summary() {
    const values = this.answer?.values;
    if (!values) return "Thanks!";
    if (this.kind === "identity_intake") {
      const shared = Object.keys(values).map((k) => (FIELD_DEFAULTS[k]?.label || k).toLowerCase());
      return shared.length ? `You shared your ${listText(shared)}.` : "Thanks!";
    }
    return (values.answers || []).map((a) =>
      `${a.header}: ${[...(a.options || []), ...(a.other ? [a.other] : [])].join(", ")}`).join(" · ");
  }
}

// ------------------------------------------------------------------------------ history

const DECISION_ENDINGS = {
  approval: {
    approved: APPROVAL_ENDINGS.done, denied: APPROVAL_ENDINGS.denied,
    expired: APPROVAL_ENDINGS.expired, cancelled: APPROVAL_ENDINGS.cancelled,
  },
  interaction: {
    submitted: ["Answered", "Thanks!", "ok"],
    declined: ["You declined", "The assistant won't ask again in this conversation.", "neutral"],
    no_response: ["No answer in time", "The assistant carried on without it.", "wait"],
    cancelled: ["Stopped", "The reply was stopped before you answered.", "neutral"],
  },
};

/** A decision from a reply's record (after a reload): the card in its final state. Who
 * decided is `decidedBy`; a record kept before it was has only the sentence's prefix. */
export function decisionCard({ kind, tool, outcome, description, decidedBy }, { label, failed } = {}) {
  const approval = kind !== "interaction";
  const identity = tool === "request_identity_intake";
  const prefixed = String(description || "").startsWith(TEAM_PREFIX);
  if (prefixed) description = description.slice(TEAM_PREFIX.length);
  const team = approval && (decidedBy ? decidedBy === "team" : prefixed);
  let ending = DECISION_ENDINGS[approval ? "approval" : "interaction"][outcome]
    || ["Decided", "", "neutral"];
  if (team) ending = { approved: TEAM_ENDINGS.done, denied: TEAM_ENDINGS.denied }[outcome] || ending;
  if (approval && outcome === "approved" && failed) ending = (team ? TEAM_ENDINGS : APPROVAL_ENDINGS).failed;
  if (identity && outcome === "submitted") ending = ["Details shared", "Thanks!", "ok"];
  const card = new Card({ kind: approval ? "approval" : "interaction",
    caption: approval ? label || "Action" : identity ? "Your details" : "Quick question",
    title: ending[0], text: description || "", tone: ending[2], announce: () => {} });
  card.body.hidden = true;
  card.status(ending[1]);
  return card.node;
}

function sentence(text) {
  const s = String(text || "").trim();
  return s ? s[0].toUpperCase() + s.slice(1) + (/[.!?]$/.test(s) ? "" : ".") : "";
}

function listText(items) {
  return items.length < 2 ? items.join("") : `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}
