//! Builds an app's components on first use, so a plain `cargo test --release`
//! from a clean checkout works without `spin build`.
//!
//! Each distinct build command runs once per process (later callers get the
//! remembered outcome) and always through cargo's own up-to-date checks, so a
//! changed component is rebuilt on the next test run.

use crate::manifest::Manifest;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, PoisonError};

/// The Rust target the components are built for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// A parent cargo's jobserver: the nested cargo does not hold its pipes, so it
/// must run its own.
const JOBSERVER_VARS: &[&str] = &["CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS"];

/// A build command and the directory it runs in.
type BuildKey = (PathBuf, String);

/// Outcomes of the build commands run so far; the lock is held while a command
/// runs so concurrent callers wait for it.
static BUILT: Mutex<BTreeMap<BuildKey, Result<(), String>>> = Mutex::new(BTreeMap::new());

/// Runs every component's `[component.<id>.build] command` in the manifest's
/// directory (or its `workdir`), each at most once per process; first adds the
/// `wasm32-wasip2` target through rustup if it is missing. Blocks: call it
/// from a blocking thread.
pub fn ensure_built(manifest: &Manifest) -> Result<()> {
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    for (id, component) in &manifest.components {
        let Some(build) = &component.build else {
            continue;
        };
        let dir = match &build.workdir {
            Some(workdir) => manifest.dir.join(workdir),
            None => manifest.dir.clone(),
        };
        let key = (dir.clone(), build.command.clone());
        let outcome = match built.get(&key) {
            Some(outcome) => outcome.clone(),
            None => {
                let outcome = ensure_wasm_target()
                    .and_then(|()| run_build(&dir, &build.command))
                    .map_err(|e| format!("{e:#}"));
                built.insert(key, outcome.clone());
                outcome
            }
        };
        outcome.map_err(anyhow::Error::msg).with_context(|| {
            format!(
                "cannot build component {id:?} of {}",
                manifest.path.display()
            )
        })?;
    }
    Ok(())
}

/// Adds the wasm target with rustup unless it is installed. Without rustup
/// (a distribution's Rust), does nothing and lets the build say what is missing.
fn ensure_wasm_target() -> Result<()> {
    let Ok(installed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    let output = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .output()
        .context("cannot run rustup")?;
    check_success(&format!("rustup target add {WASM_TARGET}"), &output)
}

fn run_build(dir: &PathBuf, command: &str) -> Result<()> {
    let mut child = Command::new("sh");
    child.arg("-c").arg(command).current_dir(dir);
    for var in JOBSERVER_VARS {
        child.env_remove(var);
    }
    let output = child
        .output()
        .with_context(|| format!("cannot run `sh -c {command:?}` in {}", dir.display()))?;
    check_success(&format!("`{command}` in {}", dir.display()), &output)
}

fn check_success(what: &str, output: &Output) -> Result<()> {
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    Ok(())
}
