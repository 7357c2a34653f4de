//! `coupon-host up`: serves a Spin app like `spin up`, on wasmtime, with the
//! key-value stores of a Spin runtime config (SQLite under `--state-dir` by default),
//! and, with `--sweep-schedule`, runs the expiry sweep on a cron schedule.

mod example;
mod sweeper;

use anyhow::{Context, Result};
use clap::Parser;
use coupon_core::Timestamp;
use coupon_host::kv::StoreFidelity;
use coupon_host::runtime_config::Durability;
use coupon_host::{App, Schedule, probes, serve};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::sync::watch;

/// glibc's allocator locks an arena whenever a thread frees what another
/// allocated, which tokio's work stealing makes the common case: under load
/// that was most of the host's futex calls. mimalloc frees to the owner
/// without a lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves Spin apps on wasmtime, like `spin up`.
#[derive(Parser)]
#[command(name = "coupon-host", version)]
enum Command {
    /// Serves the app of a spin.toml on wasmtime, like `spin up`.
    ///
    /// Variables come from SPIN_VARIABLE_<NAME> environment variables, as on Spin.
    Up(Up),
}

/// The `up` command's options; each may also come from the environment
/// variable it names.
#[derive(clap::Args)]
struct Up {
    /// Address to listen on.
    #[arg(
        long,
        value_name = "ADDR",
        env = "COUPON_HOST_LISTEN",
        default_value = "127.0.0.1:3000"
    )]
    listen: SocketAddr,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address too
    /// (an operations port, apart from the app's routes).
    #[arg(long, value_name = "ADDR", env = "COUPON_HOST_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// The app's spin.toml, or its directory.
    #[arg(
        short = 'f',
        long = "from",
        value_name = "FILE|DIR",
        default_value = "spin.toml"
    )]
    manifest: PathBuf,
    /// Spin runtime config: [key_value_store.<label>] type = "spin" | "redis".
    #[arg(
        long = "runtime-config-file",
        value_name = "FILE",
        env = "COUPON_HOST_RUNTIME_CONFIG_FILE"
    )]
    runtime_config: Option<PathBuf>,
    /// Where the default SQLite store lives [default: .spin beside spin.toml].
    #[arg(long, value_name = "DIR", env = "COUPON_HOST_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// spin: every store behaves as Spin 4's store of its kind, unsafe parts
    /// included (Redis get-many is KEYS, lost compare-and-swaps succeed, ...):
    /// a test fixture, never for production.
    #[arg(long, value_enum, default_value = "host")]
    store_fidelity: Fidelity,
    /// Run on a Redis that does not fsync every write before answering
    /// (without appendonly yes and appendfsync always, a restart loses
    /// acknowledged claims and redemptions): benchmarks, throwaway data.
    #[arg(long)]
    allow_volatile_store: bool,
    /// Run each component's build command first.
    #[arg(long)]
    build: bool,
    /// A fresh instance per request (default: reuse as Spin 4 does).
    #[arg(long)]
    no_instance_reuse: bool,
    /// Requests each component serves at once; as many again wait up to
    /// 250 ms, the rest get 503 overloaded.
    #[arg(
        long,
        value_name = "N",
        env = "COUPON_HOST_MAX_CONCURRENT_REQUESTS",
        default_value_t = coupon_host::DEFAULT_MAX_CONCURRENT_REQUESTS,
        value_parser = positive,
    )]
    max_concurrent_requests: usize,
    /// Give unset required secret variables random values, kept in
    /// <state-dir>/secrets.toml (for trying the app out, not production).
    #[arg(long)]
    generate_secrets: bool,
    /// Run the expiry sweep (POST /expirations with the admin_token variable,
    /// until next_cursor is null) at each fire time of CRON:
    /// [CRON_TZ=<zone> ][second ]minute hour day-of-month month day-of-week,
    /// with *, */n, a, a-b, a-b/n, a/n and lists; UTC unless CRON_TZ;
    /// e.g. "0 * * * * *" (every minute at second 0).
    #[arg(
        long,
        value_name = "CRON",
        env = "COUPON_HOST_SWEEP_SCHEDULE",
        value_parser = schedule
    )]
    sweep_schedule: Option<Schedule>,
}

/// `--store-fidelity`'s values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Fidelity {
    Host,
    Spin,
}

fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("not a positive number".into()),
    }
}

fn schedule(text: &str) -> Result<Schedule, String> {
    Schedule::parse(text).map_err(|e| format!("{e:#}"))
}

fn main() {
    let Command::Up(up) = Command::parse();
    // The log: a JSON line per event on stdout (the request log, the sweeps),
    // written by a thread of its own; what is buffered is written when
    // `_log` drops, after the server has stopped. Not lossy: when stdout
    // falls 128k lines behind, requests wait for it rather than vanish
    // from the log.
    let (writer, _log) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_target(false)
        .with_writer(writer)
        .init();
    if let Err(e) = run(up) {
        eprintln!("coupon-host: {e:#}");
        drop(_log);
        std::process::exit(1);
    }
}

