//! What crosses components, through the real `.wasm` components on the
//! wasmtime host: routing, round trips, shedding, stories across operations
//! and the invariants under concurrency. Each operation's own tests live
//! with its component (`components/<name>/tests/`, `cargo test -p <name>`).

mod invariants;
mod overload;
mod round_trips;
mod routing;
mod stories;
