//! Discounts, campaign capacity and shards, month-end expiry.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coupon_core::fuzzing::rules(data));
