//! `Authorization` headers: user JWTs and the admin token.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coupon_core::fuzzing::token(data));
