//! The `sigil` command: serve | account | backup | restore | client | frame | decode.

mod config_file;
mod hangup;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use futures_util::StreamExt;
use sigil_client::terminal::seen;
use sigil_client::{tools, Credentials};
use sigil_core::config as defaults;
use sigil_core::Limits;
use sigil_proto::wire::FrameCodec;
use sigil_server::store::backup::{self, BackupReport};
use sigil_server::store::{Store, StoredAccount};
use sigil_server::{self as server, Config};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// A relay server for a small, strict, signed chat protocol over raw TCP.
#[derive(Parser)]
#[command(name = "sigil", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay server.
    Serve(Box<ServeArgs>),
    /// Manage accounts (works while a server runs on the same database).
    #[command(subcommand)]
    Account(AccountCmd),
    /// Copy the database to OUT while a server runs on it, and check the copy.
    Backup {
        /// SQLite database file to copy (must exist).
        #[arg(long, default_value = "sigil.db")]
        db: PathBuf,
        /// The copy to write.
        out: PathBuf,
        /// Overwrite OUT if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Replace the database with a checked backup (stop the server first).
    Restore {
        /// SQLite database file to replace.
        #[arg(long)]
        db: PathBuf,
        /// The backup to put in its place.
        backup: PathBuf,
        /// Do not keep the replaced database as PATH.before-restore-<unix time>.
        #[arg(long)]
        no_keep: bool,
    },
    /// Interactive terminal client.
    Client {
        #[command(flatten)]
        login: Login,
        /// One line per event, lines read from standard input (the default when standard input or output is not a terminal).
        #[arg(long)]
        plain: bool,
        /// Where to remember the last message seen per channel [default: the --cred file's path with .seen appended].
        #[arg(long, conflicts_with = "no_state")]
        state: Option<PathBuf>,
        /// Remember nothing between runs: all history is shown as new.
        #[arg(long)]
        no_state: bool,
    },
    /// Connect four over sigil: the referee bot, a player, a game's replay (spec/GAME.md).
    #[command(subcommand)]
    Game(GameCmd),
    /// Write one frame to stdout (signed and with nonce/timestamp when --cred is given).
    Frame {
        /// Credentials file; without it the frame is unsigned.
        #[arg(long)]
        cred: Option<PathBuf>,
        /// Command name, e.g. CNN, LST_USR, PV_MSG.
        command: String,
        /// Payload as a JSON object, e.g. '{"to": "01H..."}'.
        json: Option<String>,
    },
    /// Read frames from stdin and print one JSON object per frame.
    Decode {
        /// Credentials file to check the server's tags with.
        #[arg(long)]
        cred: Option<PathBuf>,
        /// Largest payload accepted.
        #[arg(long, default_value_t = 4 * sigil_proto::wire::codec::DEFAULT_MAX_PAYLOAD)]
        max_payload: usize,
    },
    /// Load generator: sigil and peers side by side (see bench/README.md).
    Bench(sigil_bench::BenchArgs),
}

/// `sigil game`: connect four, refereed by a bot account.
#[derive(Subcommand)]
enum GameCmd {
    /// Run the referee bot as an ordinary account: players send it private messages.
    Serve {
        /// The bot's own account.
        #[command(flatten)]
        login: Login,
        /// Games at once; a join beyond gets "game is full". Each game has a channel the bot is a member of: keep this below the server's --max-channels-per-account.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        max_games: u64,
        /// Seconds a player may be offline during a game before forfeiting.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        grace_s: u64,
    },
    /// Play: full screen on a terminal (arrow keys, Enter, r, q), else one line per event.
    Play {
        #[command(flatten)]
        login: Login,
        /// The bot's account name.
        #[arg(long, default_value = "connect4")]
        bot: String,
        /// One line per event, commands from stdin (join, ready, left, right, drop [N], leave, state, quit).
        #[arg(long)]
        plain: bool,
    },
    /// Print a game's boards move by move, from its channel's committed history
    /// (as any account: it joins the channel for the time it reads, if it must).
    Replay {
        #[command(flatten)]
        login: Login,
        /// The bot's account name: only its lines in the channel are the record.
        #[arg(long, default_value = "connect4")]
        bot: String,
        /// The game's channel, c4-GAME.
        channel: String,
    },
}

