//! The bench's view of processes: resident memory and CPU time from /proc,
//! CPU pinning with `taskset`, and the sigil server it starts for each run.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::BenchError;

/// Resident set size of `pid` in bytes (Linux /proc).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU time of `pid` in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Waits (at most `limit`) until `pid` has used no CPU for a full second:
/// a server that finished its work after a ramp.
pub fn wait_quiet(pid: u32, limit: Duration) {
    let start = Instant::now();
    let mut last = cpu_ticks(pid);
    while start.elapsed() < limit {
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu_ticks(pid);
        if now == last {
            return;
        }
        last = now;
    }
}

/// Pins every thread of `pid` to `cpu` (needs `taskset`, from util-linux).
pub fn pin(pid: u32, cpu: usize) -> Result<(), BenchError> {
    let status = Command::new("taskset")
        .args(["-a", "-cp", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| BenchError::Setup(format!("taskset: {e}")))?;
    if !status.success() {
        return Err(BenchError::Setup(format!("taskset could not pin pid {pid} to CPU {cpu}")));
    }
    Ok(())
}

/// A free loopback port (the OS picks; a race with another process is unlikely and fails loudly).
pub fn free_port() -> Result<u16, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::Setup(format!("bind: {e}")))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| BenchError::Setup(e.to_string()))
}

/// Waits until something accepts connections at `addr`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> Result<(), BenchError> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(BenchError::Setup(format!("nothing listens at {addr} after {limit:?}")))
}

/// A `sigil serve` child process with limits opened up for load, killed on drop.
pub struct SigilServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl SigilServer {
    /// Starts `bin serve` on a free loopback port over the database `db`,
    /// pinned to `cpu` when given.
    pub fn start(bin: &Path, db: &Path, cpu: Option<usize>, log: PathBuf) -> Result<Self, BenchError> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(&log).map_err(|e| BenchError::Setup(format!("{}: {e}", log.display())))?;
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        // The bench measures the relay, not its limits: each one it would
        // reach under load is raised (PROTOCOL.md §3.7 lists them).
        command
            .arg("serve")
            .arg(addr.to_string())
            .arg("--db")
            .arg(db)
            .args(["--max-connections", "30000", "--max-connections-per-ip", "30000"])
            .args(["--rate", "10000000", "--burst", "10000000"])
            .args(["--timeout-s", "3600", "--cnn-timeout-s", "120"])
            .args(["--max-members", "100000", "--max-pending", "1000000"])
            .args(["--max-pending-bytes", "1073741824", "--replay-window", "4000000"])
            .args(["--max-pending-bytes-per-account", "1073741824", "--max-pending-bytes-total", "4294967296"])
            .args(["--connects-per-ip-per-minute", "10000000", "--cnn-per-minute", "10000"])
            .args(["--outbound-queue", "1000000", "--outbound-bytes", "268435456"])
            // Its web listener on a free port: it runs (and counts) as in production.
            .args(["--web", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        let child = command.spawn().map_err(|e| BenchError::Setup(format!("{}: {e}", bin.display())))?;
        let server = SigilServer { child, addr };
        wait_listening(addr, Duration::from_secs(20))?;
        Ok(server)
    }

    /// The server's process id (under `taskset -c`, which execs, it is the same).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SigilServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
