//! A raise tool's arguments → the canonical spec. Models send loose shapes (a bare `"email"`, missing flags,
//! missing descriptions); the canonical form spells every default out, so the client renders it and the
//! validator checks against it without guessing. Every rejection names what is wrong, because it goes back to
//! the model as the tool's error result and the model is expected to fix its call from it.

use serde_json::{json, Map, Value};

use super::{Kind, DEFAULT_REASON, FIELD_KEYS};

const MAX_FIELDS: usize = 3;
const MAX_QUESTIONS: usize = 4;
const MAX_HEADER_CHARS: usize = 12;
const MIN_OPTIONS: usize = 2;
const MAX_OPTIONS: usize = 4;

/// A raised interaction, ready to offer to the client (or to the model conversationally).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Raised {
    pub kind: Kind,
    /// `{"fields": [{key, required, label?}]}` or
    /// `{"questions": [{question, header, options: [{label, description}], multiSelect}]}`.
    pub spec: Value,
    pub reason: String,
}

/// Parses the raise tool's JSON arguments; `Err` is the tool error text for the model.
pub(crate) fn parse_raise(kind: Kind, arguments: &str) -> Result<Raised, String> {
    let tool = kind.raise_tool();
    let args: Value =
        serde_json::from_str(arguments).map_err(|e| format!("{tool}: arguments are not valid JSON ({e})"))?;
    let Some(args) = args.as_object() else {
        return Err(format!("{tool}: arguments must be a JSON object"));
    };
    let spec = match kind {
        Kind::IdentityIntake => fields(args.get("fields")),
        Kind::Choices => questions(args.get("questions")),
    }
    .map_err(|m| format!("{tool}: {m}"))?;
    let reason = reason(args.get("reason")).map_err(|m| format!("{tool}: {m}"))?;
    Ok(Raised { kind, spec, reason })
}

fn reason(v: Option<&Value>) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(DEFAULT_REASON.to_string()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(DEFAULT_REASON.to_string()),
        Some(Value::String(s)) => Ok(s.trim().to_string()),
        Some(_) => Err("'reason' must be a string".to_string()),
    }
}

/// A trimmed, non-empty string, or None.
fn non_blank(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// `true`/`false`, with absence (or null) meaning false.
fn flag(v: Option<&Value>) -> Option<bool> {
    match v {
        None | Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => None,
    }
}

fn fields(v: Option<&Value>) -> Result<Value, String> {
    let Some(Value::Array(items)) = v else {
        return Err("'fields' must be a list of \"name\", \"email\", \"phone\" or {key, required?, label?}".into());
    };
    if items.is_empty() || items.len() > MAX_FIELDS {
        return Err(format!("'fields' must have 1-{MAX_FIELDS} entries (got {})", items.len()));
    }
    let mut seen: Vec<&str> = Vec::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let (key, required, label) = match item {
            // A bare key is the model asking for that field outright.
            Value::String(key) => (key.as_str(), true, None),
            Value::Object(o) => field_object(o)?,
            _ => return Err("each field must be \"name\", \"email\", \"phone\" or {key, required?, label?}".into()),
        };
        if !FIELD_KEYS.contains(&key) {
            return Err(format!("unknown field '{key}' (expected name, email or phone)"));
        }
        if seen.contains(&key) {
            return Err(format!("duplicate field '{key}'"));
        }
        seen.push(key);
        let mut field = Map::new();
        field.insert("key".into(), key.into());
        field.insert("required".into(), required.into());
        if let Some(label) = label {
            field.insert("label".into(), label.into());
        }
        out.push(Value::Object(field));
    }
    Ok(json!({"fields": out}))
}

fn field_object(o: &Map<String, Value>) -> Result<(&str, bool, Option<&str>), String> {
    let Some(key) = o.get("key").and_then(Value::as_str) else {
        return Err("each field object needs a string 'key' (name, email or phone)".into());
    };
    let required = flag(o.get("required")).ok_or_else(|| format!("field '{key}': 'required' must be true or false"))?;
    let label = match o.get("label") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim()).filter(|s| !s.is_empty()),
        Some(_) => return Err(format!("field '{key}': 'label' must be a string")),
    };
    Ok((key, required, label))
}