/// How `sigil serve` writes its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// A log level or filter (`info`, `debug`, `sigil_server=debug,info`, ...).
fn log_filter(s: &str) -> std::result::Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s).map(|_| s.to_owned()).map_err(|e| e.to_string())
}

#[derive(Args)]
struct ServeArgs {
    /// Read settings from this TOML file (keys are these flags' long names; flags given here win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration (command line > file > defaults) as TOML, then exit.
    #[arg(long)]
    print_config: bool,
    /// Address to listen on.
    #[arg(default_value = "127.0.0.1:7070")]
    addr: String,
    /// SQLite database file (created if missing).
    #[arg(long, default_value = "sigil.db")]
    db: PathBuf,
    /// Online members a channel needs to be healthy (the seed's rule is 3).
    #[arg(long, default_value_t = defaults::DEFAULT_MIN_ONLINE)]
    min_online: u64,
    /// Idle timeout: a session silent this long is closed (seconds).
    #[arg(long, default_value_t = defaults::DEFAULT_TIMEOUT_S, value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
    timeout_s: u64,
    /// Time allowed between TCP accept and CNN (seconds).
    #[arg(long, default_value_t = defaults::DEFAULT_CNN_TIMEOUT_S, value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
    cnn_timeout_s: u64,
    /// Accepted difference between a frame's timestamp and the server clock (seconds).
    #[arg(long, default_value_t = defaults::DEFAULT_SKEW_S, value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
    skew_s: u64,
    /// Largest accepted payload (bytes).
    #[arg(long, default_value_t = sigil_proto::wire::codec::DEFAULT_MAX_PAYLOAD, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(512..=16_777_216))]
    max_payload: usize,
    /// Lifetime of an unacknowledged message (seconds).
    #[arg(long, default_value_t = defaults::DEFAULT_PENDING_TTL_S, value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
    pending_ttl_s: u64,
    /// Nonces remembered per account within the skew window (memory bound).
    #[arg(long, default_value_t = defaults::DEFAULT_REPLAY_WINDOW, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    replay_window: usize,
    /// Delivered but unacknowledged private messages remembered, server-wide.
    #[arg(long, default_value_t = defaults::DEFAULT_MAX_UNACKED_PRIVATE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_unacked_private: usize,
    /// Frames queued per connection before it is dropped as a slow consumer.
    #[arg(long, default_value_t = server::DEFAULT_OUTBOUND_QUEUE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    outbound_queue: usize,
    /// Payload bytes queued per connection before it is dropped as a slow consumer.
    #[arg(long, default_value_t = server::DEFAULT_OUTBOUND_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    outbound_bytes: usize,
    /// Messages awaiting commit per channel.
    #[arg(long, default_value_t = defaults::DEFAULT_MAX_PENDING, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_pending: usize,
    /// Bytes of message content awaiting commit per channel.
    #[arg(long, default_value_t = defaults::DEFAULT_MAX_PENDING_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_pending_bytes: usize,
    /// Bytes of message content awaiting commit sent by one account, over all its channels.
    #[arg(long, default_value_t = defaults::DEFAULT_MAX_PENDING_BYTES_PER_ACCOUNT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_pending_bytes_per_account: usize,
    /// Bytes of message content awaiting commit on the whole server.
    #[arg(long, default_value_t = defaults::DEFAULT_MAX_PENDING_BYTES_TOTAL, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_pending_bytes_total: usize,
    /// List entries (LST_USR, CH_LST, CH_WHO) a session may ask for per second; four seconds' worth at once.
    #[arg(long, default_value_t = defaults::DEFAULT_LIST_ENTRIES_PER_S, value_parser = clap::value_parser!(u64).range(1..))]
    list_entries_per_s: u64,
    /// Sign-ins (CNN) per minute per account; a minute's worth at once.
    #[arg(long, default_value_t = defaults::DEFAULT_CNN_PER_MINUTE, value_parser = clap::value_parser!(u64).range(1..))]
    cnn_per_minute: u64,
    /// Merged messages awaiting confirmation per channel.
    #[arg(long, default_value_t = defaults::DEFAULT_MAX_MERGES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_merges: usize,
    /// Messages per CH_APPEND page (pages are also cut to fit max_payload).
    #[arg(long, default_value_t = defaults::DEFAULT_PULL_PAGE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    pull_page: usize,
    /// Channels on the server.
    #[arg(long, default_value_t = defaults::DEFAULT_MAX_CHANNELS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_channels: usize,
    /// Channels one account may be a member of.
    #[arg(long, default_value_t = defaults::DEFAULT_MAX_CHANNELS_PER_ACCOUNT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_channels_per_account: usize,
    /// Members per channel.
    #[arg(long, default_value_t = defaults::DEFAULT_MAX_MEMBERS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_members: usize,
    /// Open connections in total; more are refused with ERR rate_limited.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
    /// Open connections from one IP address.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS_PER_IP, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections_per_ip: usize,
    /// New connections per minute from one IP address (a minute's worth at once); more are refused with ERR rate_limited.
    #[arg(long, default_value_t = server::DEFAULT_CONNECTS_PER_IP_PER_MINUTE, value_parser = clap::value_parser!(u64).range(1..))]
    connects_per_ip_per_minute: u64,
    /// Frames per second a connection may send (sustained); more are dropped with ERR rate_limited.
    #[arg(long, default_value_t = server::DEFAULT_RATE, value_parser = positive)]
    rate: f64,
    /// Frames a connection may send at once; a connection this far over its rate is closed.
    #[arg(long, default_value_t = server::DEFAULT_BURST, value_parser = positive)]
    burst: f64,
    /// Seconds from a frame's first byte to its last (against slowloris).
    #[arg(long, default_value_t = server::DEFAULT_FRAME_TIMEOUT_S, value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
    frame_timeout_s: u64,
    /// Name announced in SINFO (at most 64 bytes).
    #[arg(long, default_value = "sigil", value_parser = server_name)]
    server_name: String,
    /// Address of the web listener (`none`: no web listener): the browser client at /, WebSocket sessions at /ws, /metrics (Prometheus text format) and /healthz.
    #[arg(long, default_value = server::DEFAULT_WEB_ADDR)]
    web: String,
    /// Run no web listener (the same as --web none).
    #[arg(long)]
    no_web: bool,
    /// An origin (scheme://host[:port]) whose pages may open WebSocket sessions besides the server's own page; repeatable; `*` allows any.
    #[arg(long = "web-origin", value_name = "ORIGIN", action = clap::ArgAction::Append, value_parser = web_origin)]
    web_origin: Vec<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (RUST_LOG, when set, wins at start); SIGHUP re-reads it from --config.
    #[arg(long, default_value = "info", value_parser = log_filter)]
    log_level: String,
    /// Lines logged per kind of repeatable event (connects, refusals, failed sign-ins, slow consumers, ...) per 10 s; the rest are counted in one summary line (0: log every line).
    #[arg(long, default_value_t = server::DEFAULT_LOG_REPEATS)]
    log_repeats: u32,
    /// Seconds a shutdown (SIGTERM, SIGINT) waits for sessions to flush their last frames.
    #[arg(long, default_value_t = server::DEFAULT_SHUTDOWN_GRACE_S, value_parser = clap::value_parser!(u64).range(0..=3600))]
    shutdown_grace_s: u64,
    /// PEM certificate chain (leaf first): also serve frames over TLS on --tls-listen. Re-read on SIGHUP.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert. Re-read on SIGHUP.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Address of the TLS listener.
    #[arg(long, default_value = server::DEFAULT_TLS_LISTEN, requires = "tls_cert")]
    tls_listen: String,
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Create an account and show its secret key once.
    Add {
        /// 1 to 32 of A-Z a-z 0-9 _ . - (unique, ignoring case).
        name: String,
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        secret: SecretOut,
    },
    /// List accounts (never their keys).
    List {
        #[command(flatten)]
        db: DbArg,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Remove an account; its live session is closed.
    Remove {
        /// Name or id.
        account: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Give an account a new key; its live session is closed.
    Rotate {
        /// Name or id.
        account: String,
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        secret: SecretOut,
    },
}

/// Where a client connects and as whom (`client`, `game`).
#[derive(Args)]
struct Login {
    /// Server address: HOST:PORT, or tls://HOST:PORT for TLS.
    addr: String,
    /// Credentials file written by `sigil account add`.
    #[arg(long)]
    cred: PathBuf,
    /// PEM file of the certificate authorities to trust for tls:// (instead of the public ones).
    #[arg(long)]
    ca: Option<PathBuf>,
}

impl Login {
    /// The address to connect to and the credentials, each checked.
    fn open(&self) -> Result<(sigil_client::Endpoint, Credentials)> {
        let cred = Credentials::load(&self.cred)?;
        Ok((sigil_client::Endpoint::parse(&self.addr, self.ca.as_deref())?, cred))
    }
}

/// The database an account command works on.
#[derive(Args)]
struct DbArg {
    /// SQLite database file (created if missing).
    #[arg(long, default_value = "sigil.db")]
    db: PathBuf,
}

/// How a new secret is shown.
#[derive(Args)]
struct SecretOut {
    /// Print {"id", "name", "key"} as JSON (writes no file unless --out is given).
    #[arg(long)]
    json: bool,
    /// Credentials file to write (default NAME.cred without --json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also print a sign-in link for the browser client at PAGE (the web listener's address); the key travels in the link's fragment, which browsers never send to a server.
    #[arg(long, value_name = "PAGE", num_args = 0..=1, default_missing_value = DEFAULT_PAGE, value_parser = page_url)]
    link: Option<String>,
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after; or `*`.
fn web_origin(s: &str) -> std::result::Result<String, String> {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    match rest {
        _ if s == "*" => Ok(s.to_owned()),
        Some(host) if !host.is_empty() && !host.contains(['/', '#', '?', ' ']) => Ok(s.to_owned()),
        _ => Err("use an origin as browsers send it: http://HOST[:PORT] or https://HOST[:PORT], \
                  without a path or a trailing slash (or * for any)"
            .to_owned()),
    }
}

/// Where the browser client is when the server runs with its defaults.
const DEFAULT_PAGE: &str = "http://127.0.0.1:7071/";

fn page_url(s: &str) -> std::result::Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://"))
        || s.contains('#')
        || s.contains(char::is_whitespace)
    {
        return Err("use the page's address, http://HOST:PORT/ or https://HOST:PORT/, without a #fragment".to_owned());
    }
    Ok(s.to_owned())
}

/// The sign-in link: `PAGE#cred=` and the credentials file's JSON object,
/// base64url without padding (spec §9.2).
fn sign_in_link(page: &str, cred: &Credentials) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cred.to_json());
    format!("{page}#cred={encoded}")
}

