//! Coupon codes: 100 random bits in Crockford base32 plus a Luhn mod 32 check
//! character, so a mistyped code is rejected before any store read.

use std::fmt;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const PAYLOAD_LEN: usize = 20;
/// Random bytes a code is made from; 13 bytes = 104 bits, of which 100 are used.
pub const RANDOM_BYTES: usize = 13;

/// A well-formed coupon code (which says nothing of whether it exists).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CouponCode(String);

impl CouponCode {
    /// Makes a code from cryptographically random bytes.
    pub fn from_random(bytes: [u8; RANDOM_BYTES]) -> CouponCode {
        let bits = bytes
            .iter()
            .fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
        let mut code = String::with_capacity(PAYLOAD_LEN + 1);
        for i in (0..PAYLOAD_LEN).rev() {
            code.push(ALPHABET[((bits >> (5 * i)) & 31) as usize] as char);
        }
        code.push(ALPHABET[check_digit(code.as_bytes())] as char);
        CouponCode(code)
    }

    /// Accepts a code as a user may type it (any case); `None` when it cannot be one of ours.
    pub fn parse(s: &str) -> Option<CouponCode> {
        if s.len() != PAYLOAD_LEN + 1 {
            return None;
        }
        let upper = s.to_ascii_uppercase();
        let (payload, check) = upper.as_bytes().split_at(PAYLOAD_LEN);
        if !upper.bytes().all(|b| ALPHABET.contains(&b)) {
            return None;
        }
        (ALPHABET[check_digit(payload)] == check[0]).then_some(CouponCode(upper))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Which of `shards` counters this code belongs to: its characters are
    /// random, so codes spread evenly.
    pub fn shard(&self, shards: u32) -> u32 {
        let hash = self
            .0
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        hash % shards.max(1)
    }
}

impl fmt::Display for CouponCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Luhn mod 32 over alphabet indices: catches every single-character error
/// and every swap of two adjacent characters but `0`/`Z` (as decimal Luhn misses `09`/`90`).
fn check_digit(payload: &[u8]) -> usize {
    let mut sum = 0;
    for (i, &c) in payload.iter().rev().enumerate() {
        let value = ALPHABET.iter().position(|&a| a == c).unwrap_or(0);
        let addend = if i % 2 == 0 { value * 2 } else { value };
        sum += addend / 32 + addend % 32;
    }
    (32 - sum % 32) % 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_code_parses_back_in_any_case() {
        let code = CouponCode::from_random([0xA5; RANDOM_BYTES]);
        assert_eq!(code.as_str().len(), 21);
        assert_eq!(CouponCode::parse(code.as_str()), Some(code.clone()));
        assert_eq!(CouponCode::parse(&code.as_str().to_lowercase()), Some(code));
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let code = CouponCode::from_random([7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        for i in 0..code.0.len() {
            for &c in ALPHABET {
                let mut typo = code.0.clone().into_bytes();
                if typo[i] == c {
                    continue;
                }
                typo[i] = c;
                let typo = String::from_utf8(typo).expect("ascii");
                assert_eq!(CouponCode::parse(&typo), None, "{typo}");
            }
        }
    }

    #[test]
    fn adjacent_swaps_are_caught() {
        let code = CouponCode::from_random([0x3C, 0x99, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        let bytes = code.0.as_bytes();
        for i in 0..bytes.len() - 1 {
            let pair = [bytes[i], bytes[i + 1]];
            if pair[0] == pair[1] || pair == *b"0Z" || pair == *b"Z0" {
                continue;
            }
            let mut swapped = bytes.to_vec();
            swapped.swap(i, i + 1);
            let swapped = String::from_utf8(swapped).expect("ascii");
            assert_eq!(CouponCode::parse(&swapped), None, "{swapped}");
        }
    }

    #[test]
    fn different_random_bytes_give_different_codes() {
        let a = CouponCode::from_random([0; RANDOM_BYTES]);
        let mut bytes = [0; RANDOM_BYTES];
        bytes[RANDOM_BYTES - 1] = 1;
        assert_ne!(a, CouponCode::from_random(bytes));
    }

    #[test]
    fn junk_is_not_a_code() {
        for junk in [
            "",
            "ABC",
            "U0000000000000000000U",
            "0000000000000000000000",
            "ü000000000000000000",
        ] {
            assert_eq!(CouponCode::parse(junk), None, "{junk}");
        }
    }
}
