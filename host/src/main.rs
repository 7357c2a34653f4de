//! `coupon-host up`: serves a Spin app like `spin up`, on wasmtime, with the
//! key-value stores of a Spin runtime config (SQLite under `--state-dir` by default),
//! and, with `--sweep-schedule`, runs the expiry sweep on a cron schedule.

mod example;
mod sweeper;

use anyhow::{Context, Result, bail};
use coupon_core::Timestamp;
use coupon_host::kv::StoreFidelity;
use coupon_host::runtime_config::Durability;
use coupon_host::{App, Schedule, serve};
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

const USAGE: &str = "\
usage: coupon-host up [options]

Serves the app of a spin.toml on wasmtime, like `spin up`.

options:
  --listen <ADDR>               address to listen on [default: 127.0.0.1:3000]
  -f, --from <FILE|DIR>         the app's spin.toml (or its directory) [default: spin.toml]
  --runtime-config-file <FILE>  Spin runtime config: [key_value_store.<label>] type = \"spin\" | \"redis\"
  --state-dir <DIR>             where the default SQLite store lives [default: .spin beside spin.toml]
  --store-fidelity <host|spin>  spin: every store behaves as Spin 4's store of its kind, unsafe
                                parts included (Redis get-many is KEYS, lost compare-and-swaps
                                succeed, ...): a test fixture, never for production [default: host]
  --allow-volatile-store        run on a Redis that does not fsync every write before answering
                                (without appendonly yes and appendfsync always, a restart loses
                                acknowledged claims and redemptions): benchmarks, throwaway data
  --build                       run each component's build command first
  --no-instance-reuse           a fresh instance per request (default: reuse as Spin 4 does)
  --max-concurrent-requests <N> requests each component serves at once; as many again wait up
                                to 250 ms, the rest get 503 overloaded [default: 32]
  --generate-secrets            give unset required secret variables random values, kept in
                                <state-dir>/secrets.toml (for trying the app out, not production)
  --sweep-schedule <CRON>       run the expiry sweep (POST /expirations with the admin_token
                                variable, until next_cursor is null) at each fire time of CRON:
                                [CRON_TZ=<zone> ][second ]minute hour day-of-month month day-of-week
                                with *, */n, a, a-b, a-b/n, a/n and lists; UTC unless CRON_TZ;
                                e.g. \"0 * * * * *\" (every minute at second 0)

Variables come from SPIN_VARIABLE_<NAME> environment variables.";

/// The `up` command's options.
struct Up {
    listen: SocketAddr,
    manifest: PathBuf,
    runtime_config: Option<PathBuf>,
    /// `None`: `.spin` beside the manifest, as Spin does.
    state_dir: Option<PathBuf>,
    store_fidelity: StoreFidelity,
    durability: Durability,
    build: bool,
    instance_reuse: bool,
    max_concurrent_requests: usize,
    generate_secrets: bool,
    sweep_schedule: Option<Schedule>,
}

impl Up {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Up> {
        let mut up = Up {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            manifest: PathBuf::from("spin.toml"),
            runtime_config: None,
            state_dir: None,
            store_fidelity: StoreFidelity::Host,
            durability: Durability::Required,
            build: false,
            instance_reuse: true,
            max_concurrent_requests: coupon_host::DEFAULT_MAX_CONCURRENT_REQUESTS,
            generate_secrets: false,
            sweep_schedule: None,
        };
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .with_context(|| format!("{name} needs a value\n\n{USAGE}"))
            };
            match arg.as_str() {
                "--listen" => {
                    let v = value("--listen")?;
                    up.listen = v.parse().with_context(|| {
                        format!("--listen {v:?} is not an address like 127.0.0.1:3000")
                    })?;
                }
                "-f" | "--from" => up.manifest = PathBuf::from(value("--from")?),
                "--runtime-config-file" => {
                    up.runtime_config = Some(PathBuf::from(value("--runtime-config-file")?))
                }
                "--state-dir" => up.state_dir = Some(PathBuf::from(value("--state-dir")?)),
                "--store-fidelity" => {
                    let v = value("--store-fidelity")?;
                    up.store_fidelity = StoreFidelity::parse(&v)
                        .with_context(|| format!("--store-fidelity {v:?} is not host or spin"))?;
                }
                "--allow-volatile-store" => up.durability = Durability::VolatileAllowed,
                "--build" => up.build = true,
                "--no-instance-reuse" => up.instance_reuse = false,
                "--max-concurrent-requests" => {
                    let v = value("--max-concurrent-requests")?;
                    up.max_concurrent_requests =
                        v.parse().ok().filter(|n| *n > 0).with_context(|| {
                            format!("--max-concurrent-requests {v:?} is not a positive number")
                        })?;
                }
                "--generate-secrets" => up.generate_secrets = true,
                "--sweep-schedule" => {
                    let v = value("--sweep-schedule")?;
                    let schedule = Schedule::parse(&v)
                        .with_context(|| format!("--sweep-schedule {v:?} is not a schedule"))?;
                    up.sweep_schedule = Some(schedule);
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown option {other:?}\n\n{USAGE}"),
            }
        }
        if up.manifest.is_dir() {
            up.manifest = up.manifest.join("spin.toml");
        }
        Ok(up)
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("up") => Up::parse(args).and_then(run),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}\n\n{USAGE}")),
    };
    if let Err(e) = result {
        eprintln!("coupon-host: {e:#}");
        std::process::exit(1);
    }
}

fn run(up: Up) -> Result<()> {
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
        if up.generate_secrets {
            fill_secrets(&manifest, &state_dir, &mut variables)?;
        }
        let scheduled_sweep = match up.sweep_schedule {
            Some(schedule) => Some((schedule, sweeper::admin_token(&manifest, &variables)?)),
            None => None,
        };
        let stores = coupon_host::runtime_config::open_stores(
            up.runtime_config.as_deref(),
            &state_dir,
            &manifest.store_labels(),
            up.store_fidelity,
            up.durability,
        )
        .await?;
        let mut builder = App::builder(&up.manifest)
            .build_components(up.build)
            .instance_reuse(up.instance_reuse)
            .max_concurrent_requests(up.max_concurrent_requests);
        for (name, value) in &variables {
            builder = builder.variable(name, value.clone());
        }
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
        if up.generate_secrets
            && let Some(text) = example::text(&url, &variables)
        {
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
fn fill_secrets(
    manifest: &coupon_host::Manifest,
    state_dir: &Path,
    variables: &mut BTreeMap<String, String>,
) -> Result<()> {
    let file = state_dir.join("secrets.toml");
    let mut kept: BTreeMap<String, String> = match std::fs::read_to_string(&file) {
        Ok(text) => toml::from_str(&text)
            .with_context(|| format!("{} is not a table of strings", file.display()))?,
        Err(_) => BTreeMap::new(),
    };
    let mut changed = false;
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
        variables.insert(name.clone(), value);
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
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("cannot read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
