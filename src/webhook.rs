//! What every outgoing webhook call shares (tools, knowledge retrieval, OTP delivery): a failure told without its
//! URL, and an answer body read only up to a cap.

/// A webhook call's failure in words without its URL (a URL may carry a secret): only the kind of failure.
pub(crate) fn http_failure(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        e.without_url().to_string()
    }
}

/// Why [`read_capped`] stopped.
pub(crate) enum BodyError {
    /// The body broke off (the kind, from [`http_failure`]).
    Broken(String),
    /// The body was longer than allowed; nothing past the limit was kept.
    TooLarge,
}

/// A webhook's answer body, read up to `max` bytes: a host cannot make the pod hold more than that.
pub(crate) async fn read_capped(resp: reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    use futures_util::StreamExt;
    let mut bytes = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Broken(http_failure(e)))?;
        if bytes.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
