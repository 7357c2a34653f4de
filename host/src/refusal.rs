//! The host's own answers where Spin has none, in the API's error shape
//! `{"error": {"code", "message"}}`: a request shed or too large, or one the
//! host could not serve. (No route and a failed component are answered as
//! Spin answers them: an empty 404 and an empty 500, in `app`.)

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
