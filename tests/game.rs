//! Connect four end to end (spec/GAME.md): the real server, the referee bot
//! (`sigil game serve`), two scripted players (`sigil game play --plain`)
//! playing a whole game, refusals, a rematch, a "leave", and
//! `sigil game replay` reading the game back from its channel.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::lines::LineProcess;
use support::{account_dir, ServerProcess};

const WAIT: Duration = Duration::from_secs(15);

fn sigil(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sigil"));
    command.current_dir(dir);
    command
}

/// A server on the accounts `names` (`connect4` among them) and the bot
/// refereeing on it: the directory, the server and the bot.
fn with_bot(names: &[&str]) -> (tempfile::TempDir, ServerProcess, LineProcess) {
    let dir = account_dir(names);
    let server = ServerProcess::start(dir.path(), &[]);
    let mut bot = LineProcess::spawn({
        let mut c = sigil(dir.path());
        c.args(["game", "serve", &server.addr, "--cred", "connect4.cred"]);
        c
    });
    bot.expect("refereeing connect four");
    (dir, server, bot)
}

fn player(dir: &Path, addr: &str, name: &str) -> LineProcess {
    let mut command = sigil(dir);
    command.args(["game", "play", addr, "--cred", &format!("{name}.cred"), "--plain"]);
    LineProcess::spawn(command)
}

#[test]
fn two_players_play_a_game_refereed_by_the_bot_and_it_replays_from_its_channel() {
    let (dir, server, _bot) = with_bot(&["connect4", "alice", "bob", "carol"]);
    let d = dir.path();
    let addr = server.addr.clone();

    let mut alice = player(d, &addr, "alice");
    let joined = alice.expect("joined game");
    let game = joined.split_whitespace().nth(2).expect("the game id").to_owned();
    assert!(joined.contains("as player 1"), "{joined}");
    let mut bob = player(d, &addr, "bob");
    assert!(bob.expect("joined game").contains(&format!("{game} as player 2")));
    alice.expect("game start: you are red (player 1) against bob");
    bob.expect("game start: you are yellow (player 2) against alice");

    // Out of turn, and a column that does not exist: refused, nothing changes.
    alice.expect("your move");
    bob.say("drop 3");
    bob.expect("refused (not_your_turn)");
    alice.say("drop 9");
    alice.expect("drop takes a column from 1 to 7");
    // The cursor, then a drop where it stands.
    alice.say("left");
    alice.expect("cursor at column 3");
    alice.say("left");
    alice.say("left");
    alice.expect("cursor at column 1");

    // alice stacks column 1, bob column 2: alice has four first.
    for turn in 0..4 {
        alice.say(if turn == 0 { "drop" } else { "drop 1" });
        alice.expect("move received");
        bob.expect("alice dropped in column");
        if turn < 3 {
            bob.expect("your move");
            bob.say("drop 2");
            bob.expect("move received");
            alice.expect("bob dropped in column 2");
            alice.expect("your move");
        }
    }
    alice.expect("game over: you win");
    bob.expect("game over: alice wins");
    // Both not ready: a drop is refused until both say ready.
    bob.say("drop 2");
    bob.expect("refused (not_playing)");
    alice.say("ready");
    bob.say("ready");
    alice.expect("game start: you are red");
    bob.expect("game start: you are yellow");
    alice.expect("your move");
    alice.say("drop 4");
    bob.expect("alice dropped in column 4");
    bob.say("leave");
    bob.expect("game over: player left");
    alice.expect("game over: player left");

    // The channel's committed log is the game's record, and only the bot's
    // lines count: carol writes a forged move there first.
    let channel = format!("c4-{game}");
    let mut carol = LineProcess::spawn({
        let mut c = sigil(d);
        c.args(["client", &addr, "--cred", "carol.cred", "--plain"]);
        c
    });
    carol.wait_for("signed in as carol");
    carol.say(&format!("/join {channel}"));
    carol.say("[c4 move 2 6 0] a forged move");
    carol.wait_for("committed in");
    let deadline = Instant::now() + WAIT;
    let replayed = loop {
        let out = sigil(d).args(["game", "replay", &addr, "--cred", "carol.cred", &channel]).output().expect("replay");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // The last lines are committed a moment after the players hear of them.
        if text.contains("game over: player left") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(replayed.contains("alice (red, X) plays bob (yellow, O)"), "{replayed}");
    assert!(replayed.contains("game over: alice wins"), "{replayed}");
    assert!(replayed.contains("move 7: alice (red) drops in column 1"), "{replayed}");
    assert!(replayed.contains("X . . . . . .\nX O . . . . .\nX O . . . . .\nX O . . . . ."), "{replayed}");
    assert!(replayed.contains("game over: player left"), "{replayed}");
    assert!(!replayed.contains("column 7"), "the forged move is not part of the record:\n{replayed}");
    // An unknown channel is named in the error.
    let out = sigil(d).args(["game", "replay", &addr, "--cred", "carol.cred", "c4-nope"]).output().expect("replay");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("c4-nope"), "{out:?}");
}

