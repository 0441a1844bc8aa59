//! The bench's output: a progress line while a run goes, one summary line per
//! run, then a Markdown table (ratios against sigil in the same run) and the
//! same rows as JSON for later comparison.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::stats::Progress;
use super::{BenchArgs, BenchError, FanoutParams, LoadShape, Measured, Scenario};

/// One row of results: a target in a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// sigil or a peer.
    pub server: String,
    /// The scenario.
    pub scenario: Scenario,
    /// The load, in words.
    pub load: String,
    /// The scenario's main figure (deliveries/s, acked messages/s, connections/s, bytes/session).
    pub value: Option<f64>,
    /// What `value` counts.
    pub unit: &'static str,
    /// Commits (sigil fan-out) or acks (private) per second.
    pub completed_per_s: Option<f64>,
    /// Send → delivery percentiles, µs.
    pub p50_us: Option<u64>,
    /// 99th percentile.
    pub p99_us: Option<u64>,
    /// Maximum.
    pub max_us: Option<u64>,
    /// Send → commit (or ack) 99th percentile, µs.
    pub completion_p99_us: Option<u64>,
    /// Deliveries or completions that never came.
    pub lost: Option<u64>,
    /// Deliveries that came twice.
    pub duplicated: Option<u64>,
    /// `ERR` frames or error replies.
    pub errors: Option<u64>,
    /// Why the run failed, when it did.
    pub failure: Option<String>,
}

impl Row {
    fn empty(server: &str, scenario: Scenario, load: String, unit: &'static str) -> Row {
        Row {
            server: server.to_owned(),
            scenario,
            load,
            value: None,
            unit,
            completed_per_s: None,
            p50_us: None,
            p99_us: None,
            max_us: None,
            completion_p99_us: None,
            lost: None,
            duplicated: None,
            errors: None,
            failure: None,
        }
    }

    /// A run that failed.
    pub fn failed(server: &str, scenario: Scenario, why: &str) -> Row {
        Row { failure: Some(why.to_owned()), ..Row::empty(server, scenario, String::new(), "") }
    }

    /// A message scenario's row.
    pub fn messages(server: &str, scenario: Scenario, load: String, m: &Measured) -> Row {
        let secs = m.elapsed.as_secs_f64().max(1e-9);
        let (unit, value, completed) = match scenario {
            Scenario::Private => ("acked msgs/s", m.completed as f64 / secs, None),
            Scenario::Commit => ("commits/s", m.completed as f64 / secs, None),
            _ => ("deliveries/s", m.deliveries as f64 / secs, Some(m.completed as f64 / secs)),
        };
        let some = |h: &hdrhistogram::Histogram<u64>, q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q));
        Row {
            value: Some(value),
            completed_per_s: completed,
            p50_us: some(&m.delivery, 0.5),
            p99_us: some(&m.delivery, 0.99),
            max_us: (!m.delivery.is_empty()).then(|| m.delivery.max()),
            completion_p99_us: some(&m.completion, 0.99),
            lost: Some(m.lost),
            duplicated: Some(m.duplicated),
            errors: Some(m.errors),
            ..Row::empty(server, scenario, load, unit)
        }
    }

    /// A connect run's row.
    pub fn connect(server: &str, count: usize, concurrency: usize, ok: usize, took: Duration) -> Row {
        Row {
            value: Some(ok as f64 / took.as_secs_f64().max(1e-9)),
            lost: Some((count - ok.min(count)) as u64),
            ..Row::empty(server, Scenario::Connect, format!("{count} connections, {concurrency} at once"), "connects/s")
        }
    }

    /// An idle run's row: memory per session from the server's RSS.
    pub fn idle(server: &str, count: usize, held: usize, before: Option<u64>, after: Option<u64>) -> Row {
        let per = match (before, after) {
            (Some(b), Some(a)) if held > 0 => Some(a.saturating_sub(b) as f64 / held as f64),
            _ => None,
        };
        Row {
            value: per,
            lost: Some((count - held.min(count)) as u64),
            ..Row::empty(server, Scenario::Idle, format!("{count} sessions ({held} held)"), "bytes/session")
        }
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        if let Some(f) = &self.failure {
            return format!("{:?} {}: failed: {f}", self.scenario, self.server);
        }
        let mut s = format!("{:?} {} [{}]: {} {}", self.scenario, self.server, self.load, num(self.value), self.unit);
        if let Some(c) = self.completed_per_s {
            let _ = write!(s, ", {} completed/s", num(Some(c)));
        }
        if let (Some(p50), Some(p99), Some(max)) = (self.p50_us, self.p99_us, self.max_us) {
            let _ = write!(s, ", latency p50 {p50} µs p99 {p99} µs max {max} µs");
        }
        if let (Some(l), Some(d)) = (self.lost, self.duplicated) {
            let _ = write!(s, ", lost {l}, duplicated {d}");
        }
        s
    }
}

