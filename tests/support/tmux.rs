//! A private tmux server whose sessions are people's terminals: the real
//! binary in a real terminal, its screen read with `capture-pane`, every
//! wait bounded. Needs Debian's `tmux`; tests skip (saying why) without it
//! unless `SIGIL_REQUIRE_TOOLS=1`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SIGIL: &str = env!("CARGO_BIN_EXE_sigil");
/// How long a screen may take to show what it must.
const WAIT: Duration = Duration::from_secs(20);

/// Why tmux tests cannot run here, if they cannot.
pub fn missing_tmux() -> Option<String> {
    match Command::new("tmux").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("tmux is not installed (apt-get install tmux)".into()),
    }
}

/// False (after saying why) when the test must be skipped.
pub fn tmux_or_skip(test: &str) -> bool {
    match missing_tmux() {
        None => true,
        Some(why) => {
            let required = std::env::var("SIGIL_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
            assert!(!required, "tmux is required (SIGIL_REQUIRE_TOOLS=1) but {why}");
            println!("skipped {test}: {why}");
            false
        }
    }
}

/// A private tmux server; its sessions are people's terminals.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn new(test: &str) -> Tmux {
        Tmux { socket: format!("sigil-{test}-{}", std::process::id()) }
    }

    pub fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `sigil ARGS` in a 100x30 terminal named `name`, in `dir`; the
    /// pane stays after it ends, saying how it ended.
    pub fn start(&self, name: &str, dir: &Path, args: &str) {
        let cmd = format!("cd '{}' && '{SIGIL}' {args}; echo \"sigil exited with $?\"; sleep 3600", dir.display());
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(["new-session", "-d", "-s", name, "-x", "100", "-y", "30", "bash", "-c", &cmd])
            .env_remove("TMUX")
            .status()
            .expect("start tmux");
        assert!(out.success(), "tmux new-session failed");
    }

    pub fn screen(&self, name: &str) -> String {
        self.tmux(&["capture-pane", "-p", "-t", name])
    }

    /// Waits until the screen of `name` shows `needle`; returns the screen.
    pub fn wait_for(&self, name: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen(name);
            if screen.contains(needle) {
                return screen;
            }
            assert!(Instant::now() < deadline, "{name}'s screen never showed {needle:?}:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` and Enter.
    pub fn type_line(&self, name: &str, text: &str) {
        self.tmux(&["send-keys", "-t", name, "-l", text]);
        self.keys(name, &["Enter"]);
    }

    pub fn keys(&self, name: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", name];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-L").arg(&self.socket).arg("kill-server").output();
    }
}