#[test]
fn a_player_without_a_bot_is_told_its_name_is_wrong() {
    let dir = account_dir(&["alice"]);
    let d = dir.path();
    let server = ServerProcess::start(d, &[]);
    let out = sigil(d)
        .args(["game", "play", &server.addr, "--cred", "alice.cred", "--plain", "--bot", "referee"])
        .stdin(Stdio::null())
        .output()
        .expect("play");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account is named \"referee\""), "{out:?}");
}

#[test]
fn the_full_screen_player_moves_with_arrow_keys_drops_with_enter_and_leaves_with_q() {
    if !support::tmux::tmux_or_skip("the_full_screen_player") {
        return;
    }
    let (dir, server, _bot) = with_bot(&["connect4", "alice", "bob"]);
    let d = dir.path();
    let addr = server.addr.clone();
    let tmux = support::tmux::Tmux::new("game");
    tmux.start("alice", d, &format!("game play {addr} --cred alice.cred"));
    tmux.wait_for("alice", "waiting for another player");
    let mut bob = player(d, &addr, "bob");
    bob.expect("game start");
    // alice is red and moves first: the cursor starts in the middle.
    tmux.wait_for("alice", "your turn");
    tmux.keys("alice", &["Left", "Left"]);
    tmux.wait_for("alice", "cursor at column 2");
    tmux.keys("alice", &["Enter"]);
    bob.expect("alice dropped in column 2");
    let screen = tmux.wait_for("alice", "the other player's turn");
    assert!(screen.contains("you are red against bob"), "{screen}");
    // The disc is drawn in column 2 of the bottom row.
    let bottom = screen.lines().find(|l| l.contains('●')).unwrap_or_else(|| panic!("no disc drawn:\n{screen}"));
    assert_eq!(bottom.chars().position(|c| c == '●'), Some(5), "column 2 of the board:\n{screen}");
    tmux.keys("alice", &["q"]);
    bob.expect("game over: player left");
    tmux.wait_for("alice", "sigil exited with 0");
}

#[test]
fn a_player_back_from_a_dropped_connection_is_told_the_game_as_it_stands() {
    let (dir, server, _bot) = with_bot(&["connect4", "alice", "bob"]);
    let d = dir.path();
    let addr = server.addr.clone();
    let mut alice = player(d, &addr, "alice");
    alice.expect("joined game");
    let mut bob = player(d, &addr, "bob");
    bob.expect("game start");
    alice.expect("your move");
    // bob's connection drops (no leave); alice moves: the bot's news cannot reach him.
    drop(bob);
    alice.say("drop 1");
    alice.expect("move received");
    // bob is back within the grace period: the bot tells him where the game stands.
    let mut bob = player(d, &addr, "bob");
    bob.expect("state: playing");
    bob.expect("X . . . . . .");
    bob.say("drop 2");
    bob.expect("move received");
    alice.expect("bob dropped in column 2");
}