/// The load of a fan-out run, in words.
pub fn fanout_load(p: &FanoutParams) -> String {
    let shape = match p.shape {
        LoadShape::Closed => format!("closed loop, window {}", p.window),
        LoadShape::Open { messages_per_s } => {
            format!("open loop, {:.0} deliveries/s", messages_per_s * (p.members * p.publishers) as f64)
        }
    };
    format!("S={} P={} {} B, {shape}", p.members, p.publishers, p.size)
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 1e6 => format!("{:.2} M", v / 1e6),
        Some(v) if v >= 1e4 => format!("{:.1} k", v / 1e3),
        Some(v) => format!("{v:.0}"),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "—".into())
}

/// The Markdown table: one row per server and scenario, with the main figure
/// as a ratio of sigil's in the same run (for memory, lower is better).
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| server | scenario | load | result | × sigil | p50 µs | p99 µs | max µs | commit/ack p99 µs | completed/s | lost | dup |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        if let Some(f) = &row.failure {
            let _ = writeln!(
                out,
                "| {} | {:?} | failed: {} | | | | | | | | | |",
                row.server,
                row.scenario,
                f.replace('|', "/")
            );
            continue;
        }
        let sigil = rows.iter().find(|r| r.server == "sigil" && r.scenario == row.scenario && same_count(r, row));
        let ratio = match (row.value, sigil.and_then(|s| s.value)) {
            (Some(v), Some(s)) if s > 0.0 => format!("{:.2}×", v / s),
            _ => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {:?} | {} | {} {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.server,
            row.scenario,
            row.load,
            num(row.value),
            row.unit,
            ratio,
            opt(row.p50_us),
            opt(row.p99_us),
            opt(row.max_us),
            opt(row.completion_p99_us),
            num(row.completed_per_s),
            opt(row.lost),
            opt(row.duplicated),
        );
    }
    out
}

fn same_count(a: &Row, b: &Row) -> bool {
    a.scenario != Scenario::Idle || a.load.split(' ').next() == b.load.split(' ').next()
}

#[derive(Serialize)]
struct Results<'a> {
    command: String,
    unix_time: u64,
    cpus: usize,
    cpu_model: String,
    pinned: bool,
    rows: &'a [Row],
}

/// Prints the table and writes `results.md` and `results.json` into `dir`.
pub fn write(dir: &Path, args: &BenchArgs, rows: &[Row]) -> Result<(), BenchError> {
    let table = markdown(rows);
    println!("{table}");
    std::fs::create_dir_all(dir).map_err(|e| BenchError::Setup(format!("{}: {e}", dir.display())))?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let results = Results {
        command: command.clone(),
        unix_time: sigil_server::now_unix(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model,
        pinned: args.pin,
        rows,
    };
    let json = serde_json::to_string_pretty(&results).map_err(|e| BenchError::Setup(e.to_string()))?;
    let save = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| BenchError::Setup(format!("{}: {e}", dir.join(name).display())))
    };
    save("results.json", &json)?;
    save("results.md", &format!("`{command}`\n\n{table}"))?;
    eprintln!("wrote {} and results.md", dir.join("results.json").display());
    Ok(())
}

/// A progress line on stderr, redrawn every second until [`ProgressLine::finish`].
pub struct ProgressLine {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the progress line of a run.
pub fn progress_line(label: String, progress: Arc<Progress>) -> ProgressLine {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let thread = std::thread::spawn(move || {
        let start = Instant::now();
        let (mut last_d, mut last_c) = (0u64, 0u64);
        'line: loop {
            for _ in 0..10 {
                if flag.load(Ordering::Relaxed) {
                    break 'line;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let d = progress.deliveries.load(Ordering::Relaxed);
            let c = progress.completed.load(Ordering::Relaxed);
            eprint!(
                "\r{label}: {:>4.0} s  {:>10} deliveries/s  {:>9} completed/s   ",
                start.elapsed().as_secs_f64(),
                num(Some((d - last_d) as f64)),
                num(Some((c - last_c) as f64))
            );
            (last_d, last_c) = (d, c);
        }
        eprint!("\r{:80}\r", "");
    });
    ProgressLine { done, thread: Some(thread) }
}

impl ProgressLine {
    /// Clears the line.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_gives_ratios_against_sigil() {
        let mut sigil = Row::connect("sigil", 100, 10, 100, Duration::from_secs(1));
        sigil.value = Some(1000.0);
        let mut peer = Row::connect("redis-server", 100, 10, 100, Duration::from_secs(1));
        peer.value = Some(2500.0);
        let table = markdown(&[sigil, peer, Row::failed("ngircd", Scenario::Connect, "refused | closed")]);
        assert!(table.contains("| 2.50×"), "{table}");
        assert!(table.contains("| 1.00×"), "{table}");
        assert!(table.contains("failed: refused / closed"), "{table}");
    }
}
