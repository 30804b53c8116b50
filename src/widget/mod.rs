//! The browser widget: `<switchboard-chat>`, a dependency-free web component written in the project
//! (`widget.js`, no build step), served at `GET /widget.js` (short cache) and at a URL per version
//! (`/widget/v<version>.js`, cached for a year and immutable, so a page can pin it with Subresource Integrity),
//! and a demo page at `GET /` when `widget.enabled`. [`auth`] holds the per-agent origin and `authContext`
//! checks.

pub(crate) mod auth;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::app::App;

/// The component's source, as served: one module script, kept in four files (the header with the usage notes,
/// the look, the behaviour, the connection) only so that each stays readable.
const WIDGET_JS: &str =
    concat!(include_str!("header.js"), include_str!("look.js"), include_str!("widget.js"), include_str!("link.js"));
const DEMO_HTML: &str = include_str!("demo.html");

/// The path of this version's immutable copy.
pub(crate) fn versioned_path() -> String {
    format!("/widget/v{}.js", env!("CARGO_PKG_VERSION"))
}

/// A strong validator for the source (FNV-1a of the bytes; it changes with every edit of the file), computed
/// once: the source is a constant, and every request for the script compares against it.
fn etag() -> &'static str {
    static ETAG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in WIDGET_JS.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("\"{h:016x}\"")
    });
    &ETAG
}

pub(crate) fn router(app: Arc<App>) -> Router {
    let mut r = Router::new()
        .route("/widget.js", get(|h: HeaderMap| async move { script(&h, "public, max-age=300") }))
        .route(&versioned_path(), get(|h: HeaderMap| async move { script(&h, "public, max-age=31536000, immutable") }))
        // Browsers ask for `/favicon.ico` whatever the page links; both answer the same small SVG.
        .route("/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon));
    if app.config.widget_page() {
        r = r.route("/", get(demo_page));
    }
    r.with_state(app)
}

fn script(headers: &HeaderMap, cache: &'static str) -> Response {
    let tag = etag();
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(tag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    let mut resp = WIDGET_JS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Any site may load the script (it is public code); the socket is what origins are checked on.
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// A speech bubble in the widget's accent colour.
const FAVICON_SVG: &str = concat!(
    r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">"##,
    r##"<path fill="#4f46e5" d="M4 6a4 4 0 0 1 4-4h16a4 4 0 0 1 4 4v12a4 4 0 0 1-4 4H13l-6 6v-6H8a4 4 0 0 1-4-4z"/>"##,
    r##"<circle cx="11" cy="12" r="2" fill="#fff"/><circle cx="16" cy="12" r="2" fill="#fff"/>"##,
    r##"<circle cx="21" cy="12" r="2" fill="#fff"/></svg>"##
);

async fn favicon() -> Response {
    let mut resp = FAVICON_SVG.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    resp
}

/// The demo page: the widget on the built-in (or first configured) agent, talking to this server.
async fn demo_page(State(app): State<Arc<App>>) -> Response {
    let page = DEMO_HTML
        .replace("{{SCRIPT}}", &versioned_path())
        .replace("{{AGENT}}", &html_attr(app.agents.default_id()))
        .replace("{{VERSION}}", env!("CARGO_PKG_VERSION"))
        .replace("{{NOTE}}", note(&app.config));
    let mut resp = Html(page).into_response();
    // The page runs only its own script: no inline code, no other origin.
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'"),
    );
    resp
}

/// What a visitor of the demo page must know first: with `auth.mode = "jwt"` the widget connects only with a
/// sign-in token, which this page cannot have (it is served only when `widget.enabled` asks for it).
fn note(config: &crate::config::Config) -> &'static str {
    if config.auth.mode == crate::config::AuthMode::Jwt {
        "<p class=\"note\" role=\"note\"><strong>This server needs a sign-in token.</strong> It runs with \
         <code>auth.mode = \"jwt\"</code>: the chat below connects only when the page gives the widget a valid \
         JWT in its <code>token</code> attribute, which this demo page cannot do. Embed the widget in your own \
         page with the visitor's token, or try the demo on a server without JWT auth.</p>"
    } else {
        ""
    }
}

fn html_attr(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}
