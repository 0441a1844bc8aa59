//! `sigil bench`: the load generator. It starts a sigil server of its own
//! (pinned to CPU 0 with `--pin`, the generator on CPU 1), runs each scenario
//! against it and against the peers it is given (nats-server, redis-server,
//! ngircd, started by `bench/peers.sh`), and prints a Markdown table with
//! ratios against sigil, writing the same rows as JSON. Loopback only;
//! every run is bounded in time and count.

pub mod peers;
pub mod report;
pub mod sigil;
pub mod stats;
pub mod system;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use peers::Protocol;
use report::Row;
use sigil_client::Credentials;
use stats::Progress;
use system::SigilServer;

/// A bench failure: setup, a peer, or the server.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Something the run needs could not be set up.
    #[error("{0}")]
    Setup(String),
    /// A command-line value is wrong.
    #[error("{0}")]
    Usage(String),
}

/// A scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// One channel, many members, a few publishers.
    Fanout,
    /// The fan-out at a fixed delivery rate (open loop), for latency.
    Latency,
    /// Committed messages per second in a small channel (durable: group commit).
    Commit,
    /// Pairs exchanging private messages with acks.
    Private,
    /// New connections + authentication per second.
    Connect,
    /// Idle authenticated sessions: server memory per session.
    Idle,
}

/// Open or closed loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadShape {
    /// Each publisher keeps `window` messages in flight.
    Closed,
    /// Each publisher sends at this fixed rate.
    Open {
        /// Messages per second per publisher.
        messages_per_s: f64,
    },
}

/// Parameters of the message scenarios.
#[derive(Debug, Clone)]
pub struct FanoutParams {
    /// Subscribers (sigil: channel members, the publishers among them).
    pub members: usize,
    /// Publishing connections.
    pub publishers: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Messages in flight per publisher (closed loop), or its cap (open loop).
    pub window: usize,
    /// Closed or open loop.
    pub shape: LoadShape,
    /// How long publishers publish.
    pub duration: Duration,
    /// How long to wait afterwards for the last deliveries.
    pub drain: Duration,
    /// sigil: batch acks and commits (PROTOCOL.md §7.9), as the reference client does.
    pub batch: bool,
    /// sigil: how long a member may hold an ack to send it with later ones.
    pub ack_delay: Duration,
}

/// What a message scenario measured.
#[derive(Debug)]
pub struct Measured {
    /// Distinct deliveries to subscribers.
    pub deliveries: u64,
    /// Completions: commits (sigil fan-out), acks (private), first-subscriber deliveries (peers).
    pub completed: u64,
    /// Deliveries and completions that never came.
    pub lost: u64,
    /// Deliveries that came twice.
    pub duplicated: u64,
    /// Errors the server sent.
    pub errors: u64,
    /// From the first publish to the last delivery (or the drain bound).
    pub elapsed: Duration,
    /// Send → delivery, µs.
    pub delivery: Histogram<u64>,
    /// Send → completion, µs.
    pub completion: Histogram<u64>,
}

impl Measured {
    /// What a run measured, from its merged record: `expected` deliveries, and
    /// `must_complete` completions where every message sent must complete.
    pub fn from_record(
        rec: stats::Recorder,
        expected: u64,
        must_complete: Option<u64>,
        errors: u64,
        elapsed: Duration,
    ) -> Measured {
        let completed = rec.completion.len();
        let lost = expected.saturating_sub(rec.unique) + must_complete.map_or(0, |n| n.saturating_sub(completed));
        Measured {
            deliveries: rec.unique,
            completed,
            lost,
            duplicated: rec.duplicated,
            errors,
            elapsed,
            delivery: rec.delivery,
            completion: rec.completion,
        }
    }
}

/// `sigil bench` options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Scenarios to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "fanout,commit,private,connect,idle,latency")]
    pub scenarios: Vec<Scenario>,
    /// A peer to measure beside sigil, as NAME=HOST:PORT with NAME one of nats, redis, ngircd
    /// (repeatable). Its pid is read from PID_DIR/NAME.pid when --pid-dir is given.
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Where `bench/peers.sh` wrote the peers' pid files (for pinning and memory).
    #[arg(long)]
    pub pid_dir: Option<PathBuf>,
    /// Fan-out: subscribers (sigil: channel members).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    pub members: u64,
    /// Fan-out: publishers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub publishers: u64,
    /// Message size in bytes (at least 28: the send time, publisher and sequence are written in).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(28..=60_000))]
    pub size: u64,
    /// Closed loop: messages in flight per publisher (sigil: until committed; peers: until the
    /// first subscriber has it). Open loop: the most in flight before sending pauses.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub window: u64,
    /// Fan-out: deliveries per second in total (messages/s × members), open loop; 0 = closed loop.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Latency: deliveries per second in total, open loop (the fan-out's members and size).
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub latency_rate: u64,
    /// Commit: members of the channel (all but the leader publish).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=1_000))]
    pub commit_members: u64,
    /// Latency: publishers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub latency_publishers: u64,
    /// Seconds each message scenario publishes.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub secs: u64,
    /// Seconds to wait for the last deliveries after publishing stops.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub drain_secs: u64,
    /// Private: pairs of sessions.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub pairs: u64,
    /// Connect: connections to open.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,
    /// Connect: connections in progress at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub connect_concurrency: u64,
    /// Idle: sessions to hold (comma-separated for several runs).
    #[arg(long, value_delimiter = ',', default_value = "5000")]
    pub idle: Vec<u64>,
    /// sigil: how long (ms) a member may hold an ack to send it with later ones,
    /// like TCP's delayed ACK; 0 acks at once.
    #[arg(long, default_value_t = 0)]
    pub ack_delay_ms: u64,
    /// sigil: one ACK_CH_MSG and CH_COMMIT per message, without the batching extension.
    #[arg(long)]
    pub no_batch: bool,
    /// Put servers on CPU 0 and the generator on CPU 1 (`taskset`).
    #[arg(long)]
    pub pin: bool,
    /// The sigil binary to start (default: this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Directory for results.json and results.md.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

