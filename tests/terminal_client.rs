//! `sigil client` as people use it: the real binary in tmux (a real
//! terminal, so the full-screen client) or with pipes (the plain mode),
//! against a real `sigil serve`. Every wait is on what the screen or the
//! output shows, bounded; none is a fixed sleep.
//!
//! Needs Debian's `tmux`; without it these tests print why and pass, unless
//! `SIGIL_REQUIRE_TOOLS=1`. Each test runs its own tmux server on a private
//! socket (`tmux -L`), killed at the end.

mod support;

use std::path::Path;
use std::process::Command;

use support::lines::LineProcess;
use support::tmux::{tmux_or_skip, Tmux};
use support::{account_dir, ServerProcess};

const SIGIL: &str = env!("CARGO_BIN_EXE_sigil");

/// A plain-mode client with pipes: lines in, lines out (as scripts use it).
fn plain(dir: &Path, addr: &str, cred: &str) -> LineProcess {
    let mut command = Command::new(SIGIL);
    command.current_dir(dir).args(["client", addr, "--cred", cred]);
    LineProcess::spawn(command)
}

#[test]
fn two_people_chat_switch_windows_and_read_offline_peoples_names() {
    if !tmux_or_skip("two_people_chat") {
        return;
    }
    let dir = account_dir(&["alice", "bob", "carol"]);
    let d = dir.path();
    let server = ServerProcess::start(d, &[]);
    let addr = server.addr.clone();
    // carol, in the plain mode, makes #general, says something and leaves.
    let mut carol = plain(d, &addr, "carol.cred");
    carol.wait_for("signed in as carol");
    carol.say("/new general");
    carol.say("carol was here");
    carol.wait_for("✓ committed in #general: carol was here");
    assert!(carol.finish().success());

    let t = Tmux::new("chat");
    t.start("alice", d, &format!("client {addr} --cred alice.cred"));
    t.wait_for("alice", "[connected]");
    t.type_line("alice", "/join general");
    // History by carol, who is offline: shown by name, marked as history.
    t.wait_for("alice", "<carol> carol was here");
    t.wait_for("alice", "history: new since you were last here");
    t.wait_for("alice", "[#general]");
    t.type_line("alice", "/names");
    t.wait_for("alice", "offline: caro");

    t.start("bob", d, &format!("client {addr} --cred bob.cred"));
    t.wait_for("bob", "[connected]");
    t.type_line("bob", "/join #general");
    t.wait_for("bob", "<carol> carol was here");
    t.type_line("bob", "hi alice");
    t.wait_for("alice", "<bob> hi alice");
    // Both sides see bob's message committed: one filled mark, no line per acker.
    t.wait_for("bob", "<bob> hi alice ●");
    t.type_line("alice", "hello bob");
    let screen = t.wait_for("bob", "<alice> hello bob");
    assert!(!screen.contains("has your message"), "{screen}");

    // A second channel: alice creates it and goes back and forth.
    t.type_line("alice", "/new rust");
    t.wait_for("alice", "[#rust]");
    t.wait_for("alice", "3 #rust");
    t.type_line("alice", "/join general");
    t.wait_for("alice", "[#general]");
    t.keys("alice", &["M-3"]);
    t.wait_for("alice", "[#rust]");
    t.keys("alice", &["C-p"]);
    t.wait_for("alice", "[#general]");
    // A private conversation: its own window, unread counted elsewhere.
    t.type_line("bob", "/msg alice psst");
    t.wait_for("alice", "4 bob 1");
    t.type_line("alice", "/win 4");
    t.wait_for("alice", "<bob> psst");
    t.type_line("alice", "got it");
    t.wait_for("bob", "<alice> got it");
    t.wait_for("alice", "<alice> got it ●");
    // The input line is not disturbed by what arrives.
    t.tmux(&["send-keys", "-t", "alice", "-l", "half typed"]);
    t.type_line("bob", "another one");
    t.wait_for("alice", "<bob> another one");
    t.wait_for("alice", "[bob] half typed");
    t.keys("alice", &["C-u"]);
    t.type_line("alice", "/quit");
    t.wait_for("alice", "sigil exited with 0");
}

#[test]
fn a_fatal_refusal_ends_the_full_screen_client_with_its_reason() {
    if !tmux_or_skip("fatal_refusal") {
        return;
    }
    let dir = account_dir(&["alice"]);
    let d = dir.path();
    let server = ServerProcess::start(d, &[]);
    let t = Tmux::new("fatal");
    t.start("alice", d, &format!("client {} --cred alice.cred", server.addr));
    t.wait_for("alice", "[connected]");
    // alice signs in elsewhere: this session is taken over.
    let mut other = plain(d, &server.addr, "alice.cred");
    other.wait_for("signed in as alice");
    let screen = t.wait_for("alice", "sigil exited with 1");
    assert!(screen.contains("signed out: alice signed in from another client"), "{screen}");
    assert!(screen.contains("(session_repl"), "{screen}");
    // The terminal was restored: the full screen is gone.
    assert!(!screen.contains("[connected]"), "{screen}");
    assert!(other.finish().success());
}

