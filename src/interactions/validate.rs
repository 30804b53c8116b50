//! The person's values, checked against the canonical spec and normalised before the model sees them. They come
//! from the client or the model's `submit_interaction`, so they are bounded before anything looks inside, and
//! every failing field is reported so the card (or the model) can fix them all in one go.

use serde_json::{json, Map, Value};

use super::{submitted, Kind, FALLBACK_TOOL, FIELD_KEYS};

const MAX_KEYS: usize = 50;
const MAX_STRING_CHARS: usize = 2_000;
const MAX_LIST: usize = 16;
const MAX_NAME_CHARS: usize = 200;
const PHONE_SEPARATORS: [char; 5] = [' ', '-', '.', '(', ')'];

const REQUIRED: &str = "this field is required";
const BAD_EMAIL: &str = "must be a valid email address";
const BAD_PHONE: &str = "must be a valid phone number (include your country code, e.g. +1 555 123 4567)";
const ANSWERS_SHAPE: &str = "'answers' must be a list of {header, options, other?}";

/// One entry of `interaction_invalid.errors`. `field` is a field key, a question's header, or `values`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct FieldError {
    pub field: String,
    pub message: String,
}

fn error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError { field: field.to_string(), message: message.into() }
}

/// Ok(normalised values) or every failing field.
pub(crate) fn validate(kind: Kind, spec: &Value, values: &Value) -> Result<Value, Vec<FieldError>> {
    bounded(values)?;
    match kind {
        Kind::IdentityIntake => identity(&spec_fields(spec), values),
        Kind::Choices => choices(&spec_questions(spec), values),
    }
}

/// Checked before anything looks inside: values come straight from the client (or the model). Iterative, so a
/// deeply nested value cannot exhaust the stack.
fn bounded(values: &Value) -> Result<(), Vec<FieldError>> {
    // Bytes bound chars from above, so chars are only counted for strings that might be over.
    let long = |s: &str| s.len() > MAX_STRING_CHARS && s.chars().count() > MAX_STRING_CHARS;
    let mut stack = vec![values];
    while let Some(v) = stack.pop() {
        let over = match v {
            Value::String(s) => long(s.as_str()),
            Value::Array(items) => {
                stack.extend(items);
                items.len() > MAX_LIST
            }
            Value::Object(o) => {
                stack.extend(o.values());
                o.len() > MAX_KEYS || o.keys().any(|k| long(k.as_str()))
            }
            _ => false,
        };
        if over {
            return Err(vec![error("values", "values are too large")]);
        }
    }
    Ok(())
}

/// The spec's fields in order; entries that are not canonical are skipped (the spec is ours, not the client's).
fn spec_fields(spec: &Value) -> Vec<(&str, bool)> {
    let fields = spec.get("fields").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    fields
        .iter()
        .filter_map(|f| {
            let key = f.get("key")?.as_str().filter(|k| FIELD_KEYS.contains(k))?;
            Some((key, f.get("required").and_then(Value::as_bool).unwrap_or(false)))
        })
        .collect()
}

/// A choices question as far as checking answers needs it.
struct Question<'a> {
    header: &'a str,
    multi: bool,
    labels: Vec<&'a str>,
}

fn spec_questions(spec: &Value) -> Vec<Question<'_>> {
    let questions = spec.get("questions").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    questions
        .iter()
        .filter_map(|q| {
            Some(Question {
                header: q.get("header")?.as_str()?,
                multi: q.get("multiSelect").and_then(Value::as_bool).unwrap_or(false),
                labels: q.get("options")?.as_array()?.iter().filter_map(|o| o.get("label")?.as_str()).collect(),
            })
        })
        .collect()
}

fn identity(fields: &[(&str, bool)], values: &Value) -> Result<Value, Vec<FieldError>> {
    let Some(values) = values.as_object() else {
        return Err(vec![error("values", "values must be an object with name, email and/or phone")]);
    };
    let (mut errors, mut out, mut any_given) = (Vec::new(), Map::new(), false);
    for &(key, required) in fields {
        let checked = match values.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(normalise_field(key, s)),
            // A required field holding no text was not provided; an optional one was, but wrongly.
            Some(_) => Some(Err(if required { REQUIRED } else { not_text(key) })),
        };
        any_given |= checked.is_some();
        match checked {
            None if required => errors.push(error(key, REQUIRED)),
            None => {}
            Some(Ok(v)) => {
                out.insert(key.to_string(), Value::String(v));
            }
            Some(Err(message)) => errors.push(error(key, message)),
        }
    }
    if !any_given && fields.iter().all(|&(_, required)| !required) {
        errors.push(error("values", "provide at least one of name/email/phone, or declined=true"));
    }
    errors.is_empty().then_some(Value::Object(out)).ok_or(errors)
}

