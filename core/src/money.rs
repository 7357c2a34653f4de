//! Amounts in minor units (fen, cents) and ISO 4217 currency codes.

use crate::error::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// The largest amount accepted anywhere: 10^15 minor units (ten trillion yuan).
/// Far above any real order or budget, and small enough that no sum or
/// product this crate computes can overflow 64 or 128 bits.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// A non-negative amount of minor units, at most [`MAX_AMOUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub fn new(minor: i64) -> Option<Amount> {
        (0..=MAX_AMOUNT).contains(&minor).then_some(Amount(minor))
    }

    pub fn minor(self) -> i64 {
        self.0
    }

    /// `self - other`, never below zero.
    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount((self.0 - other.0).max(0))
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let minor = i64::deserialize(d)?;
        Amount::new(minor).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "amount {minor} is outside 0..={MAX_AMOUNT} minor units"
            ))
        })
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An ISO 4217 alphabetic code: three upper-case ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(s: &str) -> Result<Currency> {
        match s.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Currency([a, b, c])),
            _ => Err(Error::invalid(
                "currency",
                format!("{s:?} is not an ISO 4217 code (three upper-case letters, e.g. \"CNY\")"),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(|e| serde::de::Error::custom(e.to_string()))
    }
}