#[test]
fn long_lines_are_refused_and_lines_typed_offline_are_sent_after_a_restart() {
    if !tmux_or_skip("offline_queue") {
        return;
    }
    let dir = account_dir(&["alice", "bob"]);
    let d = dir.path();
    let (server, _log) = ServerProcess::start_on(d, "127.0.0.1:0", &["--max-payload", "1024"]);
    let addr = server.addr.clone();
    let t = Tmux::new("queue");
    t.start("alice", d, &format!("client {addr} --cred alice.cred"));
    t.wait_for("alice", "[connected]");
    t.type_line("alice", "/new general");
    t.wait_for("alice", "led by alice");
    // Over max_payload: refused here, with the size and the limit; the session goes on.
    t.type_line("alice", &"x".repeat(1500));
    t.wait_for("alice", "not sent: the line is 1500 bytes, and at most");
    t.wait_for("alice", "(max_payload 1024)");
    t.type_line("alice", "still here");
    t.wait_for("alice", "<alice> still here ●");

    // The server stops: alice is told, types on, and the line is queued.
    drop(server);
    t.wait_for("alice", "reconnecting in");
    t.type_line("alice", "typed while offline");
    t.wait_for("alice", "<alice> typed while offline …");
    t.wait_for("alice", "1 queued");
    // The server is back on the same port; Ctrl-R reconnects without waiting.
    let (server, _log) = ServerProcess::start_on(d, &addr, &["--max-payload", "1024"]);
    t.keys("alice", &["C-r"]);
    t.wait_for("alice", "<alice> typed while offline ●");
    // bob, in the plain mode, reads it from history, by name, marked as such.
    let mut bob = plain(d, &server.addr, "bob.cred");
    bob.say("/join general");
    bob.wait_for("#general (history) <alice> typed while offline");
    assert!(bob.finish().success());
    // A second run of bob shows nothing of it as new.
    let mut bob = plain(d, &server.addr, "bob.cred");
    bob.say("/list");
    bob.wait_for("channels:");
    bob.say("/quit");
    let printed = bob.seen.clone();
    assert!(bob.finish().success());
    assert!(!printed.iter().any(|l| l.contains("typed while offline")), "{printed:?}");
}

#[test]
fn the_plain_mode_ends_quietly_when_its_reader_goes_away() {
    if !tmux_or_skip("broken_pipe") {
        return;
    }
    let dir = account_dir(&["alice", "bob"]);
    let d = dir.path();
    let server = ServerProcess::start(d, &[]);
    let t = Tmux::new("pipe");
    // On a terminal, but piped into head: the plain mode, ended by a closed pipe.
    let cmd = format!(
        "cd '{}' && '{SIGIL}' client {} --cred alice.cred | head -n 2; echo \"pipeline exited with ${{PIPESTATUS[0]}}\"; sleep 3600",
        d.display(),
        server.addr
    );
    t.tmux(&["new-session", "-d", "-s", "alice", "-x", "100", "-y", "30", "bash", "-c", &cmd]);
    t.wait_for("alice", "signed in as alice");
    // Something to print after head is gone: bob comes online.
    let mut bob = plain(d, &server.addr, "bob.cred");
    bob.wait_for("signed in as bob");
    let screen = t.wait_for("alice", "pipeline exited with 0");
    assert!(!screen.contains("panicked"), "{screen}");
    assert!(bob.finish().success());
}

#[test]
fn a_script_that_joins_and_types_then_ends_its_input_gets_its_lines_sent() {
    let dir = account_dir(&["alice", "bob"]);
    let d = dir.path();
    let server = ServerProcess::start(d, &[]);
    let addr = server.addr.clone();
    // bob makes #general and stays, to read what alice's script says.
    let mut bob = plain(d, &addr, "bob.cred");
    bob.say("/new general");
    bob.wait_for("led by bob");
    // `printf '/join general\nscripted hello\n' | sigil client`: the input ends at once,
    // while the join is under way; the line waits for it, and is sent.
    let mut alice = plain(d, &addr, "alice.cred");
    alice.say("/join general");
    alice.say("scripted hello");
    assert!(alice.finish().success());
    bob.wait_for("#general <alice> scripted hello");
    assert!(bob.finish().success());
}