fn questions(v: Option<&Value>) -> Result<Value, String> {
    let Some(Value::Array(items)) = v else {
        return Err("'questions' must be a list of {question, header, options, multiSelect?}".into());
    };
    if items.is_empty() || items.len() > MAX_QUESTIONS {
        return Err(format!("'questions' must have 1-{MAX_QUESTIONS} entries (got {})", items.len()));
    }
    // Answers are matched to questions by header, so headers must tell the questions apart.
    let mut headers: Vec<&str> = Vec::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let n = i + 1;
        let Some(q) = item.as_object() else {
            return Err(format!("question {n} must be an object {{question, header, options, multiSelect?}}"));
        };
        let question = non_blank(q.get("question"))
            .ok_or_else(|| format!("question {n}: 'question' must be a non-empty string"))?;
        let header =
            non_blank(q.get("header")).ok_or_else(|| format!("question {n}: 'header' must be a non-empty string"))?;
        if header.chars().count() > MAX_HEADER_CHARS {
            return Err(format!("header '{header}' is longer than {MAX_HEADER_CHARS} characters"));
        }
        if headers.contains(&header) {
            return Err(format!("duplicate header '{header}'"));
        }
        headers.push(header);
        let options = options(header, q.get("options"))?;
        let multi = flag(q.get("multiSelect"))
            .ok_or_else(|| format!("question '{header}': 'multiSelect' must be true or false"))?;
        out.push(json!({"question": question, "header": header, "options": options, "multiSelect": multi}));
    }
    Ok(json!({"questions": out}))
}