fn normalise_field(key: &str, s: &str) -> Result<String, &'static str> {
    match key {
        "email" => normalise_email(s).ok_or(BAD_EMAIL),
        "phone" => normalise_phone(s).ok_or(BAD_PHONE),
        _ if s.trim().chars().count() > MAX_NAME_CHARS => Err("must be at most 200 characters"),
        _ => Ok(s.trim().to_string()),
    }
}

fn not_text(key: &str) -> &'static str {
    match key {
        "email" => BAD_EMAIL,
        "phone" => BAD_PHONE,
        _ => "must be text",
    }
}

/// An answer as submitted: its header, chosen labels (repeats folded) and trimmed non-blank `other`.
struct Answer<'a> {
    header: &'a str,
    options: Vec<&'a str>,
    other: Option<&'a str>,
}

impl<'a> Answer<'a> {
    /// None when `v` is not `{header, options?: [labels], other?}`.
    fn parse(v: &'a Value) -> Option<Answer<'a>> {
        let labels: &[Value] = match v.get("options") {
            None | Some(Value::Null) => &[],
            Some(Value::Array(items)) => items,
            Some(_) => return None,
        };
        let mut options = Vec::with_capacity(labels.len());
        for label in labels {
            let label = label.as_str()?;
            if !options.contains(&label) {
                options.push(label);
            }
        }
        let other = match v.get("other") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.trim()).filter(|s| !s.is_empty()),
            Some(_) => return None,
        };
        Some(Answer { header: v.get("header")?.as_str()?, options, other })
    }

    fn to_json(&self) -> Value {
        let mut a = json!({"header": self.header, "options": self.options});
        if let (Some(other), Some(obj)) = (self.other, a.as_object_mut()) {
            obj.insert("other".into(), other.into());
        }
        a
    }
}

fn answer_list(values: &Value) -> Result<&[Value], Vec<FieldError>> {
    let list = values.get("answers").and_then(Value::as_array);
    list.map(Vec::as_slice).ok_or_else(|| vec![error("values", ANSWERS_SHAPE)])
}