fn positive(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("use a positive number".to_owned()),
    }
}

fn server_name(s: &str) -> std::result::Result<String, String> {
    if s.is_empty() || s.len() > 64 {
        Err("use 1 to 64 bytes".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

fn main() -> ExitCode {
    let command = Cli::command();
    let argv = match config_file::expand(&command, std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("sigil: {e}");
            return ExitCode::FAILURE;
        }
    };
    let given: Vec<OsString> = std::env::args_os().collect();
    let matches = command.clone().get_matches_from(argv);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let mut effective = String::new();
    if let (Cmd::Serve(args), Some(serve), Some(serve_given)) =
        (&cli.command, command.find_subcommand("serve"), matches.subcommand_matches("serve"))
    {
        effective = config_file::render(serve, serve_given);
        if args.print_config {
            print!("{effective}");
            return ExitCode::SUCCESS;
        }
    }
    match run(cli, given, effective) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sigil: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run(cli: Cli, argv: Vec<OsString>, effective: String) -> Result<()> {
    match cli.command {
        Cmd::Serve(args) => serve(*args, argv, effective),
        Cmd::Account(cmd) => account(cmd),
        Cmd::Backup { db, out, force } => {
            let report = Store::open_existing(&db)?.backup_to(&out, force)?;
            println!("backed up {} to {}", db.display(), describe(&report));
            Ok(())
        }
        Cmd::Restore { db, backup, no_keep } => {
            let done = backup::restore(&backup, &db, !no_keep, server::now_unix())?;
            print!("restored {} from {}", db.display(), describe(&done.backup));
            match done.kept {
                Some(kept) => println!("; the old database is kept as {}", kept.display()),
                None => println!(),
            }
            Ok(())
        }
        Cmd::Client { login, plain, state, no_state } => {
            let (endpoint, cred) = login.open()?;
            let state = if no_state { None } else { Some(state.unwrap_or_else(|| seen::default_path(&login.cred))) };
            let options = sigil_client::terminal::Options { plain, state };
            let rt = runtime()?;
            let result = rt.block_on(sigil_client::terminal::run(&endpoint, &cred, options));
            // The input thread may be blocked on a read: do not wait for it.
            rt.shutdown_background();
            Ok(result?)
        }
        Cmd::Game(cmd) => game(cmd),
        Cmd::Frame { cred, command, json } => {
            let cred = cred.map(|p| Credentials::load(&p)).transpose()?;
            let bytes = tools::build_frame(cred.as_ref(), &command, json.as_deref(), server::now_unix())?;
            let mut out = std::io::stdout().lock();
            match out.write_all(&bytes).and_then(|()| out.flush()) {
                // Whoever reads is gone (`sigil frame … | nc` with nc missing): nothing to report.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                written => Ok(written?),
            }
        }
        Cmd::Decode { cred, max_payload } => {
            let cred = cred.map(|p| Credentials::load(&p)).transpose()?;
            runtime()?.block_on(decode(cred, max_payload))
        }
        Cmd::Bench(args) => Ok(sigil_bench::run(args)?),
    }
}

fn game(cmd: GameCmd) -> Result<()> {
    match cmd {
        GameCmd::Serve { login, max_games, grace_s } => {
            let _log = init_logs(LogFormat::Text, "info");
            let (endpoint, cred) = login.open()?;
            let rules = sigil_game::referee::Rules {
                max_games: usize::try_from(max_games).unwrap_or(usize::MAX),
                grace_ms: grace_s.saturating_mul(1000),
            };
            runtime()?.block_on(sigil_game::bot::serve(&endpoint, &cred, rules))?;
            Ok(())
        }
        GameCmd::Play { login, bot, plain } => {
            let (endpoint, cred) = login.open()?;
            let rt = runtime()?;
            let played = rt.block_on(sigil_game::play::play(&endpoint, &cred, &bot, plain));
            // A read of stdin may still block: do not wait for it.
            rt.shutdown_background();
            Ok(played?)
        }
        GameCmd::Replay { login, bot, channel } => {
            let (endpoint, cred) = login.open()?;
            let text = runtime()?.block_on(sigil_game::play::replay_channel(&endpoint, &cred, &bot, &channel))?;
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth reporting.
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            Ok(())
        }
    }
}

/// Starts the log: text or JSON lines on stderr, at `level` (or RUST_LOG);
/// returns the handle SIGHUP changes the level with.
fn init_logs(format: LogFormat, level: &str) -> reload::Handle<EnvFilter, Registry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).init(),
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
    }
    handle
}

