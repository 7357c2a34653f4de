//! Who is calling: users by an HS256 JWT, operators by a shared admin token.
//!
//! A full JWT library would bring every algorithm into every component; users
//! here only ever hold HS256 tokens, so this verifies exactly that and refuses
//! the rest (`alg: none`, other algorithms, missing `exp`, future `nbf`).
//!
//! `exp` and `nbf` are given [`LEEWAY`] for the skew between the issuer's
//! clock and ours. `sub` may be a string or a whole number, as issuers
//! choose: `42` and `"42"` name the same user. A refusal says which check
//! failed ([`Denial`]): nothing an attacker without a valid signature learns
//! from it, since every check past the signature is on claims they signed.

use crate::error::{Denial, Error, Result};
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

/// Seconds `exp` and `nbf` may be off by: the issuer's clock and ours differ.
pub const LEEWAY: f64 = 60.0;

#[derive(Deserialize)]
struct Claims {
    sub: Option<serde_json::Value>,
    exp: Option<f64>,
    nbf: Option<f64>,
}

/// The bearer token of an `Authorization` header value.
fn bearer(authorization: Option<&str>) -> Result<&str> {
    let value = authorization.ok_or(Error::Unauthorized(Denial::Missing))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(Error::Unauthorized(Denial::Missing))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::Unauthorized(Denial::Missing));
    }
    Ok(token.trim())
}

/// The user a `sub` names: a string, or a whole number in decimal.
fn user_of(sub: Option<serde_json::Value>) -> Option<String> {
    let sub = match sub? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return None,
    };
    ((1..=MAX_USER_ID_LEN).contains(&sub.len()) && !sub.chars().any(char::is_control))
        .then_some(sub)
}

/// Verifies a user's `Authorization: Bearer <JWT>` against `secret` at `now`.
pub fn verify_user(authorization: Option<&str>, secret: &[u8], now: Timestamp) -> Result<UserId> {
    let invalid = Error::Unauthorized(Denial::Invalid);
    let token = bearer(authorization)?;
    if secret.is_empty() {
        return Err(invalid);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| invalid.clone());
    let header: Header = serde_json::from_slice(&decode(header)?).map_err(|_| invalid.clone())?;
    if header.alg != "HS256" {
        return Err(invalid);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| invalid.clone())?;
    mac.update(&token.as_bytes()[..token.len() - signature.len() - 1]);
    // verify_slice compares in constant time.
    mac.verify_slice(&decode(signature)?)
        .map_err(|_| invalid.clone())?;

    // Signed by the issuer: from here on, what failed may be said.
    let claims: Claims = serde_json::from_slice(&decode(payload)?).map_err(|_| invalid.clone())?;
    let now = now.as_second() as f64;
    match claims.exp {
        Some(exp) if exp + LEEWAY > now => {}
        Some(_) => return Err(Error::Unauthorized(Denial::Expired)),
        None => return Err(Error::Unauthorized(Denial::NoExpiry)),
    }
    if claims.nbf.is_some_and(|nbf| nbf - LEEWAY > now) {
        return Err(Error::Unauthorized(Denial::NotYetValid));
    }
    user_of(claims.sub)
        .map(UserId)
        .ok_or(Error::Unauthorized(Denial::NoUser))
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
        return Err(Error::Unauthorized(Denial::Invalid));
    }
    Ok(())
}

/// Checks the shop's checkout backend's `Authorization: Bearer <token>`
/// against `tokens`: any of them, separated by commas or whitespace, so a
/// new token can be rolled out before the old one is withdrawn. Every token
/// is compared, in constant time, whichever matches.
pub fn verify_checkout(authorization: Option<&str>, tokens: &str) -> Result<()> {
    let token = bearer(authorization)?;
    let given = Sha256::digest(token.as_bytes());
    let mut matches = subtle::Choice::from(0);
    for expected in tokens.split(|c: char| c == ',' || c.is_whitespace()) {
        if !expected.is_empty() {
            matches |= given
                .as_slice()
                .ct_eq(Sha256::digest(expected.as_bytes()).as_slice());
        }
    }
    if !bool::from(matches) {
        return Err(Error::Unauthorized(Denial::Invalid));
    }
    Ok(())
}

