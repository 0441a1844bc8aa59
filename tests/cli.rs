//! The `sigil` binary as scripts use it (PROTOCOL.md §9): account commands,
//! `frame` | TCP | `decode`, and shutdown on SIGTERM.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::ServerProcess as Server;

fn sigil(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sigil")).current_dir(dir).args(args).output().expect("run sigil")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "sigil failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fails(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "expected exit 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("sigil: ") && err.contains(needle), "stderr: {err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn account_commands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let json: serde_json::Value = serde_json::from_str(&ok(&sigil(d, &["account", "add", "alice", "--json"]))).unwrap();
    assert_eq!(json["name"], "alice");
    assert_eq!(json["key"].as_str().unwrap().len(), 64);
    assert_eq!(json["id"].as_str().unwrap().len(), 26);
    assert!(!d.join("alice.cred").exists(), "--json writes no file without --out");

    let text = ok(&sigil(d, &["account", "add", "bob"]));
    assert!(text.contains("bob") && text.contains("bob.cred"), "{text}");
    let cred = std::fs::read_to_string(d.join("bob.cred")).unwrap();
    assert!(cred.contains("\"key\""));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(d.join("bob.cred")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(d.join("sigil.db")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    ok(&sigil(d, &["account", "add", "carol", "--out", "c.json", "--db", "sigil.db"]));
    assert!(d.join("c.json").exists());

    let list = ok(&sigil(d, &["account", "list", "--json"]));
    let names: Vec<String> = list
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert!(!list.contains("key"), "list never shows keys");

    let rotated: serde_json::Value =
        serde_json::from_str(&ok(&sigil(d, &["account", "rotate", "ALICE", "--json"]))).unwrap();
    assert_ne!(rotated["key"], json["key"]);
    ok(&sigil(d, &["account", "remove", json["id"].as_str().unwrap()]));

    fails(&sigil(d, &["account", "add", "Bob"]), "taken");
    fails(&sigil(d, &["account", "add", "bad name"]), "invalid name");
    fails(&sigil(d, &["account", "remove", "nobody"]), "no account");
    fails(&sigil(d, &["frame", "info"]), "invalid command name");
    fails(&sigil(d, &["frame", "--cred", "missing.cred", "CNN"]), "missing.cred");
    fails(&sigil(d, &["frame", "--cred", "bob.cred", "PV_MSG", "not json"]), "JSON");
}

#[test]
fn account_add_link_carries_the_credentials_in_the_fragment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = ok(&sigil(d, &["account", "add", "dora", "--link"]));
    let link = text.lines().find(|l| l.starts_with("http")).unwrap_or_else(|| panic!("no link in {text}"));
    let encoded = link.strip_prefix("http://127.0.0.1:7071/#cred=").unwrap_or_else(|| panic!("link {link}"));
    let decoded = base64_url_decode(encoded);
    let from_link: serde_json::Value = serde_json::from_slice(&decoded).expect("the fragment is the .cred JSON");
    let from_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("dora.cred")).unwrap()).unwrap();
    assert_eq!(from_link, from_file);

    // Another page, and the link in --json output.
    let out = ok(&sigil(d, &["account", "add", "eve", "--json", "--link", "https://chat.example/"]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(json["link"].as_str().unwrap().starts_with("https://chat.example/#cred="), "{json}");
    let order: Vec<usize> =
        ["\"id\"", "\"name\"", "\"key\"", "\"link\""].iter().map(|k| out.find(k).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "members in the documented order: {out}");
    let plain = ok(&sigil(d, &["account", "add", "gus", "--json"]));
    assert!(plain.starts_with("{\"id\":") && !plain.contains("link"), "{plain}");
    let refused = sigil(d, &["account", "add", "fay", "--link", "chat.example"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("http://HOST:PORT/"), "{refused:?}");
    assert!(!d.join("fay.cred").exists(), "a refused command line creates nothing");
    // An origin with a path or a trailing slash would never match: refused at once.
    let refused = sigil(d, &["serve", "--web-origin", "https://chat.example/", "--db", "x.db"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("trailing slash"), "{refused:?}");
}

/// base64url without padding, decoded (the test's own, independent of the binary's).
fn base64_url_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).expect("a base64url digit") as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

fn read_until_eof(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).expect("server closes");
    all
}

fn decode(dir: &Path, cred: Option<&str>, bytes: &[u8]) -> Vec<serde_json::Value> {
    let mut args = vec!["decode"];
    if let Some(c) = cred {
        args.extend(["--cred", c]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .current_dir(dir)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = ok(&child.wait_with_output().unwrap());
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn netcat_style_session_with_frame_and_decode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&sigil(d, &["account", "add", "alice"]));
    let server = Server::start(d, &[]);

    // Unsigned INFO, as `printf 'INFO\n0\n\n' | nc ...` sends it; then DCNN is not
    // allowed before CNN, so close our side and read what came.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.write_all(&sigil(d, &["frame", "INFO"]).stdout).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let frames = decode(d, None, &read_until_eof(&mut s));
    assert_eq!(frames[0]["command"], "SINFO");
    assert_eq!(frames[0]["signature"], "none");
    assert_eq!(frames[0]["payload"]["protocol_version"], 0);

    // A signed session built from `sigil frame`.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    for args in [
        &["frame", "--cred", "alice.cred", "CNN"][..],
        &["frame", "--cred", "alice.cred", "LST_USR"],
        &["frame", "--cred", "alice.cred", "DCNN"],
    ] {
        s.write_all(&ok_bytes(&sigil(d, args))).unwrap();
    }
    let frames = decode(d, Some("alice.cred"), &read_until_eof(&mut s));
    let commands: Vec<&str> = frames.iter().map(|f| f["command"].as_str().unwrap()).collect();
    assert_eq!(commands, ["UCNN", "USR_LST"]);
    assert!(frames.iter().all(|f| f["signature"] == "valid"));
    assert_eq!(frames[1]["payload"]["users"][0]["name"], "alice");
}

fn ok_bytes(out: &Output) -> Vec<u8> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout.clone()
}

#[test]
fn sigterm_sends_err_shutdown_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&sigil(d, &["account", "add", "alice"]));
    let mut server = Server::start(d, &[]);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.write_all(&ok_bytes(&sigil(d, &["frame", "--cred", "alice.cred", "CNN"]))).unwrap();
    // Wait for UCNN so the session is registered before the signal.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = [0u8; 5];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"UCNN\n");
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut rest = first.to_vec();
    rest.extend(read_until_eof(&mut s));
    let frames = decode(d, Some("alice.cred"), &rest);
    let last = frames.last().unwrap();
    assert_eq!((last["command"].as_str(), last["payload"]["code"].as_str()), (Some("ERR"), Some("shutdown")));
    assert_eq!(last["signature"], "valid");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(code) = server.child.try_wait().unwrap() {
            assert!(code.success(), "exit status {code}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The database is intact and reopens.
    ok(&sigil(d, &["account", "list"]));
}

#[test]
fn commands_that_read_a_database_refuse_a_missing_one_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [&["account", "list", "--db", "typo.db"][..], &["account", "remove", "bob", "--db", "typo.db"]] {
        let out = sigil(d, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no database at typo.db"), "{args:?}");
    }
    assert!(!d.join("typo.db").exists(), "a mistyped path became an empty database");
    // A file that cannot be opened is named.
    let out = sigil(d, &["serve", "127.0.0.1:0", "--no-web", "--db", "missing-dir/x.db"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("missing-dir/x.db"));
}

#[test]
fn the_terminal_client_ends_quietly_when_its_output_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&sigil(d, &["account", "add", "alice"]));
    let server = Server::start(d, &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .current_dir(d)
        .args(["client", &server.addr, "--cred", "alice.cred"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `sigil client ... | head -0`: the reader is gone before the first line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "exit {}: {err}", out.status);
}

#[test]
fn serve_names_a_web_address_it_cannot_bind_and_web_none_needs_none() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = sigil(d, &["serve", "127.0.0.1:0", "--web", &addr, "--db", "x.db"]);
    fails(&out, &format!("cannot listen on {addr}"));

    // --web none starts no web listener.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .current_dir(d)
        .args(["serve", "127.0.0.1:0", "--web", "none", "--db", "y.db"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sigil serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
        let done = line.contains("listening");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.iter().any(|l| l.contains("listening")), "{seen:?}");
    assert!(!seen.iter().any(|l| l.contains("web listener") || l.contains("browser")), "{seen:?}");
}

#[test]
fn clients_name_the_address_they_cannot_reach() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&sigil(d, &["account", "add", "ann"]));
    // A port nothing listens on: bind one, note it, let it go.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    for args in [
        vec!["client", addr.as_str(), "--cred", "ann.cred", "--plain"],
        vec!["game", "play", addr.as_str(), "--cred", "ann.cred", "--plain"],
        vec!["game", "replay", addr.as_str(), "--cred", "ann.cred", "c4-x"],
    ] {
        fails(&sigil(d, &args), &format!("cannot connect to {addr}"));
    }
}
