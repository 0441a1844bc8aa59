//! The browser client in a real browser: each test runs one scenario of
//! `tests/browser/*.mjs` with Node.js, which starts the real `sigil serve`
//! (this build's binary), drives Debian's headless Chromium through
//! playwright-core, and saves screenshots in `target/browser-screenshots/`.
//!
//! Needs `/usr/bin/chromium`, Node.js and npm (the page is built with npm)
//! and `tests/browser/node_modules` (`scripts/test.sh` installs them all); plain `cargo test` skips these
//! tests with the reason when one is missing, `SIGIL_REQUIRE_TOOLS=1` makes
//! that a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One browser scenario at a time: two Chromiums on a 2-core machine starve
/// each other's timers.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What is missing to run browser tests, if anything.
fn missing() -> Option<String> {
    let chromium = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !chromium.exists() {
        return Some(format!("{} is not installed (apt-get install chromium)", chromium.display()));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    if !root().join("tests/browser/node_modules/playwright-core").exists() {
        return Some("tests/browser/node_modules is missing (npm ci in tests/browser)".into());
    }
    if Command::new("npm").arg("--version").output().is_err() {
        return Some("npm is not installed: this sigil was built without its browser client".into());
    }
    None
}

fn run_scenario(file: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = missing() {
        let required = std::env::var("SIGIL_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(!required, "browser tests are required (SIGIL_REQUIRE_TOOLS=1) but {why}");
        println!("skipped {file}: {why}");
        return;
    }
    let shots = root().join("target/browser-screenshots");
    let script: &Path = &root().join("tests/browser").join(file);
    let output = Command::new("node")
        .arg(script)
        .current_dir(root().join("tests/browser"))
        .env("SIGIL_BIN", env!("CARGO_BIN_EXE_sigil"))
        .env("SIGIL_SCREENSHOTS", &shots)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{file} failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("scenario passed"), "{file} did not finish:\n{stdout}\n{stderr}");
}

/// The browser client's own tests (`npm test` in `web/`: frames, signatures,
/// the agent, the chat and game models, and sessions with this build's
/// server over TCP), none skipped.
#[test]
fn the_browser_client_s_node_tests_pass_against_this_server() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let web = root().join("web");
    if !web.join("node_modules/@noble/hashes").exists() || Command::new("npm").arg("--version").output().is_err() {
        let required = std::env::var("SIGIL_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(!required, "the web tests are required (SIGIL_REQUIRE_TOOLS=1) but web/node_modules is missing");
        println!("skipped the web client's node tests: npm or web/node_modules (npm ci in web) is missing");
        return;
    }
    let output = Command::new("npm")
        .args(["test", "--silent"])
        .current_dir(&web)
        .env("SIGIL_BIN", env!("CARGO_BIN_EXE_sigil"))
        .output()
        .expect("run npm test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "npm test failed:\n{stdout}\n{stderr}");
    for needle in ["# fail 0", "# skipped 0"] {
        assert!(stdout.contains(needle), "npm test: no {needle:?} in\n{stdout}\n{stderr}");
    }
}

#[test]
fn people_chat_in_browsers_and_a_terminal_across_elections_and_a_restart() {
    run_scenario("chat.mjs");
}

#[test]
fn sign_in_with_a_file_remember_me_sign_out_and_a_phone_screen() {
    run_scenario("sign_in.mjs");
}

#[test]
fn connect_four_against_the_bot_with_a_terminal_player_and_a_spectator() {
    run_scenario("game.mjs");
}