/// Who calls on a user's coupons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A user, with their own token.
    User(UserId),
    /// The shop's checkout backend, with a checkout token: it names the user
    /// it acts for and vouches for the order.
    Checkout,
}

impl From<&UserId> for Caller {
    fn from(user: &UserId) -> Self {
        Caller::User(user.clone())
    }
}

/// The user a call acts for, and whether the checkout makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acting {
    pub user: UserId,
    pub by_checkout: bool,
}

impl Caller {
    /// The user acted for: a user's own, or the one the checkout names in
    /// the body's `user_id`. A user may name only themself.
    pub fn acting_for(&self, named: Option<&str>) -> Result<Acting> {
        match (self, named) {
            (Caller::User(user), None) => Ok(Acting {
                user: user.clone(),
                by_checkout: false,
            }),
            (Caller::User(user), Some(named)) if named == user.as_str() => Ok(Acting {
                user: user.clone(),
                by_checkout: false,
            }),
            (Caller::User(_), Some(_)) => Err(Error::invalid(
                "user_id",
                "a user's token acts only for its own user",
            )),
            (Caller::Checkout, None) => Err(Error::invalid(
                "user_id",
                "is required from the checkout: the user it acts for",
            )),
            (Caller::Checkout, Some(named)) => user_of(Some(named.into()))
                .map(|user| Acting {
                    user: UserId(user),
                    by_checkout: true,
                })
                .ok_or_else(|| {
                    Error::invalid(
                        "user_id",
                        format!(
                            "must be 1 to {MAX_USER_ID_LEN} characters without control characters"
                        ),
                    )
                }),
        }
    }
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
    fn forged_and_stale_tokens_are_refused_saying_which_check_failed() {
        let n = now().as_second();
        let wrong_key = sign_user_token(b"other", &valid_claims());
        let expired = sign_user_token(SECRET, &json!({"sub": "alice", "exp": n - 61}));
        let no_exp = sign_user_token(SECRET, &json!({"sub": "alice"}));
        let future_nbf = sign_user_token(
            SECRET,
            &json!({"sub": "alice", "exp": n + 600, "nbf": n + 61}),
        );
        let no_sub = sign_user_token(SECRET, &json!({"exp": n + 60}));
        let empty_sub = sign_user_token(SECRET, &json!({"sub": "", "exp": n + 60}));
        let fraction_sub = sign_user_token(SECRET, &json!({"sub": 4.5, "exp": n + 60}));
        let object_sub = sign_user_token(SECRET, &json!({"sub": {"id": 1}, "exp": n + 60}));
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
        for (token, denial) in [
            // Unsigned by us: one answer, whatever was wrong.
            (wrong_key, Denial::Invalid),
            (tampered, Denial::Invalid),
            (none_alg, Denial::Invalid),
            (hs512_header, Denial::Invalid),
            ("a.b".to_owned(), Denial::Invalid),
            // Signed: what failed is said.
            (expired, Denial::Expired),
            (no_exp, Denial::NoExpiry),
            (future_nbf, Denial::NotYetValid),
            (no_sub, Denial::NoUser),
            (empty_sub, Denial::NoUser),
            (fraction_sub, Denial::NoUser),
            (object_sub, Denial::NoUser),
        ] {
            assert_eq!(
                verify_user(Some(&bearer_of(&token)), SECRET, now()),
                Err(Error::Unauthorized(denial)),
                "{token}"
            );
        }
        for header in [None, Some("Basic abc"), Some("Bearer "), Some("Bearer")] {
            assert_eq!(
                verify_user(header, SECRET, now()),
                Err(Error::Unauthorized(Denial::Missing)),
                "{header:?}"
            );
        }
        let token = sign_user_token(b"", &valid_claims());
        assert_eq!(
            verify_user(Some(&bearer_of(&token)), b"", now()),
            Err(Error::Unauthorized(Denial::Invalid))
        );
    }

