//! Compiled components on disk, keyed by the `.wasm`'s content hash and the
//! engine's settings, so a restarted host does not compile again.
//!
//! The cache directory is `$COUPON_HOST_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/coupon-host`, else `~/.cache/coupon-host`. Its files are
//! trusted as the engine's own output: it must not be writable by others.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

fn cache_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("COUPON_HOST_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("coupon-host")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("coupon-host")))
}

/// Where the compiled form of `wasm` lives for `engine`.
fn entry(dir: &Path, engine: &Engine, wasm: &[u8]) -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let digest = Sha256::new()
        .chain_update(wasm)
        .chain_update(hasher.finish().to_le_bytes())
        .finalize();
    let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{name}.cwasm"))
}

/// Compiles the component at `path`, or loads its compiled form from the cache.
/// A cache that cannot be read or written costs only the compile.
pub(crate) fn compile(engine: &Engine, path: &Path) -> Result<Component> {
    let wasm = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let Some(dir) = cache_dir() else {
        return Component::new(engine, &wasm).map_err(anyhow::Error::from);
    };
    let cached = entry(&dir, engine, &wasm);
    if cached.is_file() {
        // SAFETY: the file was written by `serialize` of an engine with the same
        // compatibility hash (part of its name) into the host's own cache directory.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(component) => return Ok(component),
            Err(e) => eprintln!(
                "coupon-host: ignoring unreadable cache entry {}: {e}",
                cached.display()
            ),
        }
    }
    let component = Component::new(engine, &wasm).map_err(anyhow::Error::from)?;
    if let Err(e) = store(&dir, &cached, &component) {
        eprintln!(
            "coupon-host: cannot cache the compiled {}: {e:#}",
            path.display()
        );
    }
    Ok(component)
}

/// Writes atomically: a reader sees the whole entry or none.
fn store(dir: &Path, cached: &Path, component: &Component) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize().map_err(anyhow::Error::from)?;
    let partial = cached.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, cached)?;
    Ok(())
}
