// <switchboard-chat>, part 2 of 3: the component (after look.js; link.js adds its connection and defines it).

let counter = 0;
const newId = (prefix) => `${prefix}-${Date.now().toString(36)}-${(++counter).toString(36)}`;

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : String(v));
  }
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function safeUrl(url) {
  try {
    const u = new URL(url);
    return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
  } catch {
    return null;
  }
}

class SwitchboardChat extends HTMLElement {
  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this.ws = null;
    this.sessionId = null;
    this.epoch = null;
    this.lastSeq = 0;
    this.turn = null; // requestId of the running turn
    this.bubble = null; // the running turn's reply
    this.steps = new Map(); // tool name → its step line in the running turn
    this.attempt = 0;
    this.stopped = false;
    this.resumeToken = null; // proves this page owns the session on a new socket (from the create ack)
    this.turnSeq = 0; // the last event before the running turn's first: a reload shows the turn from there
    this.doneTurn = null; // a turn that ended while the page reloaded: its replayed events are not shown twice
  }

  connectedCallback() {
    if (this.shadowRoot.childElementCount) return;
    const style = el("style", {}, STYLE);
    const tpl = el("template");
    tpl.innerHTML = MARKUP;
    this.shadowRoot.append(style, tpl.content.cloneNode(true));
    this.log = this.shadowRoot.querySelector(".log");
    this.stateEl = this.shadowRoot.querySelector(".state");
    this.input = this.shadowRoot.querySelector("#sb-input");
    this.stopBtn = this.shadowRoot.querySelector(".stop");
    this.shadowRoot.querySelector(".composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.sendMessage(this.input.value);
    });
    this.stopBtn.addEventListener("click", () => this.cancel());
    this.stopped = false;
    this.restore();
    this.connect();
  }

  disconnectedCallback() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.ws) this.ws.close(1000);
  }

  // Says why Enter did nothing (the message stays in the box); an empty text hides the hint.
  hint(words) {
    const h = this.shadowRoot.querySelector(".hint");
    h.textContent = words;
    h.hidden = !words;
  }

  sendMessage(text) {
    const message = String(text || "").trim();
    if (!message) return;
    if (this.turn) {
      this.hint("Please wait for the reply to finish (or press Stop) before sending another message.");
      return;
    }
    const requestId = newId("msg");
    // `send` refuses while the socket is not open; without a session there is nothing to send to yet.
    if (!this.sessionId || !this.send({ action: "send_message", requestId, sessionId: this.sessionId, message })) {
      this.hint("Not connected yet. Your message is kept here: send it again once the chat says Connected.");
      return;
    }
    this.hint("");
    this.input.value = "";
    this.add(el("div", { class: "msg user", part: "message user" }, message));
    this.startTurn(requestId);
  }

  startTurn(requestId) {
    this.turn = requestId;
    this.turnSeq = this.lastSeq;
    this.save();
    this.bubble = null;
    this.steps = new Map();
    this.stopBtn.hidden = false;
  }

  endTurn() {
    this.turn = null;
    this.save();
    this.hint("");
    this.bubble = null;
    this.stopBtn.hidden = true;
    this.input.focus();
  }

  cancel() {
    if (this.turn) this.send({ action: "cancel", requestId: this.turn, sessionId: this.sessionId });
  }

  add(node) {
    this.log.append(node);
    this.log.scrollTop = this.log.scrollHeight;
    return node;
  }

  reply() {
    if (!this.bubble) this.bubble = this.add(el("div", { class: "msg assistant", part: "message assistant" }, ""));
    return this.bubble;
  }

  showError(code, words) {
    this.add(el("div", { class: "error", role: "alert", "data-code": code || "" }, words));
  }

  // Session events carry seq and epoch: a replayed or repeated event is shown once.
  fresh(frame) {
    if (typeof frame.seq !== "number" || frame.sessionId !== this.sessionId) return true;
    if (frame.epoch && frame.epoch !== this.epoch) {
      this.epoch = frame.epoch;
      this.lastSeq = 0;
    }
    if (frame.seq <= this.lastSeq) return false;
    this.lastSeq = frame.seq;
    this.save();
    return true;
  }

  onFrame(f) {
    // After a reload, the session's events wait until its history is shown (link.js).
    if (this.holding && typeof f.seq === "number" && f.sessionId === this.sessionId) {
      this.holding.push(f);
      return;
    }
    if (!this.fresh(f)) return;
    if (this.doneTurn && f.requestId === this.doneTurn && typeof f.seq === "number") return;
    const data = f.data || {};
    const inner = data.data || {};
    switch (f.type) {
      case "immediate_response":
        if (f.requestId === this.historyRid) {
          this.showHistory(Array.isArray(data.messages) ? data.messages : []);
        } else if (f.requestId === this.createRid && data.sessionId) {
          this.sessionId = data.sessionId;
          this.resumeToken = data.resumeToken || null;
          this.save();
          // The agent's greeting opens an empty conversation (it is not a message of it).
          if (data.greeting && !this.log.querySelector(".msg")) {
            this.add(el("div", { class: "msg assistant greeting", part: "message assistant" }, data.greeting));
          }
        } else if (data.interactionId && this.interaction?.dataset.interactionId === data.interactionId) {
          this.closeCard(this.interaction, data.declined ? "Declined." : "Thanks!");
          this.interaction = null;
        } else if (data.epoch !== undefined && data.sessionId === this.sessionId) {
          this.triedContext = false;
          if (data.resumeToken) this.resumeToken = data.resumeToken;
          this.save();
          if (this.reloaded && f.requestId === this.resumeRid) this.askHistory();
          if (data.epoch !== this.epoch) {
            this.epoch = data.epoch;
            if (!data.recovered) this.lastSeq = 0;
          }
        }
        break;
      case "stream_token":
        if (f.requestId === this.turn || !this.turn) {
          if (!this.turn) this.startTurn(f.requestId);
          this.reply().append(document.createTextNode(f.token ?? data.token ?? ""));
          this.log.scrollTop = this.log.scrollHeight;
        }
        break;
      case "stream_chunk":
        this.toolStep(data.state?.rawResponse || {});
        break;
      case "write_confirmation_required":
        this.approvalCard(inner);
        break;
      case "interaction_required":
        this.interactionCard(inner);
        break;
      case "interaction_invalid":
        this.showFieldErrors(inner);
        break;
      case "otp_verification_required":
        this.otpCard(inner);
        break;
      case "otp_sent":
        if (this.otp) this.otp.status.textContent = `We sent a code to ${inner.maskedDestination}.`;
        break;
      case "otp_invalid":
        if (this.otp) this.otp.status.textContent = inner.message || "That code did not work.";
        break;
      case "otp_verified":
        if (this.otp) this.closeCard(this.otp.card, inner.message || "Verified.");
        this.otp = null;
        break;
      case "eventual_response":
        this.finish(inner);
        break;
      case "cancelled":
        this.add(el("div", { class: "note" }, "Stopped."));
        this.endTurn();
        break;
      case "error": {
        const err = f.error || data.error || {};
        if (err.code === "SESSION_NOT_FOUND" && f.requestId && [this.resumeRid, this.historyRid].includes(f.requestId)) {
          this.lostSession();
          break;
        }
        this.showError(err.code, ERROR_WORDS[err.code] || err.message || "Something went wrong.");
        if (err.code === "SESSION_NOT_FOUND") this.sessionId = null;
        // OTP_SEND_FAILED is said mid-turn; the turn still ends with its eventual_response.
        if (f.requestId && f.requestId === this.turn && err.code !== "OTP_SEND_FAILED") this.endTurn();
        break;
      }
      case "reconnect":
        // The server is about to close this socket (a pod draining, or a slow consumer): go now.
        if (this.ws) {
          const ws = this.ws;
          this.ws = null;
          ws.close(1000);
          this.scheduleReconnect(data.retryAfterMs ?? 200);
        }
        break;
      default:
        break;
    }
  }

  toolStep(raw) {
    if (raw.toolCall) {
      // The server's title when it sends one (always on a public agent); an internal agent's tool by its name.
      const c = raw.toolCall;
      const step = this.add(el("div", { class: "step", part: "step" }, c.title ? `${c.title}…` : `Using ${c.name}…`));
      this.steps.set(raw.toolCall.name, step);
    } else if (raw.toolResult) {
      const r = raw.toolResult;
      // A person's "no" is a decision, not a failure: say so.
      const denied = r.isError && typeof r.result === "string" && r.result.startsWith("User denied");
      const label = r.title || r.name;
      const words = denied ? `${label}: declined` : r.isError ? `${label}: failed` : `${label}: done`;
      const step = this.steps.get(r.name);
      if (step) step.textContent = words;
      else this.add(el("div", { class: "step", part: "step" }, words));
    }
  }

  finish(inner) {
    const parts = inner.response?.responseParts || [];
    // The terminal event is authoritative: the streamed text is replaced by it.
    this.reply().textContent = parts.join("");
    const citations = Array.isArray(inner.citations) ? inner.citations : [];
    if (citations.length) {
      const box = el("div", { class: "sources", part: "sources" });
      box.append(el("strong", {}, "Sources"));
      const list = el("ol");
      for (const c of citations) {
        const li = el("li");
        const url = c.url && safeUrl(c.url);
        li.append(url ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, c.title || url)
          : el("span", {}, c.title || c.id));
        // The passage that grounded the answer, as text.
        if (c.snippet) li.append(el("span", { class: "snippet", part: "snippet" }, c.snippet));
        list.append(li);
      }
      box.append(list);
      this.add(box);
    }
    this.endTurn();
  }

  card(label) {
    const card = this.add(el("form", { class: "card", part: "card", "aria-label": label }));
    return card;
  }

  closeCard(card, words) {
    for (const c of card.querySelectorAll("input, button")) c.disabled = true;
    for (const slot of card.querySelectorAll(".field-error")) slot.textContent = "";
    card.append(el("p", { class: "note" }, words));
  }

  approvalCard(inner) {
    const card = this.card("Approval needed");
    card.append(el("p", {}, inner.actionDescription || `Allow ${inner.toolId}?`));
    const yes = el("button", { type: "button", class: "primary", "data-action": "approve" }, "Approve");
    const no = el("button", { type: "button", "data-action": "deny" }, "Deny");
    const decide = (approved) => {
      this.send({ action: "confirm_tool_action", requestId: newId("confirm"), sessionId: this.sessionId, approved });
      this.closeCard(card, approved ? "Approved." : "Denied.");
    };
    yes.addEventListener("click", () => decide(true));
    no.addEventListener("click", () => decide(false));
    card.append(yes, document.createTextNode(" "), no);
    yes.focus();
  }

  interactionCard(inner) {
    const spec = inner.spec || {};
    const card = this.card(inner.kind === "choices" ? "Choose" : "Your details");
    card.dataset.interactionId = inner.interactionId;
    card.append(el("p", {}, `We need a few details ${inner.reason || ""}`.trim()));
    const collect = [];
    if (inner.kind === "identity_intake") {
      for (const f of spec.fields || []) {
        const id = newId("f");
        card.append(el("label", { for: id }, (f.label || FIELD_LABELS[f.key] || f.key) + (f.required ? " *" : "")));
        const input = el("input", { id, name: f.key, type: FIELD_TYPES[f.key] || "text", required: !!f.required,
          autocomplete: f.key === "phone" ? "tel" : f.key });
        card.append(input, el("div", { class: "field-error", "data-field": f.key, "aria-live": "polite" }));
        collect.push(() => [f.key, input.value]);
      }
    } else {
      for (const q of spec.questions || []) {
        const set = el("fieldset");
        set.append(el("legend", {}, q.question));
        const chips = el("div", { class: "chips", role: q.multiSelect ? "group" : "radiogroup" });
        const chosen = new Set();
        for (const o of q.options || []) {
          const chip = el("button", { type: "button", class: "chip", "aria-pressed": "false",
            title: o.description || undefined }, o.label);
          chip.addEventListener("click", () => {
            if (!q.multiSelect) {
              chosen.clear();
              for (const c of chips.children) c.setAttribute("aria-pressed", "false");
            }
            if (chosen.has(o.label)) chosen.delete(o.label);
            else chosen.add(o.label);
            chip.setAttribute("aria-pressed", String(chosen.has(o.label)));
          });
          chips.append(chip);
        }
        set.append(chips, el("div", { class: "field-error", "data-field": q.header, "aria-live": "polite" }));
        card.append(set);
        collect.push(() => ["answer", { header: q.header, options: [...chosen] }]);
      }
    }
    const summary = el("div", { class: "field-error", "data-field": "values", "aria-live": "polite" });
    const submit = el("button", { type: "submit", class: "primary" }, "Send");
    const decline = el("button", { type: "button" }, "No thanks");
    card.append(summary, submit, document.createTextNode(" "), decline);
    const base = { action: "submit_interaction", sessionId: this.sessionId, interactionId: inner.interactionId,
      kind: inner.kind };
    card.addEventListener("submit", (e) => {
      e.preventDefault();
      let values;
      if (inner.kind === "identity_intake") {
        values = {};
        for (const get of collect) {
          const [k, v] = get();
          if (v.trim()) values[k] = v;
        }
      } else {
        values = { answers: collect.map((get) => get()[1]) };
      }
      this.send({ ...base, requestId: newId("submit"), values });
    });
    decline.addEventListener("click", () => {
      this.send({ ...base, requestId: newId("submit"), declined: true });
      this.closeCard(card, "Declined.");
    });
    this.interaction = card;
    card.querySelector("input, button")?.focus();
  }

  showFieldErrors(inner) {
    const card = this.interaction;
    if (!card || card.dataset.interactionId !== inner.interactionId) return;
    for (const slot of card.querySelectorAll(".field-error")) slot.textContent = "";
    for (const e of inner.errors || []) {
      const slot = [...card.querySelectorAll(".field-error")].find((s) => s.dataset.field === e.field);
      if (slot) slot.textContent = e.message;
    }
  }

  otpCard(inner) {
    const card = this.card("Verify your identity");
    card.append(el("p", {}, inner.actionDescription || "Verify your identity to continue."));
    const status = el("p", { class: "note", "aria-live": "polite" }, "Sending a code…");
    const id = newId("otp");
    const input = el("input", { id, name: "code", inputmode: "numeric", autocomplete: "one-time-code" });
    card.append(status, el("label", { for: id }, "Code"), input,
      el("button", { type: "submit", class: "primary" }, "Verify"));
    card.addEventListener("submit", (e) => {
      e.preventDefault();
      if (input.value.trim()) {
        this.send({ action: "verify_otp", requestId: newId("otp"), sessionId: this.sessionId, code: input.value.trim() });
      }
    });
    this.otp = { card, status };
    input.focus();
  }
}

// Interaction answers are sent when the card is submitted; the server's interaction_invalid lists what to fix and
// the card stays until an answer is accepted (the resumed turn then continues in the log).
export { SwitchboardChat };