/// What `sigil serve`'s settings mean for the server.
fn server_config(args: ServeArgs) -> Config {
    let mut config = Config::new(args.addr, args.db);
    config.limits = Limits {
        server_name: args.server_name,
        timeout_s: args.timeout_s,
        cnn_timeout_s: args.cnn_timeout_s,
        skew_s: args.skew_s,
        max_payload: args.max_payload,
        min_online: args.min_online,
        pending_ttl_s: args.pending_ttl_s,
        replay_window: args.replay_window,
        max_unacked_private: args.max_unacked_private,
        max_pending: args.max_pending,
        max_pending_bytes: args.max_pending_bytes,
        max_pending_bytes_per_account: args.max_pending_bytes_per_account,
        max_pending_bytes_total: args.max_pending_bytes_total,
        list_entries_per_s: args.list_entries_per_s,
        cnn_per_minute: args.cnn_per_minute,
        max_merges: args.max_merges,
        pull_page: args.pull_page,
        max_channels: args.max_channels,
        max_channels_per_account: args.max_channels_per_account,
        max_members: args.max_members,
    };
    config.max_connections = args.max_connections;
    config.max_connections_per_ip = args.max_connections_per_ip;
    config.connects_per_ip_per_minute = args.connects_per_ip_per_minute;
    config.rate = args.rate;
    config.burst = args.burst;
    config.frame_timeout_s = args.frame_timeout_s;
    config.outbound_queue = args.outbound_queue;
    config.outbound_bytes = args.outbound_bytes;
    config.web = (!args.no_web && !args.web.eq_ignore_ascii_case("none")).then_some(args.web);
    config.web_origins = args.web_origin;
    config.shutdown_grace = std::time::Duration::from_secs(args.shutdown_grace_s);
    config.log_repeats = args.log_repeats;
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(server::TlsConfig { listen: args.tls_listen, cert, key });
    }
    config
}

