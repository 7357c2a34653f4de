//! The host's own answers, in the API's error shape
//! `{"error": {"code", "message"}}`: a path no component serves, a component
//! that failed, a request shed or too large. Clients parse one shape, whoever
//! answered.

use bytes::Bytes;
use http::{Response, StatusCode, header};

/// An error answer with a stable `code` and a message for people.
pub(crate) fn refusal(status: StatusCode, code: &str, message: &str) -> Response<Bytes> {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
