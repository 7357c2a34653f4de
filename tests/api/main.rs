//! Every endpoint and error path, through the real `.wasm` components on the
//! wasmtime host: one module per operation, then stories across them and the
//! invariants under concurrency.

mod campaigns;
mod claim;
mod expire;
mod invariants;
mod overload;
mod redating;
mod redeem;
mod round_trips;
mod routing;
mod stories;
mod validate;
