//! Rich interactions (the smooth-operator protocol's structured asks): the model raises one with a tool
//! (`request_identity_intake`, `request_choices`), the client shows a card when it `supports` the matching
//! capability, and the person's submitted values are checked before the model sees them. Without the
//! capability the model asks conversationally and reports back through `submit_interaction`.
//!
//! This module is the pure part: [`spec`] turns the raise tool's loose arguments into the canonical spec,
//! [`validate`] checks and normalises values against it, and the functions here build what the model is told.
//! Nothing here does I/O, so the turn machinery can call it from anywhere.

use serde_json::{json, Value};

pub(crate) mod spec;
pub(crate) mod validate;

/// What is being asked for. The string form is the protocol's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    IdentityIntake,
    Choices,
}

impl Kind {
    /// Every kind, for offering the raise tools and for the `submit_interaction` schema.
    pub(crate) const ALL: [Kind; 2] = [Kind::IdentityIntake, Kind::Choices];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::IdentityIntake => "identity_intake",
            Kind::Choices => "choices",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The tool the model calls to raise this kind.
    pub(crate) fn raise_tool(self) -> &'static str {
        match self {
            Kind::IdentityIntake => "request_identity_intake",
            Kind::Choices => "request_choices",
        }
    }

    pub(crate) fn from_raise_tool(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.raise_tool() == name)
    }

    /// The client capability (in its `supports`) that means it can render this kind as a card.
    pub(crate) fn capability(self) -> &'static str {
        match self {
            Kind::IdentityIntake => "identity_form",
            Kind::Choices => "choice_chips",
        }
    }
}

/// The model-callable tool for interactions held conversationally.
/// The fields an identity-intake card may ask for (the spec accepts only these; the values are checked per key).
const FIELD_KEYS: [&str; 3] = ["name", "email", "phone"];

pub(crate) const FALLBACK_TOOL: &str = "submit_interaction";
/// Shown to the person when the model gave no reason (or a blank one).
pub(crate) const DEFAULT_REASON: &str = "to help you better";
/// The `message` of `interaction_invalid`; the per-field detail is in its `errors`.
pub(crate) const INVALID_SUMMARY: &str = "Some fields need attention.";
/// What the model is told when the person let the interaction lapse.
pub(crate) const NO_RESPONSE: &str = "no response";

const DECLINED_MESSAGE: &str = "the person declined to provide this";
const CONVERSATIONAL_INSTRUCTIONS: &str = "ask for one field at a time, then call submit_interaction";

/// The raise tool for `kind` as offered to the model: name, description and the JSON Schema of its parameters.
/// The schema states the same limits [`spec::parse_raise`] enforces, so a well-behaved model gets them right first.
pub(crate) fn raise_tool_spec(kind: Kind) -> (&'static str, &'static str, Value) {
    let reason = json!({
        "type": "string",
        "description": "Why you are asking, shown to the person (e.g. \"to send you the receipt\")."
    });
    match kind {
        Kind::IdentityIntake => (
            kind.raise_tool(),
            "Ask the person for their name, email address and/or phone number. Their app shows a form when it \
             can; otherwise you are told to ask conversationally. Ask only for what you need. The result is the \
             validated values, or that the person declined.",
            json!({
                "type": "object",
                "properties": {
                    "fields": {
                        "type": "array",
                        "description": "1-3 distinct fields. A bare key (\"email\") is a required field; an object \
                                        sets required (default false) and an optional label.",
                        "minItems": 1,
                        "maxItems": 3,
                        "items": {"anyOf": [
                            {"type": "string", "enum": ["name", "email", "phone"]},
                            {
                                "type": "object",
                                "properties": {
                                    "key": {"type": "string", "enum": ["name", "email", "phone"]},
                                    "required": {"type": "boolean"},
                                    "label": {"type": "string"}
                                },
                                "required": ["key"],
                                "additionalProperties": false
                            }
                        ]}
                    },
                    "reason": reason
                },
                "required": ["fields"],
                "additionalProperties": false
            }),
        ),
        Kind::Choices => (
            kind.raise_tool(),
            "Ask the person 1-4 multiple-choice questions. Their app shows tappable options when it can; \
             otherwise you are told to ask conversationally. The person may also type their own 'other' answer. \
             The result is their answers, or that they declined.",
            json!({
                "type": "object",
                "properties": {
                    "questions": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 4,
                        "items": {
                            "type": "object",
                            "properties": {
                                "question": {"type": "string", "description": "The full question."},
                                "header": {
                                    "type": "string",
                                    "maxLength": 12,
                                    "description": "A short label for the question, unique among the questions."
                                },
                                "options": {
                                    "type": "array",
                                    "minItems": 2,
                                    "maxItems": 4,
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "label": {"type": "string", "description": "Unique within the question."},
                                            "description": {"type": "string"}
                                        },
                                        "required": ["label"],
                                        "additionalProperties": false
                                    }
                                },
                                "multiSelect": {"type": "boolean", "description": "Allow several (default false)."}
                            },
                            "required": ["question", "header", "options"],
                            "additionalProperties": false
                        }
                    },
                    "reason": reason
                },
                "required": ["questions"],
                "additionalProperties": false
            }),
        ),
    }
}

