//! The HTTP-facing edge of the core, free of any HTTP library: JSON bodies in,
//! status, headers and JSON out. Components translate to and from Spin's types.

use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Request bodies larger than this are refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Idempotency keys are 1 to this many visible ASCII characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// An answer, ready to be written by any HTTP stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, value: &impl Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply {
                status,
                headers: vec![("content-type", "application/json".into())],
                body,
            },
            Err(e) => Reply::error(&Error::Internal(format!("cannot encode the answer: {e}"))),
        }
    }

    /// One JSON document per line (`application/x-ndjson`), for exports.
    pub fn json_lines<T: Serialize>(status: u16, values: &[T]) -> Reply {
        let mut body = Vec::new();
        for value in values {
            if let Err(e) = serde_json::to_writer(&mut body, value) {
                return Reply::error(&Error::Internal(format!("cannot encode the answer: {e}")));
            }
            body.push(b'\n');
        }
        Reply {
            status,
            headers: vec![("content-type", "application/x-ndjson".into())],
            body,
        }
    }

    /// `{"error": {"code", "message", "field"?}}` with the error's status and
    /// `Retry-After`. A store or internal failure's detail (which may name a
    /// server, a user or a key) goes to stderr, the operator's log, not to
    /// the client.
    pub fn error(err: &Error) -> Reply {
        let message = match err {
            Error::StoreUnavailable(_) | Error::Internal(_) => {
                eprintln!("coupon: {err}");
                err.public_message()
            }
            _ => err.to_string(),
        };
        let mut detail = serde_json::json!({"code": err.code(), "message": message});
        if let Some(field) = err.field() {
            detail["field"] = field.into();
        }
        let mut reply = Reply::json(err.status(), &serde_json::json!({ "error": detail }));
        reply.status = err.status();
        if let Some(seconds) = err.retry_after() {
            reply.headers.push(("retry-after", seconds.to_string()));
        }
        if let Error::MethodNotAllowed { allow } = err {
            reply.headers.push(("allow", (*allow).to_owned()));
        }
        if let Error::Unauthorized(denial) = err {
            reply.headers.push(("www-authenticate", denial.challenge()));
        }
        reply
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

impl From<Result<Reply>> for Reply {
    fn from(result: Result<Reply>) -> Reply {
        result.unwrap_or_else(|e| Reply::error(&e))
    }
}

/// Parses a JSON body; an error names the field (`order.amount`) and what was wrong.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    if body.is_empty() {
        return Err(Error::InvalidRequest {
            field: None,
            message: "a JSON body is required".into(),
        });
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Error::InvalidRequest {
            field: None,
            message: e.to_string(),
        })?;
    whole_numbers_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde names unknown and missing fields in its message; point at them.
        let message = inner.to_string();
        let field = match path.as_str() {
            "." | "" => message
                .split('`')
                .nth(1)
                .filter(|_| {
                    message.starts_with("unknown field") || message.starts_with("missing field")
                })
                .map(str::to_owned),
            _ => Some(path),
        };
        Error::InvalidRequest { field, message }
    })
}

/// JSON has one number type: `2000.0` and `2e3` are the integer 2000 to JSON
/// Schema (and so to `openapi.yaml`), though not to serde. Rewrites every
/// whole number that f64 holds exactly as an integer.
fn whole_numbers_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    /// 2^53: every whole f64 below it in magnitude is exact.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
                && f.abs() < EXACT
            {
                *n = serde_json::Number::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

/// Checks an `Idempotency-Key` header: required, 1 to 128 visible ASCII characters.
pub fn idempotency_key(header: Option<&str>) -> Result<&str> {
    let key = header.ok_or_else(|| Error::invalid("Idempotency-Key", "the header is required"))?;
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::invalid(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(key)
}

/// The percent-decoded value of `name` in a query string like `a=1&order_id=x%2Fy`.
pub fn query_param(query: &str, name: &str) -> Result<Option<String>> {
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name {
            return percent_decode(value)
                .map(Some)
                .ok_or_else(|| Error::invalid(name, "is not valid percent-encoded UTF-8"));
        }
    }
    Ok(None)
}

fn percent_decode(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        match b {
            b'%' => {
                let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &tail[2..];
            }
            b'+' => {
                bytes.push(b' ');
                rest = tail;
            }
            _ => {
                bytes.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_do_not_reach_the_client() {
        let detail = "redis://coupon@10.0.0.7:6379: connection refused";
        for err in [
            Error::StoreUnavailable(detail.into()),
            Error::Internal(detail.into()),
        ] {
            let reply = Reply::error(&err);
            let body = String::from_utf8(reply.body).expect("JSON is UTF-8");
            assert!(
                !body.contains("10.0.0.7") && !body.contains("coupon@"),
                "{body}"
            );
            assert!(body.contains(err.code()), "{body}");
        }
    }
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Order {
        amount: i64,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u8,
    }

    #[test]
    fn parse_errors_name_the_field() {
        let field = |body: &str| {
            parse_json::<Order>(body.as_bytes())
                .unwrap_err()
                .field()
                .map(str::to_owned)
        };
        assert_eq!(field(r#"{"amount": "x"}"#).as_deref(), Some("amount"));
        assert_eq!(
            field(r#"{"amount": 1, "inner": {"n": 300}}"#).as_deref(),
            Some("inner.n")
        );
        assert_eq!(
            field(r#"{"amount": 1, "extra": 2}"#).as_deref(),
            Some("extra")
        );
        assert_eq!(field(r#"{}"#).as_deref(), Some("amount"));
        assert_eq!(field(r#"not json"#), None);
    }

    #[test]
    fn whole_numbers_are_integers_as_json_schema_says() {
        let amount = |body: &str| parse_json::<Order>(body.as_bytes()).map(|o| o.amount);
        assert_eq!(amount(r#"{"amount": 2000.0}"#), Ok(2000));
        assert_eq!(amount(r#"{"amount": 2e3}"#), Ok(2000));
        assert_eq!(amount(r#"{"amount": -0.0}"#), Ok(0));
        for fractional in [r#"{"amount": 2000.5}"#, r#"{"amount": 1e300}"#] {
            assert!(amount(fractional).is_err(), "{fractional}");
        }
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        assert!(idempotency_key(Some("k-1")).is_ok());
        assert!(idempotency_key(Some(&"k".repeat(128))).is_ok());
        for bad in [None, Some(""), Some("a b"), Some("ключ")] {
            assert!(idempotency_key(bad).is_err(), "{bad:?}");
        }
        assert!(idempotency_key(Some(&"k".repeat(129))).is_err());
    }

    #[test]
    fn query_params_are_percent_decoded() {
        assert_eq!(
            query_param("order_id=a%2Fb&x=1", "order_id")
                .unwrap()
                .as_deref(),
            Some("a/b")
        );
        assert_eq!(query_param("x=1", "order_id").unwrap(), None);
        assert!(query_param("order_id=%zz", "order_id").is_err());
        assert!(query_param("order_id=%ff", "order_id").is_err());
    }

    #[test]
    fn errors_carry_code_message_and_retry_after() {
        let reply = Reply::error(&Error::CampaignPaused);
        assert_eq!(reply.status, 503);
        assert!(reply.headers.contains(&("retry-after", "30".into())));
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"]["code"], "campaign_paused");
    }
}
