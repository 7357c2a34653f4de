//! Request bodies, idempotency keys, query strings and coupon codes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coupon_core::fuzzing::requests(data));
