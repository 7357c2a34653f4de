//! Host bindings for the Spin imports this host provides (see `wit/host.wit`):
//! `spin:key-value@3.0.0`, `spin:variables@3.0.0` and `wasi:keyvalue@0.2.0-draft2`.
//!
//! Every import is `async` on the host so a backend may do I/O; WIT `async func`s
//! additionally get an `Accessor` and run concurrently with the guest.

wasmtime::component::bindgen!({
    path: "wit",
    world: "coupon:host/host",
    imports: { default: async | trappable },
    with: {
        "spin:key-value/key-value.store": crate::kv::host::SpinStore,
        "wasi:keyvalue/store.bucket": crate::kv::host::Bucket,
        "wasi:keyvalue/atomics.cas": crate::kv::host::Cas,
    },
});