fn serve(args: ServeArgs, argv: Vec<OsString>, effective: String) -> Result<()> {
    let log = init_logs(args.log_format, &args.log_level);
    let config = server_config(args);
    // Each connection is a descriptor; a common soft limit of 1024 would make
    // accept fail long before --max-connections. Raise it toward the hard limit.
    let wanted = (config.max_connections as u64).saturating_mul(2).saturating_add(64);
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < config.max_connections as u64 => tracing::warn!(
            limit = got,
            max_connections = config.max_connections,
            "the open-files limit is below --max-connections; accept will fail before the limit"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    runtime()?.block_on(async {
        // Registered before the server listens: a signal that came between
        // listening and waiting for it would otherwise take its default
        // action (SIGHUP and SIGTERM end the process).
        let signals = Signals::register();
        let tls = config.tls.is_some();
        let db = config.db.clone();
        let running = server::start(config).await?;
        if let Some(web) = running.web_addr() {
            let scheme = if tls { "https" } else { "http" };
            tracing::info!(
                "chat in a browser at {scheme}://{web}/ with the sign-in link of `sigil account add NAME --db {} --link {scheme}://{web}/`",
                db.display()
            );
        }
        let hangup =
            hangup::Hangup { argv, effective, log, tls: running.tls_reloader(), limits: running.live_limits() };
        let Signals { stop, hup } = signals;
        running
            .run_until(async {
                tokio::select! { _ = stop => {}, _ = hangup.run(hup) => {} }
            })
            .await?;
        Ok(())
    })
}

/// The signals `sigil serve` acts on, listened for from the start.
struct Signals {
    /// Resolves on SIGTERM or SIGINT (Ctrl-C).
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    /// SIGHUP, where the system has it.
    hup: hangup::HangupSignal,
}

impl Signals {
    #[cfg(unix)]
    fn register() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, signal = name, "cannot listen for this signal");
                None
            }
        };
        let (mut term, mut int) =
            (listen(SignalKind::terminate(), "SIGTERM"), listen(SignalKind::interrupt(), "SIGINT"));
        let hup = listen(SignalKind::hangup(), "SIGHUP");
        let stop = Box::pin(async move {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! { _ = next(&mut term) => {}, _ = next(&mut int) => {} }
        });
        Signals { stop, hup }
    }

    #[cfg(not(unix))]
    fn register() -> Signals {
        let stop = Box::pin(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        Signals { stop, hup: () }
    }
}

