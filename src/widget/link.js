
// <switchboard-chat>, part 3 of 3: the connection. It opens the socket (with backoff, and says why when the
// server refuses it), creates the session or resumes it, and keeps what a page reload needs in sessionStorage
// (per endpoint and agent): the session, its resume token, the last event shown and the turn running. After a
// reload it shows the conversation's messages, then resumes from the running turn's start (or the last event),
// so a reply being written goes on where it was. A socket without a JWT proves it owns the session with the
// resume token; when that is gone it asks the host page for a fresh authContext (`auth-context-url`).

const KEEP_PREFIX = "switchboard-chat:";

const LINK = {
  get endpoint() {
    const given = this.getAttribute("endpoint");
    if (given) return given;
    const u = new URL("/ws", import.meta.url);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u.href;
  },

  keepKey() {
    return `${KEEP_PREFIX}${this.endpoint}#${this.getAttribute("agent-id") || ""}`;
  },

  // What a reload needs, or nothing once the session is gone. Storage may be off (privacy modes): then a reload
  // starts a new conversation, as before.
  save() {
    try {
      if (!this.sessionId) {
        sessionStorage.removeItem(this.keepKey());
        return;
      }
      sessionStorage.setItem(this.keepKey(), JSON.stringify({ sessionId: this.sessionId,
        resumeToken: this.resumeToken, seq: this.lastSeq, epoch: this.epoch, turn: this.turn, turnSeq: this.turnSeq }));
    } catch {
      // no storage: nothing kept
    }
  },

  restore() {
    let kept = null;
    try {
      kept = JSON.parse(sessionStorage.getItem(this.keepKey()) || "null");
    } catch {
      kept = null;
    }
    if (!kept || typeof kept.sessionId !== "string") return;
    this.sessionId = kept.sessionId;
    this.resumeToken = kept.resumeToken || null;
    this.lastSeq = Number(kept.seq) || 0;
    this.epoch = kept.epoch || null;
    // A turn that was running at the reload is shown again from its first event.
    this.keptTurn = kept.turn || null;
    this.turnSeq = Number(kept.turnSeq) || 0;
    this.reloaded = true;
  },

  // A signed authContext for this page's visitor: from the host's `auth-context-url` (fresh, for a new socket or
  // a lost token), else the `auth-context` attribute. undefined: none; null: the given one is not JSON.
  async authContext() {
    const url = this.getAttribute("auth-context-url");
    if (url) {
      try {
        const r = await fetch(url, { credentials: "include", cache: "no-store" });
        if (r.ok) return await r.json();
      } catch {
        // the host did not answer: go on without one
      }
    }
    const ctx = this.getAttribute("auth-context");
    if (!ctx) return undefined;
    try {
      return JSON.parse(ctx);
    } catch {
      return null;
    }
  },

  setState(state, words) {
    this.stateEl.dataset.state = state;
    this.stateEl.textContent = words;
  },

  connect() {
    if (this.stopped) return;
    const url = new URL(this.endpoint);
    const token = this.getAttribute("token");
    if (token) url.searchParams.set("token", token);
    if (this.stateEl.dataset.state !== "busy") {
      this.setState(this.attempt ? "reconnecting" : "connecting", this.attempt ? "Reconnecting…" : "Connecting…");
    }
    let ws;
    try {
      ws = new WebSocket(url.href, ["switchboard"]);
    } catch (e) {
      this.showError(null, "The chat address is not valid.");
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.attempt = 0;
      this.setState("connected", "Connected");
      if (!this.sessionId) {
        this.createSession();
      } else if (this.reloaded) {
        // After a reload: prove ownership (resume), then show the conversation so far, then the events from
        // where the page was (a running turn from its first event), held until the history is shown.
        if (this.keptTurn) this.lastSeq = Math.min(this.lastSeq, this.turnSeq);
        this.holding = [];
        this.resume();
      } else {
        this.resume();
      }
    };
    ws.onmessage = (m) => {
      let frame;
      try {
        frame = JSON.parse(m.data);
      } catch {
        return;
      }
      this.onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (ev.code === 4401) this.showError(null, "Your session expired. Please reload the page.");
      if (opened) {
        this.scheduleReconnect();
      } else {
        // Refused before it opened: a browser hides the status, so ask the same address over plain HTTP.
        this.whyRefused(url).then((waitMore) => {
          if (waitMore !== null) this.scheduleReconnect(waitMore);
        });
      }
    };
  },

  // resume_session from the last event shown, proving ownership with the resume token (or `authContext`).
  resume(authContext) {
    this.resumeRid = newId("resume");
    const frame = { action: "resume_session", requestId: this.resumeRid, sessionId: this.sessionId,
      afterSeq: this.lastSeq, epoch: this.epoch || undefined };
    if (authContext) frame.authContext = authContext;
    else if (this.resumeToken) frame.resumeToken = this.resumeToken;
    this.send(frame);
  },

  // After a reload the resume was accepted: ask for the conversation so far.
  askHistory() {
    this.historyRid = newId("history");
    this.send({ action: "get_conversation_messages", requestId: this.historyRid, sessionId: this.sessionId, limit: 50 });
  },

  // The reload's history arrived: show it, then the events held since the resume.
  showHistory(messages) {
    this.reloaded = false;
    for (const m of [...messages].reverse()) {
      const mine = m.direction === "inbound";
      const text = m.content?.text ?? "";
      this.add(el("div", { class: `msg ${mine ? "user" : "assistant"}`, part: `message ${mine ? "user" : "assistant"}` }, text));
    }
    const last = messages[0];
    if (this.keptTurn) {
      if (last && last.direction === "inbound") {
        // Still running: its reply is shown again from its first event.
        this.startTurn(this.keptTurn);
      } else {
        // It ended meanwhile and its reply is in the history: its replayed events are not shown twice.
        this.doneTurn = this.keptTurn;
      }
      this.keptTurn = null;
    }
    const held = this.holding || [];
    this.holding = null;
    for (const f of held) this.onFrame(f);
  },

  // The session could not be resumed (expired, or the token no longer holds): ask for a fresh authContext once,
  // else say so and start a new conversation.
  async lostSession() {
    if (!this.triedContext) {
      this.triedContext = true;
      const ctx = await this.authContext();
      if (ctx) {
        this.resume(ctx);
        return;
      }
    }
    this.triedContext = false;
    this.reloaded = false;
    this.holding = null;
    this.keptTurn = null;
    this.sessionId = null;
    this.resumeToken = null;
    this.lastSeq = 0;
    this.epoch = null;
    if (this.turn) this.endTurn();
    this.save();
    this.add(el("div", { class: "note", "data-state": "new-conversation" }, "That conversation has ended. Starting a new one."));
    this.createSession();
  },

  // Why the server refused the socket, shown in words. Resolves to a delay before trying again, undefined for
  // the usual backoff, or null to stop (only a reload can help: sign-in needed, or not allowed on this site).
  async whyRefused(url) {
    const http = new URL(url.href);
    http.protocol = http.protocol === "wss:" ? "https:" : "http:";
    let status = 0;
    try {
      status = (await fetch(http.href, { credentials: "omit", cache: "no-store" })).status;
    } catch {
      return undefined; // unreachable: the network or the server is down
    }
    if (status === 401) {
      this.setState("refused", "Sign-in needed");
      this.showError("UNAUTHORIZED", "Please sign in to use this chat, then reload the page.");
      return null;
    }
    if (status === 403) {
      this.setState("refused", "Not available");
      this.showError("ORIGIN_NOT_ALLOWED", "This chat is not available on this site.");
      return null;
    }
    if (status === 429) {
      this.setState("busy", "Too many chats open");
      if (!this.shadowRoot.querySelector('.error[data-code="RATE_LIMITED"]')) {
        this.showError("RATE_LIMITED", "Too many chats are open from here. Close another chat tab; this one keeps trying.");
      }
      return 5000 + Math.random() * 5000;
    }
    return undefined;
  },

  scheduleReconnect(afterMs) {
    // A refusal's words (too many chats open) stay up while it keeps trying.
    if (this.stateEl.dataset.state !== "busy") this.setState("reconnecting", "Reconnecting…");
    const base = Math.min(10000, 300 * 2 ** this.attempt);
    const delay = afterMs ?? base / 2 + Math.random() * (base / 2);
    this.attempt += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  },

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  },

  async createSession() {
    const frame = { action: "create_conversation_session", requestId: newId("create"),
      agentId: this.getAttribute("agent-id") || "", supports: SUPPORTS };
    const name = this.getAttribute("user-name");
    const email = this.getAttribute("user-email");
    if (name) frame.userName = name;
    if (email) frame.userEmail = email;
    const ctx = await this.authContext();
    if (ctx === null) {
      this.showError(null, ERROR_WORDS.AUTH_CONTEXT_INVALID);
      return;
    }
    if (ctx) frame.authContext = ctx;
    this.createRid = frame.requestId;
    this.send(frame);
  },
};

for (const [name, d] of Object.entries(Object.getOwnPropertyDescriptors(LINK))) {
  Object.defineProperty(SwitchboardChat.prototype, name, d);
}

if (!customElements.get("switchboard-chat")) customElements.define("switchboard-chat", SwitchboardChat);
