//! A small blocking HTTP/1.1 client: one connection per request, so no
//! keep-alive behaviour of the server under test (Spin's Nagle stall among
//! them) shapes the results.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The app under test: where it listens and the two secrets it was given.
#[derive(Clone, Debug)]
pub struct Target {
    /// What the report calls it, e.g. `host/redis`.
    pub name: String,
    /// `127.0.0.1:port`.
    pub address: String,
    pub admin_token: String,
    pub user_secret: String,
}

/// Who sends a request.
#[derive(Clone, Copy)]
pub enum Who<'a> {
    Anonymous,
    Operator,
    User(&'a str),
}

/// An answer: status, headers (names in lower case) and the body as JSON
/// (`Null` when empty, a string when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Fails unless this is the error answer `status` with `code`.
    pub fn expect_error(&self, status: u16, code: &str) -> Result<(), String> {
        if (self.status, self.code()) == (status, code) {
            Ok(())
        } else {
            Err(format!(
                "expected {status} {code}, got {}: {}",
                self.status, self.body
            ))
        }
    }

    /// Fails unless the status is `status`.
    pub fn expect_status(&self, status: u16) -> Result<&Value, String> {
        if self.status == status {
            Ok(&self.body)
        } else {
            Err(format!(
                "expected {status}, got {}: {}",
                self.status, self.body
            ))
        }
    }
}

impl Target {
    /// A user token for `user`, valid for an hour.
    pub fn user_token(&self, user: &str) -> String {
        let exp = coupon_core::Timestamp::now().as_second() + 3600;
        coupon_core::auth::sign_user_token(
            self.user_secret.as_bytes(),
            &json!({"sub": user, "exp": exp}),
        )
    }

    /// Sends one request; `body`, when given, as JSON.
    pub fn send(
        &self,
        who: Who,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.address,
            body.len()
        );
        if !body.is_empty() {
            head.push_str("content-type: application/json\r\n");
        }
        match who {
            Who::Anonymous => {}
            Who::Operator => {
                head.push_str(&format!("authorization: Bearer {}\r\n", self.admin_token))
            }
            Who::User(user) => head.push_str(&format!(
                "authorization: Bearer {}\r\n",
                self.user_token(user)
            )),
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let exchange = || -> std::io::Result<Vec<u8>> {
            let mut stream = TcpStream::connect(&self.address)?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            stream.write_all(format!("{head}\r\n{body}").as_bytes())?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer)?;
            Ok(answer)
        };
        let raw = exchange().map_err(|e| format!("{method} {path}: {e}"))?;
        parse(&raw).ok_or_else(|| {
            format!(
                "{method} {path}: not an HTTP answer: {:?}",
                String::from_utf8_lossy(&raw)
            )
        })
    }

    pub fn get(&self, who: Who, path: &str) -> Result<Answer, String> {
        self.send(who, "GET", path, &[], None)
    }

    pub fn post(&self, who: Who, path: &str, body: &Value) -> Result<Answer, String> {
        self.send(who, "POST", path, &[], Some(body))
    }

    pub fn claim(&self, user: &str, campaign: &str, key: &str) -> Result<Answer, String> {
        self.send(
            Who::User(user),
            "POST",
            "/claims",
            &[("idempotency-key", key)],
            Some(&json!({"campaign_id": campaign})),
        )
    }
}

/// Status line, headers and body of a whole HTTP/1.1 answer, chunked or not.
fn parse(raw: &[u8]) -> Option<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.get(9..12)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// A chunked body's content.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}