    #[test]
    fn exp_and_nbf_allow_a_minute_of_clock_skew_and_no_more() {
        let n = now().as_second();
        let verify = |claims: serde_json::Value| {
            verify_user(
                Some(&bearer_of(&sign_user_token(SECRET, &claims))),
                SECRET,
                now(),
            )
        };
        assert!(verify(json!({"sub": "alice", "exp": n - 59})).is_ok());
        assert_eq!(
            verify(json!({"sub": "alice", "exp": n - 60})),
            Err(Error::Unauthorized(Denial::Expired))
        );
        assert!(verify(json!({"sub": "alice", "exp": n + 600, "nbf": n + 60})).is_ok());
        assert_eq!(
            verify(json!({"sub": "alice", "exp": n + 600, "nbf": n + 61})),
            Err(Error::Unauthorized(Denial::NotYetValid))
        );
    }

    #[test]
    fn a_numeric_sub_names_the_same_user_as_its_decimal_string() {
        let n = now().as_second();
        for sub in [json!(42), json!("42")] {
            let token = sign_user_token(SECRET, &json!({"sub": sub, "exp": n + 60}));
            let user = verify_user(Some(&bearer_of(&token)), SECRET, now()).expect("valid");
            assert_eq!(user.as_str(), "42");
        }
    }

    #[test]
    fn a_refusal_carries_its_challenge() {
        let missing = crate::api::Reply::error(&Error::Unauthorized(Denial::Missing));
        let expired = crate::api::Reply::error(&Error::Unauthorized(Denial::Expired));
        let header = |reply: &crate::api::Reply| {
            reply
                .headers
                .iter()
                .find(|(name, _)| *name == "www-authenticate")
                .map(|(_, value)| value.clone())
        };
        assert_eq!(
            header(&missing).as_deref(),
            Some(r#"Bearer realm="coupons""#)
        );
        assert_eq!(
            header(&expired).as_deref(),
            Some(
                r#"Bearer realm="coupons", error="invalid_token", error_description="the token has expired""#
            )
        );
        assert_eq!((expired.status, missing.status), (401, 401));
    }

    #[test]
    fn the_admin_token_must_match_exactly() {
        assert_eq!(verify_admin(Some("Bearer op-token"), "op-token"), Ok(()));
        for (header, denial) in [
            (None, Denial::Missing),
            (Some("Bearer op-toke"), Denial::Invalid),
            (Some("Bearer op-token2"), Denial::Invalid),
            (Some("op-token"), Denial::Missing),
            (Some("Bearer "), Denial::Missing),
        ] {
            assert_eq!(
                verify_admin(header, "op-token"),
                Err(Error::Unauthorized(denial)),
                "{header:?}"
            );
        }
        assert_eq!(
            verify_admin(Some("Bearer x"), ""),
            Err(Error::Unauthorized(Denial::Invalid))
        );
    }

    #[test]
    fn any_of_the_checkout_tokens_verifies_and_nothing_else() {
        let tokens = " old-token, new-token\nthird ";
        for token in ["old-token", "new-token", "third"] {
            assert_eq!(verify_checkout(Some(&bearer_of(token)), tokens), Ok(()));
        }
        for token in ["old", "old-token,new-token", "new-token\nthird"] {
            assert!(
                verify_checkout(Some(&bearer_of(token)), tokens).is_err(),
                "{token:?}"
            );
        }
        // No token configured: the role is off.
        for tokens in ["", " , "] {
            assert!(verify_checkout(Some(&bearer_of("x")), tokens).is_err());
        }
    }

    #[test]
    fn the_checkout_names_the_user_and_a_user_only_themself() {
        let alice = UserId("alice".into());
        let acting = |caller: &Caller, named: Option<&str>| {
            caller.acting_for(named).map(|a| (a.user.0, a.by_checkout))
        };
        let user = Caller::User(alice.clone());
        assert_eq!(acting(&user, None), Ok(("alice".into(), false)));
        assert_eq!(acting(&user, Some("alice")), Ok(("alice".into(), false)));
        let field = |r: Result<(String, bool)>| r.err().and_then(|e| e.field().map(str::to_owned));
        assert_eq!(
            field(acting(&user, Some("bob"))).as_deref(),
            Some("user_id")
        );
        assert_eq!(
            acting(&Caller::Checkout, Some("bob")),
            Ok(("bob".into(), true))
        );
        for bad in [None, Some(""), Some("a\u{7}b")] {
            assert_eq!(
                field(acting(&Caller::Checkout, bad)).as_deref(),
                Some("user_id")
            );
        }
    }
}