/// A target of a run.
#[derive(Debug, Clone)]
enum Target {
    Sigil,
    Peer { protocol: Protocol, addr: SocketAddr, pid: Option<u32> },
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Sigil => "sigil",
            Target::Peer { protocol, .. } => protocol.name(),
        }
    }
}

fn parse_peer(spec: &str, pid_dir: Option<&PathBuf>) -> Result<Target, BenchError> {
    let (name, addr) =
        spec.split_once('=').ok_or_else(|| BenchError::Usage(format!("--peer {spec}: expected NAME=HOST:PORT")))?;
    let protocol = match name {
        "nats" => Protocol::Nats,
        "redis" => Protocol::Redis,
        "ngircd" | "irc" => Protocol::Irc,
        other => return Err(BenchError::Usage(format!("--peer {other}: not one of nats, redis, ngircd"))),
    };
    let addr: SocketAddr = addr.parse().map_err(|e| BenchError::Usage(format!("--peer {spec}: {e}")))?;
    if !addr.ip().is_loopback() {
        return Err(BenchError::Usage(format!("--peer {spec}: the bench only talks to loopback addresses")));
    }
    let pid = pid_dir
        .map(|d| d.join(format!("{name}.pid")))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse().ok());
    Ok(Target::Peer { protocol, addr, pid })
}

