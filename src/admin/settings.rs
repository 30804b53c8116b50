//! `GET/PUT /admin/settings`: an org's model and system prompt, stored in the backend and read by every pod
//! when a turn starts (curators read, admins write).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::{AdminCaller, AdminError, AdminResult};
use crate::app::App;
use crate::auth::Role;
use crate::backend::OrgSettings;

/// Longest accepted system prompt, in characters.
const MAX_PROMPT_CHARS: usize = 20_000;

fn settings_json(s: &OrgSettings) -> Value {
    let updated = (s.updated_at_ms > 0).then(|| crate::util::rfc3339_from_ms(s.updated_at_ms));
    json!({"settings": {"model": s.model, "systemPrompt": s.system_prompt, "updatedAt": updated}})
}

/// An org may choose a model the deployment offers: `llm.model` or one of an agent's `models` (another name
/// could run up a bill on a model nobody chose to pay for, or fail every turn of the org).
fn offered(app: &App, model: &str) -> Result<(), AdminError> {
    let config = &app.config;
    let mut models: Vec<&str> = std::iter::once(config.llm.model.as_str())
        .chain(config.agents.iter().flat_map(|a| a.models.iter().map(String::as_str)))
        .collect();
    if models.contains(&model) {
        return Ok(());
    }
    models.sort_unstable();
    models.dedup();
    Err(AdminError::invalid(format!("`model` must be one this deployment offers: {}", models.join(", "))))
}

pub(super) async fn read(State(app): State<Arc<App>>, caller: AdminCaller) -> AdminResult {
    let who = caller.need(Role::Curator)?;
    let s = app.backends.settings.get_settings(&who.org_id).await?.unwrap_or_default();
    Ok(Json(settings_json(&s)).into_response())
}

/// `{model?: string|null, systemPrompt?: string|null}`: a key left out keeps its value, `null` clears it.
pub(super) async fn write(State(app): State<Arc<App>>, caller: AdminCaller, body: Bytes) -> AdminResult {
    let who = caller.need(Role::Admin)?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| AdminError::invalid(format!("body is not JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| AdminError::invalid("body must be an object"))?;
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "model" | "systemPrompt")) {
        return Err(AdminError::invalid(format!("unknown field `{k}` (expected model, systemPrompt)")));
    }
    let mut s = app.backends.settings.get_settings(&who.org_id).await?.unwrap_or_default();
    let text = |key: &str, max: usize| -> Result<Option<Option<String>>, AdminError> {
        match obj.get(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(t)) if !t.trim().is_empty() && t.chars().count() <= max => Ok(Some(Some(t.clone()))),
            Some(_) => {
                Err(AdminError::invalid(format!("`{key}` must be null or a non-empty string of at most {max} chars")))
            }
        }
    };
    if let Some(model) = text("model", 200)? {
        if let Some(m) = &model {
            offered(&app, m)?;
        }
        s.model = model;
    }
    if let Some(prompt) = text("systemPrompt", MAX_PROMPT_CHARS)? {
        s.system_prompt = prompt;
    }
    s.updated_at_ms = crate::util::now_ms();
    app.backends.settings.put_settings(&who.org_id, &s).await?;
    tracing::info!(org = %who.org_id, user = %who.user_id, "org settings changed");
    Ok(Json(settings_json(&s)).into_response())
}