/// `submit_interaction` as offered to the model (only when an interaction is held conversationally).
pub(crate) fn fallback_tool_spec() -> (&'static str, &'static str, Value) {
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    (
        FALLBACK_TOOL,
        "Report what the person told you after a request_identity_intake or request_choices came back with mode \
         'conversational': their values once collected, or declined=true if they would rather not say. The values \
         are validated; on a validation error, ask again for the fields named and resubmit.",
        json!({
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": kinds},
                "values": {
                    "type": "object",
                    "description": "identity_intake: {\"name\"?, \"email\"?, \"phone\"?}; choices: {\"answers\": \
                                    [{\"header\", \"options\": [labels], \"other\"?}]}."
                },
                "declined": {"type": "boolean", "description": "True when the person declined."}
            },
            "required": ["kind"],
            "additionalProperties": false
        }),
    )
}

/// The raise tool's result when the person submitted valid values (already normalised).
pub(crate) fn submitted(values: &Value) -> String {
    json!({"status": "submitted", "values": values}).to_string()
}

/// The raise tool's result when the person declined.
pub(crate) fn declined(kind: Kind) -> String {
    json!({"status": "declined", "kind": kind.as_str(), "message": DECLINED_MESSAGE}).to_string()
}

/// The raise tool's result when the client cannot show the card: the model holds the interaction itself.
pub(crate) fn conversational(kind: Kind, spec: &Value, reason: &str) -> String {
    json!({
        "mode": "conversational",
        "kind": kind.as_str(),
        "spec": spec,
        "reason": reason,
        "instructions": CONVERSATIONAL_INSTRUCTIONS
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> Value {
        serde_json::from_str(s).expect("json")
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
            assert_eq!(Kind::from_raise_tool(kind.raise_tool()), Some(kind));
            assert_eq!(serde_json::to_value(kind).expect("json"), json!(kind.as_str()));
        }
        assert_eq!(Kind::IdentityIntake.capability(), "identity_form");
        assert_eq!(Kind::Choices.capability(), "choice_chips");
        assert_eq!(Kind::parse("identity"), None);
        assert_eq!(Kind::from_raise_tool(FALLBACK_TOOL), None);
    }

    #[test]
    fn payloads() {
        assert_eq!(
            parsed(&submitted(&json!({"email": "a@b.co"}))),
            json!({"status": "submitted", "values": {"email": "a@b.co"}})
        );
        assert_eq!(
            parsed(&declined(Kind::Choices)),
            json!({"status": "declined", "kind": "choices", "message": "the person declined to provide this"})
        );
        let spec = json!({"fields": [{"key": "email", "required": true}]});
        assert_eq!(
            parsed(&conversational(Kind::IdentityIntake, &spec, DEFAULT_REASON)),
            json!({"mode": "conversational", "kind": "identity_intake", "spec": spec, "reason": "to help you better",
                   "instructions": "ask for one field at a time, then call submit_interaction"})
        );
    }

    #[test]
    fn tool_specs_are_named_and_object_schemas() {
        for kind in Kind::ALL {
            let (name, description, schema) = raise_tool_spec(kind);
            assert_eq!(name, kind.raise_tool());
            assert!(!description.is_empty());
            assert_eq!(schema["type"], "object");
        }
        let (name, _, schema) = fallback_tool_spec();
        assert_eq!(name, "submit_interaction");
        assert_eq!(schema["properties"]["kind"]["enum"], json!(["identity_intake", "choices"]));
    }

    #[test]
    fn invalid_event_errors_shape() {
        let e = validate::FieldError { field: "email".into(), message: "must be a valid email address".into() };
        let errors = serde_json::to_value(vec![e]).expect("json");
        assert_eq!(errors, json!([{"field": "email", "message": "must be a valid email address"}]));
        assert_eq!(INVALID_SUMMARY, "Some fields need attention.");
        assert_eq!(NO_RESPONSE, "no response");
    }

    // The fallback tool's outcomes are what the model reads, so they are pinned here beside the other payloads.
    #[test]
    fn fallback_tool() {
        use super::validate::fallback;
        let ok = fallback(r#"{"kind": "identity_intake", "values": {"email": "Ada@Example.ORG"}}"#).expect("ok");
        let values = json!({"email": "Ada@example.org"});
        assert_eq!(ok, (Kind::IdentityIntake, Some(values.clone()), submitted(&values)));
        let ok = fallback(r#"{"kind": "choices", "declined": true, "values": {"answers": 1}}"#).expect("ok");
        assert_eq!(ok, (Kind::Choices, None, declined(Kind::Choices)));

        let bad = fallback(r#"{"kind": "identity_intake", "values": {"email": "a@b", "phone": "x", "name": "Ada"}}"#);
        let want = "validation failed — email: must be a valid email address; phone: must be a valid phone number \
                    (include your country code, e.g. +1 555 123 4567)";
        assert_eq!(bad, Err(want.to_string()));
        let nothing = "validation failed — values: provide at least one of name/email/phone, or declined=true";
        assert_eq!(fallback(r#"{"kind": "identity_intake"}"#), Err(nothing.to_string()));
        let huge = json!({"kind": "identity_intake", "values": {"name": "x".repeat(3000)}}).to_string();
        assert_eq!(fallback(&huge), Err("validation failed — values: values are too large".to_string()));

        // Choices without a spec: taken as given (first answer per header), shape still checked.
        let answers = json!({"answers": [{"header": "Plan", "options": ["M"]}, {"header": "Plan", "options": ["X"]},
                                         {"header": "Size", "other": " XL "}]});
        let want = json!({"answers": [{"header": "Plan", "options": ["M"]},
                                      {"header": "Size", "options": [], "other": "XL"}]});
        let ok = fallback(&json!({"kind": "choices", "values": answers}).to_string()).expect("ok");
        assert_eq!(ok.1, Some(want));
        let bad = fallback(r#"{"kind": "choices", "values": {"answers": [{"options": ["A"]}]}}"#);
        let shape = "validation failed — values: 'answers' must be a list of {header, options, other?}";
        assert_eq!(bad, Err(shape.to_string()));
        assert_eq!(fallback(r#"{"kind": "choices"}"#), Err(shape.to_string()));

        assert!(fallback(r#"{"kind": "otp"}"#).expect_err("kind").starts_with("submit_interaction: 'kind'"));
        assert!(fallback("not json").expect_err("json").starts_with("submit_interaction: "));
        assert!(fallback(r#"{"kind": "choices", "declined": "yes"}"#).is_err());
    }
}
