//! Client-safe errors: every layer's error converts into [`ClientError`], whose `code` is part of the wire
//! protocol and whose `message` never leaks internals (backend failures are logged, not sent).

/// The documented error codes of the protocol. The string form is what clients see in `error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ErrorCode {
    ValidationError,
    UnsupportedAction,
    SessionNotFound,
    ConversationNotFound,
    TurnInProgress,
    AgentNotFound,
    SkillNotFound,
    RateLimited,
    QuotaExceeded,
    NoPendingConfirmation,
    NoPendingInteraction,
    InteractionMismatch,
    OtpSendFailed,
    OriginNotAllowed,
    AuthContextInvalid,
    LlmUnavailable,
    AgentError,
    TurnInterrupted,
    Unauthorized,
    Internal,
}

impl ErrorCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::UnsupportedAction => "UNSUPPORTED_ACTION",
            ErrorCode::SessionNotFound => "SESSION_NOT_FOUND",
            ErrorCode::ConversationNotFound => "CONVERSATION_NOT_FOUND",
            ErrorCode::TurnInProgress => "TURN_IN_PROGRESS",
            ErrorCode::AgentNotFound => "AGENT_NOT_FOUND",
            ErrorCode::SkillNotFound => "SKILL_NOT_FOUND",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorCode::NoPendingConfirmation => "NO_PENDING_CONFIRMATION",
            ErrorCode::NoPendingInteraction => "NO_PENDING_INTERACTION",
            ErrorCode::InteractionMismatch => "INTERACTION_MISMATCH",
            ErrorCode::OtpSendFailed => "OTP_SEND_FAILED",
            ErrorCode::OriginNotAllowed => "ORIGIN_NOT_ALLOWED",
            ErrorCode::AuthContextInvalid => "AUTH_CONTEXT_INVALID",
            ErrorCode::LlmUnavailable => "LLM_UNAVAILABLE",
            ErrorCode::AgentError => "AGENT_ERROR",
            ErrorCode::TurnInterrupted => "TURN_INTERRUPTED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Internal => "INTERNAL_ERROR",
        }
    }

    /// Every code, for metrics pre-registration and docs.
    pub(crate) const ALL: [ErrorCode; 20] = [
        ErrorCode::ValidationError,
        ErrorCode::UnsupportedAction,
        ErrorCode::SessionNotFound,
        ErrorCode::ConversationNotFound,
        ErrorCode::TurnInProgress,
        ErrorCode::AgentNotFound,
        ErrorCode::SkillNotFound,
        ErrorCode::RateLimited,
        ErrorCode::QuotaExceeded,
        ErrorCode::NoPendingConfirmation,
        ErrorCode::NoPendingInteraction,
        ErrorCode::InteractionMismatch,
        ErrorCode::OtpSendFailed,
        ErrorCode::OriginNotAllowed,
        ErrorCode::AuthContextInvalid,
        ErrorCode::LlmUnavailable,
        ErrorCode::AgentError,
        ErrorCode::TurnInterrupted,
        ErrorCode::Unauthorized,
        ErrorCode::Internal,
    ];
}

/// The one error type that reaches a client. Built from each layer's own error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub(crate) struct ClientError {
    pub code: ErrorCode,
    pub message: String,
    /// What went wrong inside (a backend failure), never sent: logged once where the error leaves the server
    /// ([`ClientError::log_at_edge`]), never by a conversion.
    pub detail: Option<String>,
    /// For `RATE_LIMITED`: when the budget has room again (sent as `retryAfterMs`, or `Retry-After` on HTTP).
    pub retry_after_ms: Option<u64>,
}

impl ClientError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), detail: None, retry_after_ms: None }
    }

    /// `RATE_LIMITED`, with when to try again.
    pub(crate) fn rate_limited(message: impl Into<String>, retry_after_ms: u64) -> Self {
        Self { retry_after_ms: Some(retry_after_ms.max(1)), ..Self::new(ErrorCode::RateLimited, message) }
    }

    /// Logs the internal detail, if any, where the error leaves the server: a socket's reply, an HTTP
    /// response, a turn's ending.
    pub(crate) fn log_at_edge(&self, edge: &'static str) {
        if let Some(detail) = &self.detail {
            tracing::error!(error = %detail, edge, code = self.code.as_str(), "internal error");
        }
    }
    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }
    pub(crate) fn session_not_found(session_id: &str) -> Self {
        Self::new(ErrorCode::SessionNotFound, format!("session '{session_id}' not found"))
    }
    pub(crate) fn turn_in_progress() -> Self {
        Self::new(
            ErrorCode::TurnInProgress,
            "a turn is already in progress on this session; cancel it or wait for it to complete",
        )
    }
}

impl From<crate::backend::BackendError> for ClientError {
    fn from(e: crate::backend::BackendError) -> Self {
        // Backend detail (Redis addresses, script errors) stays in the logs: the edge logs it.
        ClientError {
            detail: Some(e.to_string()),
            ..ClientError::new(ErrorCode::Internal, "internal error, please retry")
        }
    }
}
