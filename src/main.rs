//! The `registry-edge` command: parses the CLI and hands over to the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use registry_edge::config::LogFormat;
use registry_edge::{certgen, server};

// Per-request buffers churn the allocator; mimalloc's per-thread free lists cost less
// than glibc malloc here (benches/compare_nginx.py, scenario 4).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "registry-edge",
    version,
    about = "Edge gateway for container registries (TLS, redirects, forwarded headers, streaming uploads)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        #[arg(long, short, default_value = "conf/registry-edge.yaml")]
        config: PathBuf,
    },
    /// Validate the configuration and every file it names, like `nginx -t`.
    Check {
        #[arg(long, short, default_value = "conf/registry-edge.yaml")]
        config: PathBuf,
    },
    /// Make a running gateway re-read its configuration (sends SIGHUP to the pid in the file).
    Reload {
        /// The file named by `server.pid_file`.
        #[arg(long)]
        pid_file: PathBuf,
    },
    /// Print the `auth:` block for the registry's config.yml (realm, service, issuer, rootcertbundle).
    RegistryConfig {
        #[arg(long, short, default_value = "conf/registry-edge.yaml")]
        config: PathBuf,
        /// The block for this route's pool (`routes[].name`) instead of the upstream pool's.
        #[arg(long)]
        route: Option<String>,
    },
    /// Read a password on stdin and print an htpasswd line with its bcrypt hash.
    HashPassword {
        /// The user name for the htpasswd line.
        #[arg(long)]
        user: String,
        /// bcrypt cost (4-17, as `htpasswd -B -C`; what `check` accepts).
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
    /// The cache of pulls (`cache:` in the configuration).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Storage usage per namespace (`policy:` in the configuration).
    Usage {
        #[command(subcommand)]
        action: UsageAction,
    },
    /// Access tokens for machines (`auth.access_tokens`): create, list, revoke.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Print the configuration reference (docs/configuration.md): every key with its type,
    /// default, whether it is required and whether a reload applies it.
    ConfigReference,
    /// Write a self-signed TLS certificate and a token-signing key pair for development.
    GenCerts {
        #[arg(long)]
        dir: PathBuf,
        /// DNS name for the TLS certificate (repeatable); 127.0.0.1 and ::1 are always added.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// UID[:GID] to own the files (the container image runs as 65532); needs root.
        #[arg(long)]
        owner: Option<String>,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Delete cached entries: all, or one digest. A running edge asks the registry for a
    /// purged entry on its next pull.
    Purge {
        #[arg(long, short, default_value = "conf/registry-edge.yaml")]
        config: PathBuf,
        /// Only this entry (`sha256:<hex>`).
        #[arg(long)]
        digest: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token and print its secret (once) and id.
    Create {
        #[arg(long, short, default_value = "conf/registry-edge.yaml")]
        config: PathBuf,
        /// The login name (`docker login -u NAME -p SECRET`, personal tokens too); must not
        /// be a user's name.
        #[arg(long)]
        name: String,
        /// `REPOSITORY-GLOB:ACTIONS`, e.g. 'team/app/**:pull,push' (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// 30s, 15m, 12h, 90d, or never.
        #[arg(long, default_value = "90d")]
        expires: String,
        /// A personal token acting as this user (else a robot, its own account).
        #[arg(long)]
        for_account: Option<String>,
        /// Networks logins must come from (CIDR or address; repeatable).
        #[arg(long)]
        from: Vec<String>,
        /// Free text, shown by `token list --json`.
        #[arg(long)]
        description: Option<String>,
    },
    /// List every token (never their secrets).
    List {
        #[arg(long, short, default_value = "conf/registry-edge.yaml")]
        config: PathBuf,
        /// A JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id or name: its next login and refresh are refused.
    Revoke {
        #[arg(long, short, default_value = "conf/registry-edge.yaml")]
        config: PathBuf,
        /// The token's id or name.
        token: String,
    },
}

#[derive(Subcommand)]
enum UsageAction {
    /// Rebuild usage from what the registry's API lists (catalog, tags, manifests).
    Scan {
        #[arg(long, short, default_value = "conf/registry-edge.yaml")]
        config: PathBuf,
    },
    /// Print usage against quota, per namespace.
    Show {
        #[arg(long, short, default_value = "conf/registry-edge.yaml")]
        config: PathBuf,
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { config } => run(&config),
        Command::Check { config } => match registry_edge::load::load_all(&config) {
            Ok(_) => {
                println!("{}: configuration is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail_on(&e),
        },
        Command::Reload { pid_file } => match signal_reload(&pid_file) {
            Ok(pid) => {
                println!("sent SIGHUP to {pid}; the gateway logs whether the new configuration was applied");
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("{}: {e}", pid_file.display())),
        },
        Command::RegistryConfig { config, route } => registry_config(&config, route.as_deref()),
        Command::Cache {
            action: CacheAction::Purge { config, digest },
        } => cache_purge(&config, digest.as_deref()),
        Command::Usage { action } => usage(action),
        Command::Token { action } => token(action),
        Command::HashPassword { user, cost } => hash_password(&user, cost),
        Command::ConfigReference => {
            print!("{}", registry_edge::config::reference::markdown());
            ExitCode::SUCCESS
        }
        Command::GenCerts { dir, hosts, owner } => gen_certs(&dir, &hosts, owner.as_deref()),
    }
}

/// `run`: load everything, write the pid file once the listeners are bound, serve until
/// SIGTERM has drained the requests in flight.
fn run(config: &Path) -> ExitCode {
    let loaded = match registry_edge::load::load_all(config) {
        Ok(loaded) => loaded,
        Err(e) => return fail_on(&e),
    };
    let _log_writer = init_logging(loaded.config.log_format);
    let pid_file = loaded.config.server.pid_file.clone();
    let (server, drain) = match server::build(loaded) {
        Ok(built) => built,
        Err(e) => return fail_on(&e),
    };
    if let Some(path) = &pid_file {
        if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
            return fail(format!(
                "{}: cannot write the pid file: {e}",
                path.display()
            ));
        }
    }
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(registry_edge::drain::SignalWatch(drain)),
    });
    ExitCode::SUCCESS
}

/// `registry-config`: the registry's `auth:` block for the edge's realm.
fn registry_config(config: &Path, route: Option<&str>) -> ExitCode {
    let loaded = match registry_edge::config::load_offline(config) {
        Ok(loaded) => loaded,
        Err(e) => return fail_on(&e),
    };
    if let Some(route) = route {
        return match registry_edge::registry_config::route_auth_block(&loaded, route) {
            Ok(block) => {
                print!("{block}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("{}: {e}", config.display())),
        };
    }
    match registry_edge::registry_config::auth_block(&loaded) {
        Some(block) => {
            print!("{block}");
            ExitCode::SUCCESS
        }
        None => fail(format!(
            "{}: no auth section: the edge issues no tokens",
            config.display()
        )),
    }
}

/// `cache purge`: every entry, or the one of `digest`.
fn cache_purge(config: &Path, digest: Option<&str>) -> ExitCode {
    let settings = match registry_edge::config::load_offline(config) {
        Ok(loaded) => match loaded.cache {
            Some(settings) => settings,
            None => return fail(format!("{}: no cache section", config.display())),
        },
        Err(e) => return fail_on(&e),
    };
    match registry_edge::cache::purge(&settings, digest) {
        Ok(purged) => {
            println!(
                "purged {} entries ({} bytes) from {}",
                purged.entries,
                purged.bytes,
                settings.dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail_on(&e),
    }
}

/// `hash-password`: an htpasswd line for `user` with the password read on stdin.
fn hash_password(user: &str, cost: u32) -> ExitCode {
    // Refused before the password is read: a cost `check` refuses is never useful.
    if let Err(problem) = registry_edge::auth::users::htpasswd::check_cost(cost) {
        return fail(problem);
    }
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut password) {
        return fail(format!("cannot read the password from stdin: {e}"));
    }
    let password = password.trim_end_matches(['\r', '\n']);
    match registry_edge::registry_config::htpasswd_line(user, password, cost) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => fail_on(&e),
    }
}

/// `gen-certs`: development TLS and token-signing material, optionally given to `owner`.
fn gen_certs(dir: &Path, hosts: &[String], owner: Option<&str>) -> ExitCode {
    let owner = match owner.map(certgen::parse_owner).transpose() {
        Ok(owner) => owner,
        Err(e) => return fail_on(&e),
    };
    if let Err(e) = owner.map_or(Ok(()), certgen::may_give_to) {
        return fail_on(&e);
    }
    let generated = certgen::generate(dir, hosts).and_then(|paths| {
        owner.map_or(Ok(()), |owner| certgen::give_to(&paths, owner))?;
        Ok(paths)
    });
    match generated {
        Ok(paths) => {
            for path in paths {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail_on(&e),
    }
}

fn signal_reload(pid_file: &Path) -> Result<i32, String> {
    let text = std::fs::read_to_string(pid_file).map_err(|e| format!("cannot read: {e}"))?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{:?} is not a process id", text.trim()))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|e| format!("cannot signal process {pid}: {e}"))?;
    Ok(pid)
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("registry-edge: {e}");
    ExitCode::from(1)
}

/// [`fail`] with the error's whole chain of causes ([`registry_edge::report::chain`]).
fn fail_on(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    fail(registry_edge::report::chain(e))
}

/// Log lines go to standard output through [`registry_edge::log_writer`]: access lines are
/// buffered per worker thread and written by size or every `REGISTRY_EDGE_LOG_FLUSH`
/// (default 1s, `0s` = every line at once), everything else at once; the guard writes
/// what is buffered when `run` returns.
fn init_logging(format: LogFormat) -> registry_edge::log_writer::FlushGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REGISTRY_EDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let interval = match std::env::var("REGISTRY_EDGE_LOG_FLUSH") {
        Err(_) => std::time::Duration::from_secs(1),
        Ok(text) => humantime::parse_duration(&text).unwrap_or_else(|e| {
            eprintln!("registry-edge: REGISTRY_EDGE_LOG_FLUSH={text:?} ({e}); using 1s");
            std::time::Duration::from_secs(1)
        }),
    };
    let (writer, guard) = registry_edge::log_writer::LogWriter::start(interval);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(writer);
    // Installed by hand rather than `init()`: Pingora's `log` records go through
    // `log_bridge` (client faults as WARN), not tracing-log's own bridge.
    let installed = match format {
        LogFormat::Text => install(builder.with_ansi(ansi).finish()),
        LogFormat::Json => install(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .finish(),
        ),
    };
    if let Err(e) = installed {
        eprintln!("registry-edge: cannot set up logging: {e}");
    }
    guard
}

/// Makes `subscriber` the global one and routes the `log` crate's records to it.
fn install<S>(subscriber: S) -> Result<(), String>
where
    S: tracing::Subscriber + Send + Sync + 'static,
{
    let max = subscriber.max_level_hint();
    tracing::subscriber::set_global_default(subscriber).map_err(|e| e.to_string())?;
    registry_edge::log_bridge::PingoraLog::install(max).map_err(|e| e.to_string())
}

fn usage(action: UsageAction) -> ExitCode {
    match action {
        UsageAction::Scan { config } => {
            let loaded = match registry_edge::load::load_all(&config) {
                Ok(loaded) => loaded,
                Err(e) => return fail_on(&e),
            };
            match registry_edge::policy::scan::run(&loaded) {
                Ok(scanned) => {
                    println!(
                        "scanned {} repositories, {} manifests",
                        scanned.repositories, scanned.manifests
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail_on(&e),
            }
        }
        UsageAction::Show { config, namespace } => {
            let loaded = match registry_edge::config::load_offline(&config) {
                Ok(loaded) => loaded,
                Err(e) => return fail_on(&e),
            };
            match registry_edge::policy::scan::report(&loaded, namespace.as_deref()) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail_on(&e),
            }
        }
    }
}

fn token(action: TokenAction) -> ExitCode {
    use registry_edge::token_command as cli;
    let config = match &action {
        TokenAction::Create { config, .. }
        | TokenAction::List { config, .. }
        | TokenAction::Revoke { config, .. } => config.clone(),
    };
    let loaded = match registry_edge::load::load_all(&config) {
        Ok(loaded) => loaded,
        Err(e) => return fail_on(&e),
    };
    let done = match action {
        TokenAction::Create {
            name,
            scopes,
            expires,
            for_account,
            from,
            description,
            ..
        } => {
            let new = cli::NewToken {
                name,
                scopes,
                expires: Some(expires),
                for_account,
                from,
                description,
            };
            cli::create(&loaded, new, std::time::SystemTime::now()).map(|created| {
                let view = created.record.view();
                println!("id: {}", view.id);
                println!("name: {}", view.name);
                println!("account: {}", view.account);
                println!("expires: {}", view.expires.as_deref().unwrap_or("never"));
                println!("secret: {}", created.secret);
                eprintln!("The secret is shown only now: log in with the name and the secret.");
            })
        }
        TokenAction::List { json, .. } => cli::list(&loaded).map(|views| match json {
            true => println!(
                "{}",
                serde_json::to_string_pretty(&views).unwrap_or_default()
            ),
            false => print!("{}", cli::table(&views)),
        }),
        TokenAction::Revoke { token, .. } => {
            cli::revoke(&loaded, &token).map(|name| println!("revoked access token {name}"))
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail_on(&e),
    }
}
