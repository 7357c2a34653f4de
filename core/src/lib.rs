//! The coupon domain, shared by every component and tested natively.
//!
//! It knows nothing of Spin or HTTP libraries: components hand it a
//! [`store::Store`], the time and random bytes, and map its [`api::Reply`]s and
//! [`error::Error`]s to HTTP. See ARCHITECTURE.md for the map.

pub mod api;
pub mod auth;
pub mod campaign;
pub mod code;
pub mod coupon;
pub mod discount;
pub mod error;
pub mod expiry;
/// The fuzz targets' bodies (see `fuzz/`), here so tests replay saved inputs natively. Not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod lease;
pub mod money;
pub mod ops;
#[cfg(test)]
mod sim;
pub mod store;
pub mod time;

pub use error::{Error, Result};
pub use jiff::Timestamp;
