//! The bench's own HTTP client: a request as the request files hold it
//! ([`Call`]) and a keep-alive HTTP/1.1 connection to send it on. Used to set
//! up data and by the open-loop generator; wrk sends the closed-loop load.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// One request: what a line of a request file for `wrk/replay.lua` holds.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: &'static str,
    pub path: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    pub idempotency_key: Option<String>,
    /// JSON, or empty for none.
    pub body: String,
}

impl Call {
    /// A GET, with a token if `token` is `Some`.
    pub fn get(path: impl Into<String>, token: Option<&str>) -> Call {
        Call {
            method: "GET",
            path: path.into(),
            token: token.map(str::to_owned),
            idempotency_key: None,
            body: String::new(),
        }
    }

    pub fn post(path: impl Into<String>, token: &str, body: &Value) -> Call {
        Call {
            method: "POST",
            path: path.into(),
            token: Some(token.to_owned()),
            idempotency_key: None,
            body: body.to_string(),
        }
    }

    pub fn with_idempotency_key(mut self, key: String) -> Call {
        self.idempotency_key = Some(key);
        self
    }

    /// The line `wrk/replay.lua` reads: method, path, token, idempotency key
    /// (`-` for none) and body, tab-separated (JSON never holds a raw tab).
    pub fn to_line(&self) -> String {
        let token = self.token.as_deref().unwrap_or("-");
        let key = self.idempotency_key.as_deref().unwrap_or("-");
        let (method, path, body) = (self.method, &self.path, &self.body);
        format!("{method}\t{path}\t{token}\t{key}\t{body}")
    }

    fn to_http(&self, address: SocketAddr) -> Result<http::Request<Full<Bytes>>> {
        let mut request = http::Request::builder()
            .method(self.method)
            .uri(&self.path)
            .header("host", address.to_string());
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(key) = &self.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if !self.body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        request
            .body(Full::new(Bytes::from(self.body.clone())))
            .with_context(|| format!("{} {} is not a valid request", self.method, self.path))
    }
}

/// What the answer to a validation that does not apply holds.
const INVALID: &[u8] = br#""valid":false"#;

/// An answer: its status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// How the reports count it, the same way as `wrk/replay.lua`: the status,
    /// and for errors the body's error code ("503 overloaded"); a validation
    /// that says `"valid": false` is "200 valid:false".
    pub fn label(&self) -> String {
        if self.status >= 400 {
            match self.json()["error"]["code"].as_str() {
                Some(code) => format!("{} {code}", self.status),
                None => self.status.to_string(),
            }
        } else if self.body.windows(INVALID.len()).any(|w| w == INVALID) {
            format!("{} valid:false", self.status)
        } else {
            self.status.to_string()
        }
    }
}

/// A keep-alive HTTP/1.1 connection: one request at a time.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    address: SocketAddr,
}

impl Connection {
    pub async fn open(address: SocketAddr) -> Result<Connection> {
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("cannot connect to {address}"))?;
        // As the host does: without it a request written in two pieces waits
        // for the peer's delayed ACK.
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with {address}"))?;
        tokio::spawn(async move {
            // Ends with the connection; its errors reach the request on it.
            let _ = connection.await;
        });
        Ok(Connection { sender, address })
    }

    /// Sends `call` and reads the whole answer.
    pub async fn send(&mut self, call: &Call) -> Result<Answer> {
        let failed = || format!("{} {} to {}", call.method, call.path, self.address);
        self.sender.ready().await.with_context(failed)?;
        let response = self
            .sender
            .send_request(call.to_http(self.address)?)
            .await
            .with_context(failed)?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.with_context(failed)?;
        Ok(Answer {
            status,
            body: body.to_bytes(),
        })
    }
}
