//! The command line: `serve`, `migrate`, `user add|list|disable|enable`, `audit verify`, `config check`,
//! `keys rotate`, `scan --all`, `backup DIR`, `restore DIR`, `plugins list|check FILE`.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::audit::{NewAuditEntry, Outcome};
use crate::auth::{password, users};
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "seccollab", version, about = "SecCollab: self-hosted secure collaboration")]
pub struct Cli {
    /// Configuration file (TOML). Without one the embedded defaults serve.
    #[arg(long, short, global = true, env = "SECCOLLAB_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server until SIGTERM.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Work with the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Manage the master key.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Make a consistent online backup (database, keys, objects) into a new folder.
    Backup {
        /// The folder to create (must not exist).
        dir: PathBuf,
    },
    /// Restore a backup into an empty installation (no database, keys or objects yet).
    Restore {
        /// A folder made by `seccollab backup`.
        dir: PathBuf,
    },
    /// Inspect plugin libraries.
    #[command(subcommand)]
    Plugins(PluginsCmd),
    /// Automatic security responses (break-glass).
    #[command(subcommand)]
    Security(SecurityCmd),
    /// Stored objects the database does not know.
    #[command(subcommand)]
    Storage(StorageCmd),
    /// Rescan stored files with the current YARA rules (e.g. after a rule change).
    Scan {
        /// Every file (the only mode for now).
        #[arg(long, required = true)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StorageCmd {
    /// List the objects the database knows no file for (in the store, and kept aside under
    /// `<data_dir>/orphans`) as JSON. Nothing is deleted.
    Orphans {
        /// Move the store's orphans aside (refused beyond `storage.orphan_max_share` of the
        /// store, or when the database knows no file, unless `--all`).
        #[arg(long)]
        move_aside: bool,
        /// With `--move-aside`: every orphan, however many.
        #[arg(long, requires = "move_aside")]
        all: bool,
        /// Put a moved-aside object back into the store (the right database is back).
        #[arg(long, conflicts_with = "move_aside")]
        put_back: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Create a user; the password is read from standard input.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        display_name: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (first line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Disable a user (by id or email): they can no longer sign in.
    Disable { user: String },
    /// Enable a disabled user, or reinstate one an automatic response suspended, and lift any
    /// re-verification demand on their sessions (the break-glass path).
    Enable { user: String },
}

#[derive(Debug, Subcommand)]
enum SecurityCmd {
    /// Lift address blocks at once (running servers follow within seconds): `--ip ADDRESS`
    /// or `--all`.
    Unblock {
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        ip: Option<std::net::IpAddr>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Check the hash chain and its anchor; exit 0 when intact, 1 when tampered.
    Verify,
    /// Anchor the current head now (forward along the chain only; refused when the log is
    /// behind or off its anchor). With `--reset`: anchor the current head whatever the last
    /// anchor said — after an investigated mismatch; audited.
    Anchor {
        #[arg(long)]
        reset: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Re-wrap every data key (and TOTP secret) under a new master key; resumable.
    Rotate,
}

#[derive(Debug, Subcommand)]
enum PluginsCmd {
    /// Load every configured plugin as `serve` would and show each one's state (JSON lines);
    /// exit 1 when any failed.
    List,
    /// Check one library without enabling it: permissions, entry point, ABI, kind, name,
    /// version and SHA-256 (for pinning). Exit 1 when it would be refused.
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Validate and print the effective configuration with secrets redacted.
    Check,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    crate::init_tracing(&cfg);
    match cli.command {
        Command::Serve => serve(cfg),
        Command::Migrate => match crate::db::Db::open(&cfg).and_then(|db| db.migrate()) {
            Ok(n) => {
                println!("{n} migration(s) applied");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Config(ConfigCmd::Check) => {
            // Existing key files are read with the server's own checks (mode, format); missing
            // ones are not created here.
            for name in [crate::keys::JWT_KEY_FILE, crate::keys::MASTER_KEY_FILE] {
                let p = cfg.keys_dir().join(name);
                if p.exists() {
                    if let Err(e) = crate::keys::read_key(&p) {
                        return fail(e);
                    }
                }
            }
            print!("{}", cfg.redacted_toml());
            eprintln!("configuration is valid");
            ExitCode::SUCCESS
        }
        Command::User(cmd) => user(cfg, cmd),
        Command::Audit(AuditCmd::Verify) => audit_verify(cfg),
        Command::Audit(AuditCmd::Anchor { reset }) => audit_anchor(cfg, reset),
        Command::Security(SecurityCmd::Unblock { ip, all: _ }) => unblock(cfg, ip),
        Command::Scan { all: _ } => scan_all(cfg),
        Command::Storage(StorageCmd::Orphans { move_aside, all, put_back }) => orphans(cfg, move_aside, all, put_back),
        Command::Plugins(PluginsCmd::List) => {
            let reg = crate::plugins::Registry::load(&cfg);
            let list = reg.list();
            for p in &list {
                println!("{}", serde_json::to_string(p).expect("json"));
            }
            if list.iter().any(|p| p.health == "failed") {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Plugins(PluginsCmd::Check { file }) => match crate::plugins::inspect(&file) {
            Ok((lib, sha)) => {
                let (major, minor) = lib.abi();
                println!(
                    "{}",
                    serde_json::json!({
                        "file": lib.path().display().to_string(), "name": lib.name(), "kind": lib.kind().as_str(),
                        "version": lib.version(), "abi_version": format!("{major}.{minor}"), "sha256": sha,
                    })
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Keys(KeysCmd::Rotate) => keys_rotate(cfg),
        Command::Backup { dir } => backup_restore(cfg, &dir, true),
        Command::Restore { dir } => backup_restore(cfg, &dir, false),
    }
}

fn serve(cfg: Config) -> ExitCode {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.server.workers > 0 {
        rt.worker_threads(cfg.server.workers);
    }
    let rt = match rt.enable_all().thread_name("seccollab").build() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    match rt.block_on(crate::serve(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn user(cfg: Config, cmd: UserCmd) -> ExitCode {
    let state = match crate::open_state(cfg) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let code = (|| -> Result<(), String> {
        let mut conn = state.db.get().map_err(|e| e.to_string())?;
        match cmd {
            UserCmd::Add { email, display_name, admin, password_stdin: _ } => {
                let mut input = String::new();
                if std::io::stdin().is_terminal() {
                    eprint!("password: ");
                }
                std::io::stdin().read_to_string(&mut input).map_err(|e| e.to_string())?;
                let pw = input.lines().next().unwrap_or("");
                password::check_policy(&state.policy.password, pw, &[&email, &display_name])
                    .map_err(|why| format!("password {why}"))?;
                let role = if admin { users::Role::Admin } else { users::Role::User };
                let u = users::create(&mut conn, &email, &display_name, Some(state.hasher.hash_blocking(pw)), role)
                    .map_err(|e| e.to_string())?;
                state
                    .audit
                    .append_blocking(
                        NewAuditEntry::new(crate::audit::AuditAction::UserCreate, Outcome::Success)
                            .target("user", u.id.clone())
                            .details(serde_json::json!({"via": "cli", "role": u.role})),
                    )
                    .map_err(|e| e.to_string())?;
                println!("{}", serde_json::to_string(&users::UserView::from(&u)).expect("json"));
            }
            UserCmd::List => {
                for u in users::list_all(&mut conn).map_err(|e| e.to_string())? {
                    println!("{}", serde_json::to_string(&users::UserView::from(&u)).expect("json"));
                }
            }
            UserCmd::Disable { user } => {
                let u = account_act(&state, |st, by| Box::pin(crate::auth::admin_acts::disable(st, by, &user)))?;
                println!("disabled {}", u.email);
            }
            UserCmd::Enable { user } => {
                let u = account_act(&state, |st, by| Box::pin(crate::auth::admin_acts::enable(st, by, &user)))?;
                println!("enabled {}", u.email);
            }
        }
        Ok(())
    })();
    state.events.shutdown_blocking();
    state.audit.shutdown_blocking();
    match code {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

type ActFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<users::User, crate::auth::admin_acts::ActError>> + 'a>>;

/// Runs one account act (`auth::admin_acts`, shared with the API and the console) as the
/// operator at the host.
fn account_act<'a>(
    state: &'a crate::AppState,
    act: impl FnOnce(&'a crate::AppState, &'a crate::auth::admin_acts::Actor) -> ActFuture<'a>,
) -> Result<users::User, String> {
    static CLI: std::sync::OnceLock<crate::auth::admin_acts::Actor> = std::sync::OnceLock::new();
    let by = CLI.get_or_init(crate::auth::admin_acts::Actor::cli);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(act(state, by)).map_err(|e| e.to_string())
}

fn unblock(cfg: Config, ip: Option<std::net::IpAddr>) -> ExitCode {
    let state = match crate::open_state(cfg) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let code = (|| -> Result<usize, String> {
        let mut conn = state.db.get().map_err(|e| e.to_string())?;
        let ip_s = ip.map(|i| i.to_string());
        let n = crate::security::responses::lift_all(&mut conn, ip_s.as_deref(), "cli").map_err(|e| e.to_string())?;
        state
            .audit
            .append_blocking(
                NewAuditEntry::new(crate::audit::AuditAction::SecurityIpUnblock, Outcome::Success)
                    .details(serde_json::json!({"via": "cli", "ip": ip_s, "lifted": n})),
            )
            .map_err(|e| e.to_string())?;
        Ok(n)
    })();
    state.events.shutdown_blocking();
    state.audit.shutdown_blocking();
    match code {
        Ok(n) => {
            println!("lifted {n} block(s)");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn orphans(cfg: Config, move_aside: bool, all: bool, put_back: Option<String>) -> ExitCode {
    use crate::files::orphans::{self, Sweep};
    let state = match crate::open_state_with_plugins(cfg) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let result = (|| -> Result<serde_json::Value, String> {
        if let Some(key) = put_back {
            let bytes = orphans::put_back(&state, &key)?;
            return Ok(serde_json::json!({"put_back": key, "bytes": bytes}));
        }
        if move_aside {
            let report = orphans::sweep(&state, if all { Sweep::All } else { Sweep::Cautious })?;
            if let Some(why) = &report.held {
                return Err(format!("{why} (add --all to move them anyway)"));
            }
            return serde_json::to_value(&report).map_err(|e| e.to_string());
        }
        let (in_store, objects, known) = orphans::find(&state)?;
        let aside = orphans::list_aside(&state.config.storage.data_dir)?;
        Ok(serde_json::json!({"objects": objects, "files_known": known, "in_store": in_store, "aside": aside}))
    })();
    state.events.shutdown_blocking();
    state.audit.shutdown_blocking();
    match result {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn audit_anchor(cfg: Config, reset: bool) -> ExitCode {
    let db = match crate::db::Db::open(&cfg).and_then(|db| db.migrate().map(|_| db)) {
        Ok(db) => db,
        Err(e) => return fail(e),
    };
    let keys = match crate::keys::Keys::load_or_create(&cfg.keys_dir()) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let dir = &cfg.storage.data_dir;
    if !reset {
        return match crate::audit::anchor::write(&db, &keys, dir) {
            Ok(seq) => {
                println!("{}", serde_json::json!({"anchored_seq": seq}));
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    let before = crate::audit::anchor::check(&db, &keys, dir).ok();
    // The reset is itself recorded first, so the new anchor covers its entry.
    let audit = crate::audit::AuditLog::start(db.clone(), cfg.audit.batch_max, cfg.audit.queue_capacity);
    let _ = audit.append_blocking(
        NewAuditEntry::new(crate::audit::AuditAction::AuditAnchorReset, Outcome::Success)
            .details(serde_json::json!({"via": "cli", "previous": before})),
    );
    audit.shutdown_blocking();
    match crate::audit::anchor::reset(&db, &keys, dir) {
        Ok(seq) => {
            println!("{}", serde_json::json!({"anchored_seq": seq, "reset": true}));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn audit_verify(cfg: Config) -> ExitCode {
    let db = match crate::db::Db::open(&cfg).and_then(|db| db.migrate().map(|_| db)) {
        Ok(db) => db,
        Err(e) => return fail(e),
    };
    let started = std::time::Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_shown = 0u64;
    let mut progress = |n: u64| {
        // Progress on long runs: every million entries, or live on a terminal.
        if tty || n - last_shown >= 1_000_000 {
            eprint!("{}checked {n} entries", if tty { "\r" } else { "" });
            if !tty {
                eprintln!();
            }
            last_shown = n;
        }
    };
    let keys = match crate::keys::Keys::load_or_create(&cfg.keys_dir()) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    match crate::audit::anchor::verify_all(&db, &keys, &cfg.storage.data_dir, &mut progress) {
        Ok(report) => {
            if tty {
                eprintln!();
            }
            let secs = started.elapsed().as_secs_f64();
            eprintln!("verified {} entries in {secs:.3} s", report.checked);
            println!("{}", serde_json::to_string(&report).expect("json"));
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(e),
    }
}

fn scan_all(cfg: Config) -> ExitCode {
    let state = match crate::open_state_with_plugins(cfg) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let ids: Vec<String> = match state.db.get().map_err(|e| e.to_string()).and_then(|mut c| {
        use crate::db::schema::files::dsl as f;
        use diesel::prelude::*;
        f::files.order(f::id.asc()).select(f::id).load(&mut *c).map_err(|e| e.to_string())
    }) {
        Ok(ids) => ids,
        Err(e) => return fail(e),
    };
    let total = ids.len();
    let (mut infected, mut errors) = (0usize, 0usize);
    let started = std::time::Instant::now();
    for (i, id) in ids.iter().enumerate() {
        match crate::security::scan::scan_file(&state, id, None) {
            Ok(v) if v.status == "infected" => {
                infected += 1;
                let rules: Vec<String> = v.matches.iter().map(|m| format!("{}.{}", m.namespace, m.rule)).collect();
                eprintln!("{id}: quarantined ({})", rules.join(", "));
            }
            Ok(v) if v.status == "error" => {
                errors += 1;
                eprintln!("{id}: could not be scanned: {}", v.error.unwrap_or_default());
            }
            Ok(_) => {}
            Err(e) => {
                errors += 1;
                eprintln!("{id}: {e}");
            }
        }
        if (i + 1) % 100 == 0 || i + 1 == total {
            eprintln!(
                "scanned {}/{total} files ({infected} quarantined, {errors} errors, {:.1} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    state.events.shutdown_blocking();
    state.audit.shutdown_blocking();
    println!("{}", serde_json::json!({"scanned": total, "quarantined": infected, "errors": errors}));
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn keys_rotate(cfg: Config) -> ExitCode {
    let state = match crate::open_state(cfg) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut conn = match state.db.get() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let started = std::time::Instant::now();
    let result = crate::rotation::rotate(&mut conn, &state.keys, &mut |done, total| {
        eprintln!("re-wrapped {done}/{total} data keys ({:.1} s)", started.elapsed().as_secs_f64());
    });
    let code = match result {
        Ok(r) => {
            let _ = state.audit.append_blocking(
                NewAuditEntry::new(crate::audit::AuditAction::KeysRotate, Outcome::Success)
                    .details(serde_json::json!({"old_key_id": state.keys.master_id, "new_key_id": r.new_key_id, "files": r.files, "totp_secrets": r.totp_secrets})),
            );
            println!(
                "{}",
                serde_json::json!({"new_key_id": r.new_key_id, "files": r.files, "totp_secrets": r.totp_secrets})
            );
            eprintln!("master key rotated; restart the server so new uploads use it");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = state.audit.append_blocking(
                NewAuditEntry::new(crate::audit::AuditAction::KeysRotate, Outcome::Error)
                    .details(serde_json::json!({"error": e})),
            );
            fail(format!("{e} (run the command again to resume)"))
        }
    };
    state.events.shutdown_blocking();
    state.audit.shutdown_blocking();
    code
}

fn backup_restore(cfg: Config, dir: &std::path::Path, backup: bool) -> ExitCode {
    let result = if backup { crate::backup::backup(&cfg, dir) } else { crate::backup::restore(&cfg, dir) };
    let action = if backup { "system.backup" } else { "system.restore" };
    let summary = match result {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // Recorded in the audit log of the installation (for a restore: the restored one).
    if let Ok(db) = crate::db::Db::open(&cfg) {
        let audit = crate::audit::AuditLog::start(db.clone(), cfg.audit.batch_max, cfg.audit.queue_capacity);
        let _ = audit.append_blocking(NewAuditEntry::new(action, Outcome::Success).details(serde_json::json!({
            "dir": summary.dir, "objects": summary.objects, "bytes": summary.bytes, "missing": summary.missing,
        })));
        audit.shutdown_blocking();
        // A restore is the operator's deliberate step back: the restored log is anchored anew.
        if !backup {
            let anchored = crate::keys::Keys::load_or_create(&cfg.keys_dir())
                .map_err(|e| e.to_string())
                .and_then(|keys| crate::audit::anchor::reset(&db, &keys, &cfg.storage.data_dir));
            if let Err(e) = anchored {
                eprintln!("warning: the restored audit log was not anchored: {e}");
            }
        }
    }
    if summary.missing > 0 {
        eprintln!("warning: {} objects were deleted while the backup ran; their files are gone", summary.missing);
    }
    println!("{}", serde_json::to_string(&summary).expect("summary serialises"));
    ExitCode::SUCCESS
}