fn run(mut up: Up) -> Result<()> {
    if up.manifest.is_dir() {
        up.manifest = up.manifest.join("spin.toml");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let manifest = coupon_host::Manifest::load(&up.manifest)?;
        let state_dir = up
            .state_dir
            .clone()
            .unwrap_or_else(|| manifest.dir.join(".spin"));
        // Like Spin, SPIN_VARIABLE_* for variables the app does not declare are ignored.
        let mut variables = spin_variables_from_env();
        variables.retain(|name, _| manifest.variables.contains_key(name));
        // The secrets this run made up, and nothing an operator set.
        let made_up = match up.generate_secrets {
            true => fill_secrets(&manifest, &state_dir, &mut variables)?,
            false => BTreeMap::new(),
        };
        let scheduled_sweep = match up.sweep_schedule {
            Some(schedule) => Some((schedule, sweeper::admin_token(&manifest, &variables)?)),
            None => None,
        };
        let stores = coupon_host::runtime_config::open_stores(
            up.runtime_config.as_deref(),
            &state_dir,
            &manifest.store_labels(),
            match up.store_fidelity {
                Fidelity::Host => StoreFidelity::Host,
                Fidelity::Spin => StoreFidelity::Spin,
            },
            match up.allow_volatile_store {
                true => Durability::VolatileAllowed,
                false => Durability::Required,
            },
        )
        .await?;
        let mut builder = App::builder(&up.manifest)
            .build_components(up.build)
            .instance_reuse(!up.no_instance_reuse)
            .max_concurrent_requests(up.max_concurrent_requests);
        for (name, value) in &variables {
            builder = builder.variable(name, value.clone());
        }
        let probed: probes::Stores = stores
            .stores
            .iter()
            .map(|(label, store)| (label.clone(), store.clone()))
            .collect();
        for (label, store) in stores.stores {
            builder = builder.shared_store(label, store);
        }
        if up.build {
            eprintln!("coupon-host: building the components (first time: a minute or two)...");
        }
        let app = builder.build().await?;
        let listener = serve::bind(up.listen).await?;
        let url = format!("http://{}", listener.local_addr()?);
        println!("Serving {url} ({})", stores.description);
        for trigger in &app.manifest().http_triggers {
            println!("  {:<24} -> {}", trigger.route, trigger.component);
        }
        let (stop_sweeps, sweeps_stopped) = watch::channel(false);
        if let Some(addr) = up.metrics_listen {
            let listener = serve::bind(addr).await?;
            println!(
                "  metrics, /healthz, /readyz: http://{}",
                listener.local_addr()?
            );
            let mut stopped = sweeps_stopped.clone();
            tokio::spawn(probes::serve(listener, probed, async move {
                let _ = stopped.changed().await;
            }));
        }
        let sweeper = scheduled_sweep.map(|(schedule, admin_token)| {
            let next = schedule.next_after(Timestamp::now());
            let next = next.map_or("never".to_owned(), |at| at.to_string());
            println!("  expiry sweep: POST /expirations on \"{schedule}\", next at {next}");
            tokio::spawn(sweeper::run(
                app.clone(),
                schedule,
                admin_token,
                sweeps_stopped,
            ))
        });
        // Only secrets this run made up for a trial are ever printed: an
        // operator's own admin token and signing secret never reach the log.
        if let Some(text) = example::text(&url, &made_up) {
            println!("{text}");
        }
        println!("Ctrl-C stops it; nothing acknowledged is lost.");
        let stop = async move {
            serve::stop_signal().await;
            let _ = stop_sweeps.send(true);
        };
        serve::serve(app, listener, stop).await?;
        if let Some(sweeper) = sweeper
            && tokio::time::timeout(sweeper::STOP_TIMEOUT, sweeper)
                .await
                .is_err()
        {
            eprintln!(
                "coupon-host: the expiry sweep is still running after {:?}; stopping anyway",
                sweeper::STOP_TIMEOUT
            );
        }
        eprintln!("coupon-host: stopped");
        Ok(())
    })
}

/// `SPIN_VARIABLE_<NAME>=value` as `name -> value`, as Spin reads them.
fn spin_variables_from_env() -> BTreeMap<String, String> {
    // Spin looks up exactly `SPIN_VARIABLE_` and the name in upper case
    // (`crates/variables-env/src/lib.rs`): `SPIN_VARIABLE_admin_token` is not it.
    std::env::vars()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("SPIN_VARIABLE_")?;
            (name == name.to_ascii_uppercase()).then(|| (name.to_ascii_lowercase(), v))
        })
        .collect()
}

/// Gives every required secret variable without a value a random one, kept in
/// `<state_dir>/secrets.toml` so restarts keep the same secrets.
/// Gives each required secret variable that is unset a random value, kept in
/// `{state_dir}/secrets.toml` across runs; returns those it filled in.
fn fill_secrets(
    manifest: &coupon_host::Manifest,
    state_dir: &Path,
    variables: &mut BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let file = state_dir.join("secrets.toml");
    let mut kept: BTreeMap<String, String> = match std::fs::read_to_string(&file) {
        Ok(text) => toml::from_str(&text)
            .with_context(|| format!("{} is not a table of strings", file.display()))?,
        Err(_) => BTreeMap::new(),
    };
    let mut changed = false;
    let mut made_up = BTreeMap::new();
    for (name, variable) in &manifest.variables {
        if !(variable.required && variable.secret) || variables.contains_key(name) {
            continue;
        }
        let value = match kept.get(name) {
            Some(value) => value.clone(),
            None => {
                changed = true;
                let value = random_hex(24)?;
                kept.insert(name.clone(), value.clone());
                value
            }
        };
        variables.insert(name.clone(), value.clone());
        made_up.insert(name.clone(), value);
    }
    if changed {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        std::fs::write(&file, toml::to_string(&kept)?)
            .with_context(|| format!("cannot write {}", file.display()))?;
        eprintln!(
            "coupon-host: generated secrets for {:?} in {}",
            kept.keys().collect::<Vec<_>>(),
            file.display()
        );
    }
    Ok(made_up)
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("cannot read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