fn options(header: &str, v: Option<&Value>) -> Result<Vec<Value>, String> {
    let Some(Value::Array(items)) = v else {
        return Err(format!("question '{header}': 'options' must be a list of {{label, description?}}"));
    };
    if items.len() < MIN_OPTIONS || items.len() > MAX_OPTIONS {
        return Err(format!("question '{header}' needs {MIN_OPTIONS}-{MAX_OPTIONS} options (got {})", items.len()));
    }
    // Chosen options come back as labels, so a repeated label would be ambiguous.
    let mut labels: Vec<&str> = Vec::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let label = non_blank(item.get("label"))
            .ok_or_else(|| format!("question '{header}': each option needs a non-empty string 'label'"))?;
        if labels.contains(&label) {
            return Err(format!("question '{header}': duplicate option '{label}'"));
        }
        labels.push(label);
        let description = match item.get("description") {
            None | Some(Value::Null) => "",
            Some(Value::String(s)) => s.trim(),
            Some(_) => return Err(format!("question '{header}': the description of '{label}' must be a string")),
        };
        out.push(json!({"label": label, "description": description}));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(args: Value) -> Result<Raised, String> {
        parse_raise(Kind::IdentityIntake, &args.to_string())
    }

    fn choices(args: Value) -> Result<Raised, String> {
        parse_raise(Kind::Choices, &args.to_string())
    }

    fn option_list(labels: &[&str]) -> Value {
        labels.iter().map(|l| json!({"label": l})).collect()
    }

    fn question(header: &str, labels: &[&str]) -> Value {
        json!({"question": format!("Which {header}?"), "header": header, "options": option_list(labels)})
    }

    #[test]
    fn identity_canonical_form_with_defaults() {
        let raised = identity(json!({"fields": ["email", {"key": "phone"}, {"key": "name", "required": true,
                                      "label": " Full name "}]}))
        .expect("valid");
        assert_eq!(raised.kind, Kind::IdentityIntake);
        assert_eq!(
            raised.spec,
            json!({"fields": [{"key": "email", "required": true}, {"key": "phone", "required": false},
                              {"key": "name", "required": true, "label": "Full name"}]})
        );
        assert_eq!(raised.reason, "to help you better");
    }

    #[test]
    fn reason_given_blank_or_wrong() {
        let reason = |r: Value| identity(json!({"fields": ["email"], "reason": r})).map(|x| x.reason);
        assert_eq!(reason(json!("to send the receipt")), Ok("to send the receipt".to_string()));
        assert_eq!(reason(json!("   ")), Ok("to help you better".to_string()));
        assert_eq!(reason(Value::Null), Ok("to help you better".to_string()));
        assert_eq!(reason(json!(5)), Err("request_identity_intake: 'reason' must be a string".to_string()));
    }

    #[test]
    fn identity_rejections() {
        let err = |fields: Value| identity(json!({"fields": fields})).expect_err("invalid");
        assert_eq!(
            err(json!(["address"])),
            "request_identity_intake: unknown field 'address' (expected name, email or phone)"
        );
        assert_eq!(err(json!(["email", {"key": "email"}])), "request_identity_intake: duplicate field 'email'");
        assert_eq!(err(json!([])), "request_identity_intake: 'fields' must have 1-3 entries (got 0)");
        assert_eq!(
            err(json!(["name", "email", "phone", "name"])),
            "request_identity_intake: 'fields' must have 1-3 entries (got 4)"
        );
        assert!(err(json!([5])).starts_with("request_identity_intake: each field must be"));
        assert!(err(json!("email")).starts_with("request_identity_intake: 'fields' must be a list"));
        assert!(err(json!([{"required": true}])).contains("needs a string 'key'"));
        assert!(err(json!([{"key": "email", "required": "yes"}])).contains("'required' must be true or false"));
        assert!(err(json!([{"key": "email", "label": 3}])).contains("'label' must be a string"));
        assert!(identity(json!({})).expect_err("no fields").contains("'fields' must be a list"));
    }

    #[test]
    fn unparseable_arguments() {
        assert!(parse_raise(Kind::Choices, "{\"questions\": [").expect_err("bad").starts_with("request_choices: "));
        assert!(parse_raise(Kind::IdentityIntake, "").is_err());
        assert_eq!(
            parse_raise(Kind::IdentityIntake, "[\"email\"]"),
            Err("request_identity_intake: arguments must be a JSON object".to_string())
        );
    }

    #[test]
    fn choices_canonical_form_with_defaults() {
        let raised = choices(json!({"questions": [
            {"question": "Which plan?", "header": "Plan",
             "options": [{"label": "Monthly", "description": "Billed monthly"}, {"label": "Yearly"}]},
            {"question": "Which extras?", "header": "Extras", "multiSelect": true,
             "options": [{"label": "Support"}, {"label": "Backups"}]}
        ], "reason": "to set up your account"}))
        .expect("valid");
        assert_eq!(raised.kind, Kind::Choices);
        assert_eq!(raised.reason, "to set up your account");
        assert_eq!(
            raised.spec,
            json!({"questions": [
                {"question": "Which plan?", "header": "Plan", "multiSelect": false, "options": [
                    {"label": "Monthly", "description": "Billed monthly"}, {"label": "Yearly", "description": ""}]},
                {"question": "Which extras?", "header": "Extras", "multiSelect": true, "options": [
                    {"label": "Support", "description": ""}, {"label": "Backups", "description": ""}]}
            ]})
        );
    }

    #[test]
    fn choices_counts() {
        let five: Vec<Value> = (1..=5).map(|i| question(&format!("Q{i}"), &["A", "B"])).collect();
        assert_eq!(
            choices(json!({"questions": five})),
            Err("request_choices: 'questions' must have 1-4 entries (got 5)".to_string())
        );
        assert_eq!(
            choices(json!({"questions": []})),
            Err("request_choices: 'questions' must have 1-4 entries (got 0)".to_string())
        );
        assert_eq!(
            choices(json!({"questions": [question("Plan", &["Monthly"])]})),
            Err("request_choices: question 'Plan' needs 2-4 options (got 1)".to_string())
        );
        assert_eq!(
            choices(json!({"questions": [question("Plan", &["A", "B", "C", "D", "E"])]})),
            Err("request_choices: question 'Plan' needs 2-4 options (got 5)".to_string())
        );
        assert!(choices(json!({"questions": [question("Plan", &["A", "B", "C", "D"])]})).is_ok());
    }

    #[test]
    fn choices_headers() {
        assert_eq!(
            choices(json!({"questions": [question("Subscription1", &["A", "B"])]})),
            Err("request_choices: header 'Subscription1' is longer than 12 characters".to_string())
        );
        // Twelve characters, more bytes: the limit counts characters.
        assert!(choices(json!({"questions": [question("Ünïcödé_ÄÖÜß", &["A", "B"])]})).is_ok());
        assert_eq!(
            choices(json!({"questions": [question("Plan", &["A", "B"]), question("Plan", &["C", "D"])]})),
            Err("request_choices: duplicate header 'Plan'".to_string())
        );
        let blank = json!({"questions": [{"question": "Which?", "header": " ", "options": option_list(&["A", "B"])}]});
        assert_eq!(choices(blank), Err("request_choices: question 1: 'header' must be a non-empty string".to_string()));
    }

    #[test]
    fn choices_other_rejections() {
        let err = |q: Value| choices(json!({"questions": [q]})).expect_err("invalid");
        assert!(err(json!({"header": "Plan", "options": option_list(&["A", "B"])})).contains("'question' must be"));
        assert!(err(json!({"question": "", "header": "Plan", "options": option_list(&["A", "B"])}))
            .contains("'question' must be a non-empty string"));
        assert_eq!(err(question("Plan", &["A", "A"])), "request_choices: question 'Plan': duplicate option 'A'");
        assert!(err(json!({"question": "Q?", "header": "Plan", "options": [{"label": ""}, {"label": "B"}]}))
            .contains("non-empty string 'label'"));
        assert!(err(json!({"question": "Q?", "header": "Plan", "options": ["A", "B"]})).contains("'label'"));
        assert!(err(json!({"question": "Q?", "header": "Plan", "options": [{"label": "A", "description": 1},
                                                                           {"label": "B"}]}))
        .contains("description of 'A' must be a string"));
        assert!(err(
            json!({"question": "Q?", "header": "Plan", "options": option_list(&["A", "B"]), "multiSelect": 1})
        )
        .contains("'multiSelect' must be true or false"));
        assert!(err(json!("Plan?")).contains("question 1 must be an object"));
        assert!(choices(json!({"questions": "Plan?"})).expect_err("invalid").contains("'questions' must be a list"));
    }
}
