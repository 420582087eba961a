//! `Status` objects (`kind: Status`), the body of every error response and of ERROR events.

use serde_json::{Map, Value, json};

use super::resources::ResourceType;

/// A Kubernetes `Status` failure: HTTP code, reason, message and optional details.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// HTTP status code (also `code` in the body).
    pub code: u16,
    /// `reason`, e.g. `NotFound`.
    pub reason: String,
    /// `message`.
    pub message: String,
    /// `details`, if any.
    pub details: Option<Value>,
    /// `metadata` (e.g. a remainder `continue` token on 410).
    pub metadata: Map<String, Value>,
}

/// The reason the real server uses for a code.
pub fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        504 => "Timeout",
        _ => "InternalError",
    }
}

impl Status {
    /// A failure with `code`, the usual reason for it, and `message`.
    pub fn new(code: u16, message: impl Into<String>) -> Status {
        Status {
            code,
            reason: reason_for(code).into(),
            message: message.into(),
            details: None,
            metadata: Map::new(),
        }
    }

    /// Sets `details`.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Status {
        self.details = Some(details);
        self
    }

    pub(crate) fn bad_request(message: &str) -> Status {
        Status::new(400, message)
    }

    pub(crate) fn not_found(t: &ResourceType, name: &str) -> Status {
        Status::new(404, format!("{} \"{name}\" not found", resource_label(t)))
            .with_details(details(t, name))
    }

    pub(crate) fn already_exists(t: &ResourceType, name: &str) -> Status {
        let mut s = Status::new(
            409,
            format!("{} \"{name}\" already exists", resource_label(t)),
        )
        .with_details(details(t, name));
        s.reason = "AlreadyExists".into();
        s
    }

    pub(crate) fn conflict(t: &ResourceType, name: &str, why: &str) -> Status {
        Status::new(
            409,
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                resource_label(t)
            ),
        )
        .with_details(details(t, name))
    }

    pub(crate) fn invalid(t: &ResourceType, name: &str, field: &str, why: &str) -> Status {
        let mut d = details(t, name);
        d["causes"] = json!([{"reason": "FieldValueRequired", "message": format!("Required value: {why}"), "field": field}]);
        Status::new(
            422,
            format!(
                "{} \"{name}\" is invalid: {field}: Required value: {why}",
                t.kind
            ),
        )
        .with_details(d)
    }

    /// A 410 `Expired` for a too-old watch or list resourceVersion.
    pub(crate) fn expired(message: String) -> Status {
        Status::new(410, message)
    }

    /// The JSON body, fields in the Go order.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), json!("Status"));
        m.insert("apiVersion".into(), json!("v1"));
        m.insert("metadata".into(), Value::Object(self.metadata.clone()));
        m.insert("status".into(), json!("Failure"));
        m.insert("message".into(), json!(self.message));
        m.insert("reason".into(), json!(self.reason));
        if let Some(d) = &self.details {
            m.insert("details".into(), d.clone());
        }
        m.insert("code".into(), json!(self.code));
        Value::Object(m)
    }
}

/// `services` or `virtualservices.networking.istio.io`, as messages name resources.
fn resource_label(t: &ResourceType) -> String {
    if t.group.is_empty() {
        t.plural.to_string()
    } else {
        format!("{}.{}", t.plural, t.group)
    }
}

fn details(t: &ResourceType, name: &str) -> Value {
    let mut d = json!({"name": name});
    if !t.group.is_empty() {
        d["group"] = json!(t.group);
    }
    d["kind"] = json!(t.plural);
    d
}
