// <switchboard-chat>, part 1 of 2: what the widget looks like and says (served as one script with widget.js:
// the server concatenates the two, so there is still no build step).

const SUPPORTS = ["identity_form", "choice_chips"];
const FIELD_LABELS = { name: "Name", email: "Email", phone: "Phone" };
const FIELD_TYPES = { name: "text", email: "email", phone: "tel" };
const ERROR_WORDS = {
  LLM_UNAVAILABLE: "The assistant is unavailable right now. Please try again in a moment.",
  TURN_INTERRUPTED: "The reply was interrupted. Please ask again.",
  RATE_LIMITED: "You are sending messages too quickly. Please wait a moment.",
  TURN_IN_PROGRESS: "Please wait for the current reply to finish.",
  ORIGIN_NOT_ALLOWED: "This chat is not available on this site.",
  AUTH_CONTEXT_INVALID: "Your sign-in could not be verified. Please reload the page.",
  OTP_SEND_FAILED: "The verification code could not be sent.",
  AGENT_NOT_FOUND: "This assistant is not available.",
  AGENT_ERROR: "The assistant could not finish this reply.",
  SESSION_NOT_FOUND: "This conversation has ended. Reload the page to start a new one.",
};

const STYLE = `
:host { --sb-accent: #4f46e5; --sb-bg: #ffffff; --sb-fg: #1d2330; --sb-muted: #6b7280; --sb-radius: 12px;
  --sb-font: system-ui, -apple-system, "Segoe UI", sans-serif; display: block; font-family: var(--sb-font);
  color: var(--sb-fg); }
.box { display: flex; flex-direction: column; height: 100%; min-height: 20rem; background: var(--sb-bg);
  border: 1px solid #d8dbe2; border-radius: var(--sb-radius); overflow: hidden; }
header { display: flex; justify-content: space-between; align-items: center; padding: .5rem .8rem;
  border-bottom: 1px solid #e5e7eb; font-weight: 600; }
.state { font-weight: 400; font-size: .8rem; color: var(--sb-muted); }
.state[data-state="connected"]::before { content: "● "; color: #16a34a; }
.state[data-state="reconnecting"]::before, .state[data-state="connecting"]::before { content: "● "; color: #d97706; }
.log { flex: 1; overflow-y: auto; padding: .8rem; display: flex; flex-direction: column; gap: .5rem; }
.msg { max-width: 85%; padding: .5rem .75rem; border-radius: var(--sb-radius); white-space: pre-wrap;
  overflow-wrap: anywhere; line-height: 1.4; }
.user { align-self: flex-end; background: var(--sb-accent); color: #fff; }
.assistant { align-self: flex-start; background: #f1f2f5; }
.step, .note { align-self: flex-start; font-size: .8rem; color: var(--sb-muted); }
.error { align-self: stretch; font-size: .85rem; color: #b91c1c; background: #fef2f2; padding: .4rem .6rem;
  border-radius: 6px; }
.card { align-self: stretch; border: 1px solid #d8dbe2; border-radius: var(--sb-radius); padding: .6rem .8rem; }
.card p { margin: 0 0 .5rem; }
.card label { display: block; font-size: .85rem; margin: .3rem 0 .1rem; }
.card input { width: 100%; box-sizing: border-box; padding: .35rem .5rem; font: inherit; }
.card fieldset { border: 0; padding: 0; margin: 0 0 .5rem; }
.card legend { font-size: .9rem; margin-bottom: .25rem; }
.field-error { color: #b91c1c; font-size: .8rem; }
.chips { display: flex; flex-wrap: wrap; gap: .3rem; }
.chip[aria-pressed="true"] { background: var(--sb-accent); color: #fff; }
.sources { align-self: flex-start; font-size: .8rem; margin: 0; }
.sources ol { margin: .2rem 0 0; padding-left: 1.2rem; }
.sources .snippet { display: block; color: var(--sb-muted, #5b6270); overflow-wrap: anywhere; }
button { font: inherit; border: 1px solid #c7cad1; background: #fff; border-radius: 6px; padding: .3rem .7rem;
  cursor: pointer; }
button.primary { background: var(--sb-accent); border-color: var(--sb-accent); color: #fff; }
button:disabled { opacity: .5; cursor: default; }
button:focus-visible, input:focus-visible { outline: 2px solid var(--sb-accent); outline-offset: 1px; }
form.composer { display: flex; gap: .4rem; padding: .6rem; border-top: 1px solid #e5e7eb; }
form.composer input { flex: 1; min-width: 0; padding: .45rem .6rem; font: inherit; border: 1px solid #c7cad1;
  border-radius: 6px; }
form.composer button { flex: none; }
.hint { font-size: .8rem; color: #4b5563; padding: .3rem .6rem 0; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

// Static markup only: nothing from the server or the page is ever interpolated into HTML.
const MARKUP = `
<div class="box" part="box">
  <header><span class="title">Chat</span><span class="state" role="status" data-state="connecting">Connecting…</span></header>
  <div class="log" role="log" aria-live="polite" aria-label="Conversation"></div>
  <div class="hint" role="status" aria-live="polite" hidden></div>
  <form class="composer">
    <label class="sr-only" for="sb-input">Message</label>
    <input id="sb-input" name="message" autocomplete="off" placeholder="Type a message…" maxlength="10000">
    <button type="submit" class="primary send">Send</button>
    <button type="button" class="stop" hidden aria-label="Stop the reply">Stop</button>
  </form>
</div>`;

