//! Who is calling: users by an HS256 JWT, operators by a shared admin token.
//!
//! A full JWT library would bring every algorithm into every component; users
//! here only ever hold HS256 tokens, so this verifies exactly that and refuses
//! the rest (`alg: none`, other algorithms, missing `exp`, future `nbf`).

use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// Longest `sub` accepted as a user id.
pub const MAX_USER_ID_LEN: usize = 128;

/// The verified `sub` of a user token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(pub(crate) String);

impl UserId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
}

/// The bearer token of an `Authorization` header value.
fn bearer(authorization: Option<&str>) -> Result<&str> {
    let value = authorization.ok_or(Error::Unauthorized)?;
    let (scheme, token) = value.split_once(' ').ok_or(Error::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Error::Unauthorized);
    }
    Ok(token.trim())
}

/// Verifies a user's `Authorization: Bearer <JWT>` against `secret` at `now`.
pub fn verify_user(authorization: Option<&str>, secret: &[u8], now: Timestamp) -> Result<UserId> {
    if secret.is_empty() {
        return Err(Error::Unauthorized);
    }
    let token = bearer(authorization)?;
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Unauthorized);
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| Error::Unauthorized)
    };
    let header: Header =
        serde_json::from_slice(&decode(header)?).map_err(|_| Error::Unauthorized)?;
    if header.alg != "HS256" {
        return Err(Error::Unauthorized);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Error::Unauthorized)?;
    mac.update(&token.as_bytes()[..token.len() - signature.len() - 1]);
    // verify_slice compares in constant time.
    mac.verify_slice(&decode(signature)?)
        .map_err(|_| Error::Unauthorized)?;

    let claims: Claims =
        serde_json::from_slice(&decode(payload)?).map_err(|_| Error::Unauthorized)?;
    let now = now.as_second() as f64;
    match claims.exp {
        Some(exp) if exp > now => {}
        _ => return Err(Error::Unauthorized),
    }
    if claims.nbf.is_some_and(|nbf| nbf > now) {
        return Err(Error::Unauthorized);
    }
    match claims.sub {
        Some(sub)
            if (1..=MAX_USER_ID_LEN).contains(&sub.len()) && !sub.chars().any(char::is_control) =>
        {
            Ok(UserId(sub))
        }
        _ => Err(Error::Unauthorized),
    }
}

/// Checks an operator's `Authorization: Bearer <admin token>` in constant
/// time. The digests are compared, not the tokens: a byte-wise comparison
/// returns early on a length mismatch and so tells the token's length.
pub fn verify_admin(authorization: Option<&str>, admin_token: &str) -> Result<()> {
    let token = bearer(authorization)?;
    let given = Sha256::digest(token.as_bytes());
    let expected = Sha256::digest(admin_token.as_bytes());
    let matches: bool = given.as_slice().ct_eq(expected.as_slice()).into();
    if admin_token.is_empty() || !matches {
        return Err(Error::Unauthorized);
    }
    Ok(())
}

/// Signs an HS256 token: for tests, examples and the local host's demo output.
pub fn sign_user_token(secret: &[u8], claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret";

    fn now() -> Timestamp {
        "2027-01-10T00:00:00Z".parse().expect("timestamp")
    }

    fn bearer_of(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn valid_claims() -> serde_json::Value {
        json!({"sub": "alice", "exp": now().as_second() + 60})
    }

    #[test]
    fn a_valid_token_names_its_user() {
        let token = sign_user_token(SECRET, &valid_claims());
        let user = verify_user(Some(&bearer_of(&token)), SECRET, now()).expect("valid");
        assert_eq!(user.as_str(), "alice");
    }

    #[test]
    fn forged_and_stale_tokens_are_refused() {
        let n = now().as_second();
        let wrong_key = sign_user_token(b"other", &valid_claims());
        let expired = sign_user_token(SECRET, &json!({"sub": "alice", "exp": n}));
        let no_exp = sign_user_token(SECRET, &json!({"sub": "alice"}));
        let future_nbf = sign_user_token(
            SECRET,
            &json!({"sub": "alice", "exp": n + 60, "nbf": n + 30}),
        );
        let no_sub = sign_user_token(SECRET, &json!({"exp": n + 60}));
        let empty_sub = sign_user_token(SECRET, &json!({"sub": "", "exp": n + 60}));
        let valid = sign_user_token(SECRET, &valid_claims());
        let (head, rest) = valid.split_once('.').expect("jwt");
        let (_, signature) = rest.split_once('.').expect("jwt");
        let tampered = format!(
            "{head}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(json!({"sub": "mallory", "exp": n + 60}).to_string())
        );
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(valid_claims().to_string())
        );
        let hs512_header = format!("{}.{}", URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512"}"#), rest);
        for token in [
            wrong_key,
            expired,
            no_exp,
            future_nbf,
            no_sub,
            empty_sub,
            tampered,
            none_alg,
            hs512_header,
        ] {
            assert_eq!(
                verify_user(Some(&bearer_of(&token)), SECRET, now()),
                Err(Error::Unauthorized),
                "{token}"
            );
        }
        assert_eq!(verify_user(None, SECRET, now()), Err(Error::Unauthorized));
        assert_eq!(
            verify_user(Some("Basic abc"), SECRET, now()),
            Err(Error::Unauthorized)
        );
        let token = sign_user_token(b"", &valid_claims());
        assert_eq!(
            verify_user(Some(&bearer_of(&token)), b"", now()),
            Err(Error::Unauthorized)
        );
    }

    #[test]
    fn the_admin_token_must_match_exactly() {
        assert_eq!(verify_admin(Some("Bearer op-token"), "op-token"), Ok(()));
        for header in [
            None,
            Some("Bearer op-toke"),
            Some("Bearer op-token2"),
            Some("op-token"),
            Some("Bearer "),
        ] {
            assert_eq!(
                verify_admin(header, "op-token"),
                Err(Error::Unauthorized),
                "{header:?}"
            );
        }
        assert_eq!(verify_admin(Some("Bearer "), ""), Err(Error::Unauthorized));
    }
}