/// Runs `sigil bench`.
pub fn run(args: BenchArgs) -> Result<(), BenchError> {
    let mut targets = vec![Target::Sigil];
    for spec in &args.peers {
        targets.push(parse_peer(spec, args.pid_dir.as_ref())?);
    }
    let most_idle = args.idle.iter().copied().max().unwrap_or(0);
    // Each session is a descriptor in the generator too.
    let _ = rlimit::increase_nofile_limit(most_idle.saturating_mul(2).saturating_add(4096));
    if args.pin {
        system::pin(std::process::id(), 1)?;
        for t in &targets {
            if let Target::Peer { pid: Some(pid), .. } = t {
                system::pin(*pid, 0)?;
            }
        }
    }
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(|e| BenchError::Setup(e.to_string()))?,
    };
    let dir = std::env::temp_dir().join(format!("sigil-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Setup(format!("{}: {e}", dir.display())))?;
    let result = run_in(&args, &targets, &bin, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(
    args: &BenchArgs,
    targets: &[Target],
    bin: &std::path::Path,
    dir: &std::path::Path,
) -> Result<(), BenchError> {
    let accounts = (args.members)
        .max(args.pairs * 2)
        .max(args.connect_concurrency * 4)
        .max(args.idle.iter().copied().max().unwrap_or(0)) as usize;
    let db = dir.join("bench.db");
    let creds = create_accounts(&db, accounts)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let fanout = FanoutParams {
        members: args.members as usize,
        publishers: args.publishers as usize,
        size: args.size as usize,
        window: args.window as usize,
        shape: open_loop(args.rate, args.members, args.publishers),
        duration: Duration::from_secs(args.secs),
        drain: Duration::from_secs(args.drain_secs),
        batch: !args.no_batch,
        ack_delay: Duration::from_millis(args.ack_delay_ms),
    };
    let commit = FanoutParams {
        members: args.commit_members as usize,
        publishers: args.commit_members as usize - 1,
        window: args.window as usize * 4,
        shape: LoadShape::Closed,
        ..fanout.clone()
    };
    let latency = FanoutParams {
        publishers: args.latency_publishers as usize,
        shape: open_loop(args.latency_rate, args.members, args.latency_publishers),
        ..fanout.clone()
    };
    let mut rows = Vec::new();
    let cpu = args.pin.then_some(0);
    for &scenario in &args.scenarios {
        let runs: Vec<Option<u64>> = match scenario {
            Scenario::Idle => args.idle.iter().map(|&n| Some(n)).collect(),
            _ => vec![None],
        };
        for count in runs {
            for target in targets {
                if matches!(scenario, Scenario::Private | Scenario::Commit) && !matches!(target, Target::Sigil) {
                    continue; // The peers have no private messages with acks, and no commits.
                }
                let label = format!("{scenario:?} {}", target.name()).to_lowercase();
                let progress = Arc::new(Progress::default());
                let reporter = report::progress_line(label.clone(), progress.clone());
                let server = match target {
                    Target::Sigil => Some(SigilServer::start(bin, &db, cpu, dir.join("server.log"))?),
                    Target::Peer { .. } => None,
                };
                let params = match scenario {
                    Scenario::Latency => &latency,
                    Scenario::Commit => &commit,
                    _ => &fanout,
                };
                let outcome =
                    runtime.block_on(one(scenario, target, server.as_ref(), &creds, args, params, count, progress));
                reporter.finish();
                drop(server);
                match outcome {
                    Ok(row) => {
                        eprintln!("{}", row.summary());
                        rows.push(row);
                    }
                    Err(e) => {
                        eprintln!("{label}: failed: {e}");
                        rows.push(Row::failed(target.name(), scenario, &e.to_string()));
                    }
                }
            }
        }
    }
    report::write(&args.out, args, &rows)
}

/// Open loop at `rate` deliveries/s in total over `members` × `publishers`; closed for 0.
fn open_loop(rate: u64, members: u64, publishers: u64) -> LoadShape {
    match rate {
        0 => LoadShape::Closed,
        r => LoadShape::Open { messages_per_s: r as f64 / (members * publishers) as f64 },
    }
}

fn create_accounts(db: &std::path::Path, n: usize) -> Result<Vec<Credentials>, BenchError> {
    let mut store = sigil_server::store::Store::open(db).map_err(|e| BenchError::Setup(e.to_string()))?;
    let names: Vec<String> = (0..n).map(|i| format!("bench{i}")).collect();
    let created = store.add_accounts(&names, sigil_server::now_unix()).map_err(|e| BenchError::Setup(e.to_string()))?;
    Ok(created.into_iter().map(|a| Credentials { id: a.id, name: a.name, key: a.key }).collect())
}

#[allow(clippy::too_many_arguments)]
async fn one(
    scenario: Scenario,
    target: &Target,
    server: Option<&SigilServer>,
    creds: &[Credentials],
    args: &BenchArgs,
    fanout: &FanoutParams,
    count: Option<u64>,
    progress: Arc<Progress>,
) -> Result<Row, BenchError> {
    let (addr, pid) = match (target, server) {
        (Target::Peer { addr, pid, .. }, _) => (*addr, *pid),
        (Target::Sigil, Some(s)) => (s.addr, Some(s.pid())),
        (Target::Sigil, None) => return Err(BenchError::Setup("no sigil server".into())),
    };
    let name = target.name();
    match scenario {
        Scenario::Fanout | Scenario::Latency | Scenario::Commit => {
            let m = match target {
                Target::Sigil => sigil::fanout(addr, creds, fanout, progress).await?,
                Target::Peer { protocol, .. } => peers::fanout(*protocol, addr, fanout, progress).await?,
            };
            Ok(Row::messages(name, scenario, report::fanout_load(fanout), &m))
        }
        Scenario::Private => {
            let m = sigil::private(addr, creds, args.pairs as usize, fanout, progress).await?;
            Ok(Row::messages(
                name,
                scenario,
                format!("{} pairs, window {}, {} B", args.pairs, fanout.window, fanout.size),
                &m,
            ))
        }
        Scenario::Connect => {
            let (n, c) = (args.connections as usize, args.connect_concurrency as usize);
            let (ok, took) = match target {
                Target::Sigil => sigil::connect(addr, creds, n, c, progress).await?,
                Target::Peer { protocol, .. } => peers::connect(*protocol, addr, n, c, progress).await?,
            };
            Ok(Row::connect(name, n, c, ok, took))
        }
        Scenario::Idle => {
            let n = count.unwrap_or(0) as usize;
            let before = pid.and_then(system::rss_bytes);
            let hold = CancellationToken::new();
            let (tasks, open) = match target {
                Target::Sigil => {
                    let n = n.min(creds.len());
                    sigil::idle(addr, &creds[..n], hold.clone(), progress).await?
                }
                Target::Peer { protocol, .. } => peers::idle(*protocol, addr, n, hold.clone(), progress).await?,
            };
            // Let the server finish announcing arrivals, then let the generator read it all.
            if let Some(pid) = pid {
                tokio::task::spawn_blocking(move || system::wait_quiet(pid, Duration::from_secs(600)))
                    .await
                    .map_err(|e| BenchError::Setup(e.to_string()))?;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let held = open.load(Ordering::Relaxed) as usize;
            let after = pid.and_then(system::rss_bytes);
            hold.cancel();
            for t in tasks {
                let _ = t.await;
            }
            Ok(Row::idle(name, n, held, before, after))
        }
    }
}
