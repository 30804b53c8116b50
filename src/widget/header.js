// <switchboard-chat>: Switchboard's chat widget, a dependency-free web component (no framework, no build step).
//
//   <script type="module" src="https://sb.example.com/widget.js"></script>
//   <switchboard-chat agent-id="…" endpoint="wss://sb.example.com/ws"></switchboard-chat>
//
// Attributes: endpoint (default: /ws on the server the script came from), agent-id, token (a JWT for
// auth.mode = "jwt"), auth-context (JSON {userId, timestamp, signature} signed by the host page's server),
// auth-context-url (the host's address answering a fresh such JSON, asked when the widget has none or a
// resume needs one), user-name, user-email. Theme with CSS custom properties on the element: --sb-accent, --sb-bg, --sb-fg,
// --sb-muted, --sb-radius, --sb-font.
//
// It speaks the smooth-operator protocol with the `switchboard` subprotocol: every session event carries `seq`
// and `epoch`, so after a dropped socket or a `reconnect` frame (a pod draining) it reconnects with backoff and
// `resume_session` from the last event it showed: no token is lost or shown twice. It keeps its session, resume
// token and position in sessionStorage, so a page reload shows the conversation and resumes it. Model and tool text is only
// ever set as text (textContent), never parsed as HTML.