/// `PATH: N bytes, A accounts, C channels, H history rows`.
fn describe(r: &BackupReport) -> String {
    format!(
        "{}: {} bytes, {} accounts, {} channels, {} history rows",
        r.path.display(),
        r.bytes,
        r.accounts,
        r.channels,
        r.history
    )
}

fn credentials_of(a: &StoredAccount) -> Credentials {
    Credentials { id: a.id, name: a.name.clone(), key: a.key.clone() }
}

/// Shows a new secret: as JSON, or by writing a credentials file.
fn show_secret(account: &StoredAccount, SecretOut { json, out, link }: SecretOut, verb: &str) -> Result<()> {
    let cred = credentials_of(account);
    let path = match (json, out) {
        (_, Some(p)) => Some(p),
        (false, None) => Some(PathBuf::from(format!("{}.cred", account.name))),
        (true, None) => None,
    };
    if let Some(path) = &path {
        cred.save(path)?;
    }
    let link = link.map(|page| sign_in_link(&page, &cred));
    if json {
        // {"id","name","key"} in that order (§9.2), then "link" when asked for.
        let json = cred.to_json();
        match (&link, json.strip_suffix('}')) {
            (Some(link), Some(open)) => println!("{open},\"link\":{}}}", serde_json::Value::String(link.clone())),
            _ => println!("{json}"),
        }
    } else {
        println!("{verb} account {} with id {}", account.name, account.id);
        if let Some(path) = &path {
            println!("key written to {} (mode 0600); it is shown only this once", path.display());
        }
        if let Some(link) = &link {
            println!("sign-in link (it holds the key: give it only to {}):", account.name);
            println!("{link}");
        }
    }
    Ok(())
}

