//! Extractors whose rejections answer in the API's own error shape, with the right 4xx and a sentence
//! that names the field once and says what is allowed, without parser internals.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request, rejection::PathRejection},
    http::{StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Like `axum::Json`, but only a JSON object is a valid body, and a bad body is a 400/413/415 with
/// `{status, error}`, never axum's plain text.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("the request body could not be read".into())
            }
        })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {}", without_position(&e))))?;
        if !value.is_object() {
            return Err(ApiError::BadRequest("the body must be a JSON object".into()));
        }
        serde_path_to_error::deserialize(value).map(Self).map_err(|e| ApiError::BadRequest(field_error(&e)))
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")))
}

/// serde_json's message without " at line L column C".
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// One sentence per bad field: our own validation messages already start with the field's name;
/// serde's get it in front, once.
fn field_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let message = without_position(e.inner());
    if let Some(name) = message.strip_prefix("missing field `").and_then(|rest| rest.strip_suffix('`')) {
        return format!("{name} is required");
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let allowed = rest.split_once("expected ").map_or(String::new(), |(_, list)| format!("; allowed: {list}"));
        return format!("unknown field {name}{}", allowed.replace('`', ""));
    }
    let path = e.path().to_string();
    if path == "." || message.starts_with(&path) { message } else { format!("{path}: {message}") }
}

/// Like `axum::extract::Path`, with the API's error shape.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state).await.map(|Path(v)| Self(v)).map_err(|rejection| match rejection {
            PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
                axum::extract::path::ErrorKind::InvalidUtf8InPathParam { key } => {
                    ApiError::BadRequest(format!("{key} in the path must be valid UTF-8"))
                }
                _ => ApiError::BadRequest("the path does not name a valid resource".into()),
            },
            other => ApiError::Internal(format!("path extraction: {}", other.body_text())),
        })
    }
}

/// The query string as one optional raw value per name; handlers parse what they accept, so every
/// error names the parameter and what is allowed.
#[derive(Debug)]
pub struct RawQuery(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for RawQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .map(Self)
            .map_err(|_| ApiError::BadRequest("the query string is not valid".into()))
    }
}

impl RawQuery {
    /// Refuses any parameter not in `allowed`.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(name, _)| !allowed.contains(&name.as_str())) {
            Some((name, _)) => {
                Err(ApiError::BadRequest(format!("unknown query parameter {name}; allowed: {}", allowed.join(", "))))
            }
            None => Ok(()),
        }
    }

    /// The value of `name`, if given (the last one wins).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}
