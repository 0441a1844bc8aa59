//! `sigil serve --config FILE`: keys are the flags' long names, flags on the
//! command line win, `--print-config` shows the effective configuration, and
//! a bad file is refused with its name.

mod support;

use std::process::Command;

use sigil_proto::ServerEvent;
use support::{Raw, ServerProcess};

fn sigil(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sigil")).current_dir(dir).args(args).output().expect("run sigil")
}

/// `key = value` lines of `--print-config` output, as text.
fn setting<'a>(printed: &'a str, key: &str) -> Option<&'a str> {
    printed.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(" = "))
}

#[test]
fn the_file_sets_what_the_command_line_does_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(
        d.join("sigil.toml"),
        "addr = \"127.0.0.1:7999\"\nmax-payload = 70000\nrate = 50.5\nno-web = true\nserver-name = \"from-file\"\n",
    )
    .expect("write");
    let out = sigil(d, &["serve", "--config", "sigil.toml", "--max-payload", "80000", "--print-config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(setting(&printed, "addr"), Some("\"127.0.0.1:7999\""));
    assert_eq!(setting(&printed, "max-payload"), Some("80000"), "the flag wins");
    assert_eq!(setting(&printed, "rate"), Some("50.5"));
    assert_eq!(setting(&printed, "no-web"), Some("true"));
    assert_eq!(setting(&printed, "server-name"), Some("\"from-file\""));
    assert_eq!(setting(&printed, "timeout-s"), Some("180"), "defaults are shown too");
    // What --print-config prints is itself a configuration file that says the same.
    std::fs::write(d.join("printed.toml"), &printed).expect("write");
    let again = sigil(d, &["serve", "--config", "printed.toml", "--print-config"]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), printed);
}

#[test]
fn bad_files_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let cases: [(&str, &str, &str); 4] = [
        ("unknown.toml", "bogus = 1\n", "unknown key \"bogus\""),
        ("broken.toml", "max-payload = \n", "not valid TOML"),
        ("kind.toml", "no-web = \"yes\"\n", "use true or false"),
        ("nested.toml", "[limits]\nx = 1\n", "unknown key \"limits\""),
    ];
    for (name, text, says) in cases {
        std::fs::write(d.join(name), text).expect("write");
        let out = sigil(d, &["serve", "--config", name, "--print-config"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(err.contains(name) && err.contains(says), "{name}: {err}");
    }
    let out = sigil(d, &["serve", "--config", "missing.toml"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    // A value out of range is refused as the flag would be.
    std::fs::write(d.join("small.toml"), "max-payload = 5\n").expect("write");
    let out = sigil(d, &["serve", "--config", "small.toml", "--print-config"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("max-payload"));
}

#[tokio::test]
async fn a_server_runs_with_its_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("sigil.toml"), "server-name = \"configured\"\nmax-payload = 9000\n").expect("write");
    let server = ServerProcess::start(dir.path(), &["--config", "sigil.toml"]);
    let mut raw = Raw::connect(server.addr.parse().expect("an address")).await;
    raw.send(b"INFO\n0\n\n").await;
    let f = raw.frame().await.expect("SINFO");
    let Ok(ServerEvent::Sinfo(info)) = ServerEvent::decode(f.command.as_str(), &f.payload) else { panic!("not SINFO") };
    assert_eq!((info.server_name.as_str(), info.max_payload), ("configured", 9000));
}

/// SIGHUP reads the file again: connection limits and the log level change at
/// once, anything else is logged as needing a restart.
#[cfg(unix)]
#[tokio::test]
async fn sighup_rereads_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("sigil.toml");
    std::fs::write(&file, "max-connections-per-ip = 64\n").expect("write");
    let (server, log) = ServerProcess::start_logged(dir.path(), &["--config", "sigil.toml"]);
    let addr: std::net::SocketAddr = server.addr.parse().expect("an address");
    let first = tokio::net::TcpStream::connect(addr).await.expect("connect");
    std::fs::write(&file, "max-connections-per-ip = 1\nmax-payload = 9000\nlog-level = \"debug\"\n").expect("write");
    let hup = Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().expect("kill -HUP");
    assert!(hup.success());
    let changed = ServerProcess::wait_for(&log, "max-connections-per-ip");
    assert!(changed.contains("configuration changed") && changed.contains(r#"to="1""#), "{changed}");
    let restart = ServerProcess::wait_for(&log, "max-payload");
    assert!(restart.contains("restart to apply"), "{restart}");
    ServerProcess::wait_for(&log, "configuration reloaded");
    // The new per-address limit holds at once: one connection is open already.
    let mut second = Raw::connect(addr).await;
    let (_, err) = second.expect_fatal(sigil_proto::ErrorCode::RateLimited).await;
    assert!(err.reason.contains("your address"), "{}", err.reason);
    drop(first);
}

/// `--log-format json`: one JSON object per line, and a line about a session
/// names it, its account and the peer's address.
#[tokio::test]
async fn json_logs_name_the_session_account_and_peer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = sigil_server::store::Store::open(&dir.path().join("sigil.db")).expect("store");
    let a = store.add_account("alice", support::now()).expect("account");
    drop(store);
    let alice = sigil_client::Credentials { id: a.id, name: a.name, key: a.key };
    let (server, log) = ServerProcess::start_logged(dir.path(), &["--log-format", "json"]);
    let addr: std::net::SocketAddr = server.addr.parse().expect("an address");
    let client = sigil_client::Client::connect(addr, &alice).await.expect("connect");
    let line = ServerProcess::wait_for(&log, "authenticated");
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    let fields = &event["fields"];
    assert_eq!(fields["message"], "authenticated");
    assert_eq!(fields["name"], "alice");
    assert_eq!(fields["account"], alice.id.to_string());
    assert!(fields["conn"].as_u64().is_some(), "{line}");
    let local = client_addr(&line);
    assert!(local.starts_with("127.0.0.1:"), "{line}");
    drop(client);
    let line = ServerProcess::wait_for(&log, "disconnected");
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["fields"]["name"], "alice");
}

fn client_addr(line: &str) -> String {
    let event: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    event["fields"]["peer"].as_str().unwrap_or_default().to_owned()
}

/// The example configuration in `contrib/` is one `sigil serve` reads.
#[test]
fn the_contrib_example_reads() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/sigil.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = sigil(dir.path(), &["serve", "--config", example.to_str().expect("utf-8 path"), "--print-config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(setting(&printed, "log-format"), Some("\"json\""));
    assert_eq!(setting(&printed, "db"), Some("\"/var/lib/sigil/sigil.db\""));
}