/// Opens the database at `db`, naming it in any error; only `create` may make a new one
/// (a mistyped path must not silently become an empty database).
fn open_db(db: &Path, create: bool) -> Result<Store> {
    if !create && !db.exists() {
        return Err(format!("no database at {} (sigil serve and sigil account add create one)", db.display()).into());
    }
    Store::open(db).map_err(|e| format!("{}: {e}", db.display()).into())
}

fn account(cmd: AccountCmd) -> Result<()> {
    let open = |db: &Path| open_db(db, false);
    match cmd {
        AccountCmd::Add { name, db, secret } => {
            let account = open_db(&db.db, true)?.add_account(&name, server::now_unix())?;
            show_secret(&account, secret, "created")
        }
        AccountCmd::List { db, json } => {
            for a in open(&db.db)?.accounts()? {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"id": a.id.to_string(), "name": a.name, "created_at": a.created_at})
                    );
                } else {
                    println!("{}  {}", a.id, a.name);
                }
            }
            Ok(())
        }
        AccountCmd::Remove { account, db } => {
            let a = open(&db.db)?.remove_account(&account)?;
            println!("removed account {} ({})", a.name, a.id);
            Ok(())
        }
        AccountCmd::Rotate { account, db, secret } => {
            let a = open(&db.db)?.rotate_key(&account)?;
            show_secret(&a, secret, "rotated the key of")
        }
    }
}

async fn decode(cred: Option<Credentials>, max_payload: usize) -> Result<()> {
    let mut frames = tokio_util::codec::FramedRead::new(tokio::io::stdin(), FrameCodec::new(max_payload));
    while let Some(frame) = frames.next().await {
        let frame = frame?;
        let mut out = std::io::stdout().lock();
        match writeln!(out, "{}", tools::frame_to_json(&frame, cred.as_ref())).and_then(|()| out.flush()) {
            // `sigil decode | head`: the reader has what it wanted.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            written => written?,
        }
    }
    Ok(())
}
