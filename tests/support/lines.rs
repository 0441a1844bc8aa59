//! A `sigil` process driven as a script would: lines typed on stdin, its
//! stdout and stderr read line by line, every wait bounded.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// How long a process may take to print what it must.
const WAIT: Duration = Duration::from_secs(20);

/// A process with piped stdin, stdout and stderr; killed when dropped.
pub struct LineProcess {
    child: Child,
    lines: Receiver<String>,
    /// Every line read so far, stdout and stderr interleaved.
    pub seen: Vec<String>,
    /// Lines of `seen` already matched by [`LineProcess::expect`].
    matched: usize,
}

impl LineProcess {
    /// Starts `command` with its streams piped.
    pub fn spawn(mut command: Command) -> LineProcess {
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start sigil");
        let (tx, lines) = channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        LineProcess { child, lines, seen: Vec::new(), matched: 0 }
    }

    /// Types `line` and a newline.
    pub fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("write a line");
    }

    /// The first line from index `from` on that contains `needle`, reading
    /// more as it comes; its index.
    fn find_from(&mut self, from: usize, needle: &str) -> usize {
        if let Some(i) = self.seen.iter().skip(from).position(|l| l.contains(needle)) {
            return from + i;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line);
                    if self.seen.last().is_some_and(|l| l.contains(needle)) {
                        return self.seen.len() - 1;
                    }
                }
                Err(_) => panic!("never printed {needle:?}; printed:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// A line containing `needle`, printed at any time so far or to come.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let at = self.find_from(0, needle);
        self.seen[at].clone()
    }

    /// The next line containing `needle` after the last one `expect` matched:
    /// lines in the order they must come.
    pub fn expect(&mut self, needle: &str) -> String {
        let at = self.find_from(self.matched, needle);
        self.matched = at + 1;
        self.seen[at].clone()
    }

    /// Ends the input and waits for the exit status.
    pub fn finish(mut self) -> ExitStatus {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "the process did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