fn choices(questions: &[Question<'_>], values: &Value) -> Result<Value, Vec<FieldError>> {
    let list = answer_list(values)?;
    let (mut errors, mut out) = (Vec::new(), Vec::with_capacity(questions.len()));
    for q in questions {
        // The first answer for a header counts; answers to headers not asked are ignored.
        let Some(raw) = list.iter().find(|a| a.get("header").and_then(Value::as_str) == Some(q.header)) else {
            errors.push(error(q.header, "this question must be answered"));
            continue;
        };
        let Some(answer) = Answer::parse(raw) else {
            errors.push(error(q.header, ANSWERS_SHAPE));
            continue;
        };
        if let Some(bad) = answer.options.iter().copied().find(|o| !q.labels.contains(o)) {
            errors.push(error(q.header, format!("'{bad}' is not one of the offered options")));
        } else if !q.multi && answer.options.len() > 1 {
            errors.push(error(q.header, "this question takes a single answer"));
        } else if answer.options.is_empty() && answer.other.is_none() {
            errors.push(error(q.header, "select an option or provide an 'other' answer"));
        } else {
            out.push(answer.to_json());
        }
    }
    errors.is_empty().then(|| json!({"answers": out})).ok_or(errors)
}

/// `submit_interaction` for choices has no spec to hold answers to: only their shape is checked.
fn any_answers(values: &Value) -> Result<Value, Vec<FieldError>> {
    let mut answers: Vec<Answer<'_>> = Vec::new();
    for raw in answer_list(values)? {
        let answer = Answer::parse(raw).filter(|a| !a.header.trim().is_empty());
        let answer = answer.ok_or_else(|| vec![error("values", ANSWERS_SHAPE)])?;
        // As with a spec, the first answer for a header counts.
        if answers.iter().all(|a| a.header != answer.header) {
            answers.push(answer);
        }
    }
    Ok(json!({"answers": answers.iter().map(Answer::to_json).collect::<Vec<_>>()}))
}

/// The address with its domain lower-cased (the local part is the mail host's to interpret), or None when it is
/// not `local@domain.tld`-shaped. Whitespace anywhere rejects rather than being trimmed: a pasted address with a
/// stray space is more likely mangled than padded.
pub(crate) fn normalise_email(s: &str) -> Option<String> {
    let (local, domain) = s.split_once('@')?;
    let domain_ok = domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !domain.contains('@');
    let ok = !local.is_empty() && domain_ok && !s.chars().any(char::is_whitespace);
    ok.then(|| format!("{local}@{}", domain.to_lowercase()))
}

/// E.164 (`+` and digits), or None. Numbers without `+` are read as North American, the only plan where a bare
/// 10- or 11-digit number is unambiguous enough to accept.
pub(crate) fn normalise_phone(s: &str) -> Option<String> {
    let compact: String = s.chars().filter(|c| !PHONE_SEPARATORS.contains(c)).collect();
    let all_digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if let Some(digits) = compact.strip_prefix('+') {
        let ok = all_digits(digits) && (8..=15).contains(&digits.len()) && !digits.starts_with('0');
        return ok.then(|| format!("+{digits}"));
    }
    match compact.len() {
        10 if all_digits(compact.as_str()) => Some(format!("+1{compact}")),
        11 if all_digits(compact.as_str()) && compact.starts_with('1') => Some(format!("+{compact}")),
        _ => None,
    }
}

/// The fallback tool: arguments JSON text → Ok((kind, normalised values or None when declined, model payload)) or
/// Err(tool error text). With no spec to hand, identity fields are all optional and choices only shape-checked.
pub(crate) fn fallback(arguments: &str) -> Result<(Kind, Option<Value>, String), String> {
    let args: Value =
        serde_json::from_str(arguments).map_err(|e| format!("{FALLBACK_TOOL}: arguments are not valid JSON ({e})"))?;
    let Some(args) = args.as_object() else {
        return Err(format!("{FALLBACK_TOOL}: arguments must be a JSON object"));
    };
    let kind = args.get("kind").and_then(Value::as_str).and_then(Kind::parse);
    let kind = kind.ok_or_else(|| format!("{FALLBACK_TOOL}: 'kind' must be \"identity_intake\" or \"choices\""))?;
    let declined = match args.get("declined") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(format!("{FALLBACK_TOOL}: 'declined' must be true or false")),
    };
    if declined {
        return Ok((kind, None, super::declined(kind)));
    }
    // Absent values read as empty, so the model is told what to provide rather than that the shape is wrong.
    let empty = Value::Object(Map::new());
    let values = args.get("values").filter(|v| !v.is_null()).unwrap_or(&empty);
    let all_optional = FIELD_KEYS.map(|key| (key, false));
    let checked = bounded(values).and_then(|()| match kind {
        Kind::IdentityIntake => identity(&all_optional, values),
        Kind::Choices => any_answers(values),
    });
    let normalised = checked.map_err(|errors| {
        let detail: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
        format!("validation failed — {}", detail.join("; "))
    })?;
    let payload = submitted(&normalised);
    Ok((kind, Some(normalised), payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interactions::spec::parse_raise;

    const PHONE_ERR: &str = "phone: must be a valid phone number (include your country code, e.g. +1 555 123 4567)";

    fn spec(kind: Kind, args: Value) -> Value {
        parse_raise(kind, &args.to_string()).expect("spec").spec
    }

    fn errors(kind: Kind, spec: &Value, values: Value) -> Vec<String> {
        let errors = validate(kind, spec, &values).expect_err("invalid");
        errors.into_iter().map(|e| format!("{}: {}", e.field, e.message)).collect()
    }

    #[test]
    fn emails_and_phones() {
        for bad in [" a@b.co", "a @b.co", "a@b.co ", "a@b@c.co", "@b.co", "a@bco", "a@bco.", "a@.bco", "a@b.\tco"] {
            assert_eq!(normalise_email(bad), None, "{bad:?}");
        }
        assert_eq!(normalise_email("Ada.L@Example.ORG").as_deref(), Some("Ada.L@example.org"));
        let good = [("555-123-4567", "+15551234567"), ("1 (555) 123-4567", "+15551234567")];
        for (input, want) in good.into_iter().chain([("+44 20 7946 0958", "+442079460958")]) {
            assert_eq!(normalise_phone(input).as_deref(), Some(want), "{input}");
        }
        for bad in ["555-CALL-NOW", "+0123456789", "555-1234", "+1234567", "+1234567890123456", "2 555 123 4567", ""] {
            assert_eq!(normalise_phone(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn identity_values() {
        let s = spec(Kind::IdentityIntake, json!({"fields": ["phone", "email", {"key": "name"}]}));
        let values = json!({"name": "  Ada ", "email": "ada@Example.ORG", "phone": "555.123.4567", "extra": 1});
        let normalised = json!({"name": "Ada", "email": "ada@example.org", "phone": "+15551234567"});
        assert_eq!(validate(Kind::IdentityIntake, &s, &values), Ok(normalised));
        let values = json!({"email": "a@b", "phone": "abc", "name": "x".repeat(201)});
        let want = [PHONE_ERR, "email: must be a valid email address", "name: must be at most 200 characters"];
        assert_eq!(errors(Kind::IdentityIntake, &s, values), want);
        let values = json!({"email": "  ", "phone": 5551234567_u64, "name": null});
        let want = ["phone: this field is required", "email: this field is required"];
        assert_eq!(errors(Kind::IdentityIntake, &s, values), want);
        let optional = json!({"fields": [{"key": "name"}, {"key": "email"}, {"key": "phone"}]});
        let optional = spec(Kind::IdentityIntake, optional);
        let nothing = ["values: provide at least one of name/email/phone, or declined=true"];
        assert_eq!(errors(Kind::IdentityIntake, &optional, json!({"email": " ", "other": "x"})), nothing);
        let values = json!({"name": 5, "email": true, "phone": ["555"]});
        let want = ["name: must be text", "email: must be a valid email address", PHONE_ERR];
        assert_eq!(errors(Kind::IdentityIntake, &optional, values), want);
        let values = json!({"name": "x".repeat(200), "phone": " "});
        assert_eq!(validate(Kind::IdentityIntake, &optional, &values), Ok(json!({"name": "x".repeat(200)})));
    }

    #[test]
    fn hostile_values_are_errors_not_panics() {
        let s = spec(Kind::IdentityIntake, json!({"fields": ["email"]}));
        let too_large = ["values: values are too large"];
        let many: Map<String, Value> = (0..1000).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(errors(Kind::IdentityIntake, &s, Value::Object(many)), too_large);
        assert_eq!(errors(Kind::IdentityIntake, &s, json!({"email": "a".repeat(60_000)})), too_large);
        assert_eq!(errors(Kind::IdentityIntake, &s, json!({"x": {"y": ["ü".repeat(2001)]}})), too_large);
        let mut nested = json!("a@b.co");
        for _ in 0..100 {
            nested = json!({"k": [nested]});
        }
        assert_eq!(errors(Kind::IdentityIntake, &s, json!({"email": nested})), ["email: this field is required"]);
        let shape = ["values: values must be an object with name, email and/or phone"];
        for values in [json!("a@b.co"), json!(["a@b.co"]), Value::Null] {
            assert_eq!(errors(Kind::IdentityIntake, &s, values), shape);
        }
    }

    #[test]
    fn choices_answers() {
        let plan = json!({"question": "Plan?", "header": "Plan", "options": [{"label": "M"}, {"label": "Y"}]});
        let extras = json!({"question": "Extras?", "header": "Extras", "multiSelect": true,
                            "options": [{"label": "A"}, {"label": "B"}, {"label": "C"}]});
        let s = spec(Kind::Choices, json!({"questions": [plan, extras]}));
        let check = |answers: Value| errors(Kind::Choices, &s, json!({"answers": answers}));
        let extras = json!({"header": "Extras", "options": ["A"]});
        let plan = |o: Value| json!({"header": "Plan", "options": o});
        assert_eq!(check(json!([plan(json!(["W"])), extras])), ["Plan: 'W' is not one of the offered options"]);
        assert_eq!(check(json!([plan(json!(["Y", "M"])), extras])), ["Plan: this question takes a single answer"]);
        assert_eq!(check(json!([plan(json!(["M"]))])), ["Extras: this question must be answered"]);
        let empty = "select an option or provide an 'other' answer";
        let answers = json!([{"header": "Plan", "options": [], "other": " "}, {"header": "Extras"}]);
        assert_eq!(check(answers), [format!("Plan: {empty}"), format!("Extras: {empty}")]);
        assert_eq!(check(json!([plan(json!("M")), extras])), [format!("Plan: {ANSWERS_SHAPE}")]);
        assert_eq!(check(json!({"Plan": "M"})), [format!("values: {ANSWERS_SHAPE}")]);
        assert_eq!(errors(Kind::Choices, &s, json!("M")), [format!("values: {ANSWERS_SHAPE}")]);
        assert_eq!(check(Value::Array(vec![extras; 17])), ["values: values are too large"]);
        // Normalised in the spec's order; unknown headers dropped; the first answer for a header counts.
        let values = json!({"answers": [
            {"header": "Extras", "options": ["C", "A", "C"]}, {"header": "Zzz", "x": 1},
            {"header": "Plan", "other": " Quarterly "}, {"header": "Plan", "options": ["Y"]}]});
        let want = json!({"answers": [{"header": "Plan", "options": [], "other": "Quarterly"},
                                      {"header": "Extras", "options": ["C", "A"]}]});
        assert_eq!(validate(Kind::Choices, &s, &values), Ok(want));
    }
}
