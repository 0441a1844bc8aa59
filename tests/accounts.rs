//! Accounts changing while the server runs, and persistence across restarts
//! (PROTOCOL.md §6, §8, §9).

mod support;

use sigil_client::Credentials;
use sigil_proto::{Command, ErrorCode, ServerEvent};
use sigil_server::store::Store;
use support::*;

#[tokio::test]
async fn account_added_and_removed_while_running() {
    let ts = TestServer::start(&["alice", "bob"], |_| {}).await;
    let mut alice = ts.connect("alice").await;
    let mut bob = ts.connect("bob").await;
    let _ = next(&mut alice).await; // UCNN bob

    // Another process (here: another connection to the same file) adds carol.
    let carol = Store::open(&ts.db()).unwrap().add_account("carol", now()).unwrap();
    let added = until(&mut alice, |ev| if let ServerEvent::UsrAdd(u) = ev { Some(u) } else { None }).await;
    assert_eq!((added.id, added.name.as_str(), added.status.as_str()), (carol.id, "carol", "offline"));
    // carol can connect at once.
    let carol_cred = Credentials { id: carol.id, name: carol.name.clone(), key: carol.key.clone() };
    let _carol = sigil_client::Client::connect(ts.addr, &carol_cred).await.expect("new account connects");

    // bob is removed: his session is closed, everyone else learns it.
    Store::open(&ts.db()).unwrap().remove_account("bob").unwrap();
    let e = until(&mut bob, |ev| if let ServerEvent::Err(e) = ev { Some(e) } else { None }).await;
    assert_eq!(code(&e), ErrorCode::AccountRemoved);
    closed(&mut bob).await;
    let bob_id = ts.user("bob").id;
    until(&mut alice, |ev| matches!(ev, ServerEvent::Udcnn(u) if u.id == bob_id && u.name == "bob").then_some(()))
        .await;
    until(&mut alice, |ev| matches!(ev, ServerEvent::UsrRmd(u) if u.id == bob_id).then_some(())).await;
    // And his key no longer works.
    let mut raw = ts.raw().await;
    let bob_cred = ts.user("bob");
    raw.send_request(&bob_cred, Command::Cnn { id: bob_cred.id, batch: false, bind: false }, rand::random(), now())
        .await;
    raw.expect_fatal(ErrorCode::AuthFailed).await;
}

#[tokio::test]
async fn rotated_key_closes_the_session_and_only_the_new_key_works() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    let mut alice = ts.connect("alice").await;
    let rotated = Store::open(&ts.db()).unwrap().rotate_key("alice").unwrap();
    let e = until(&mut alice, |ev| if let ServerEvent::Err(e) = ev { Some(e) } else { None }).await;
    assert_eq!(code(&e), ErrorCode::AuthFailed);
    closed(&mut alice).await;
    let old = ts.user("alice");
    assert!(sigil_client::Client::connect(ts.addr, &old).await.is_err());
    let new = Credentials { key: rotated.key, ..old };
    sigil_client::Client::connect(ts.addr, &new).await.expect("the new key works");
}

#[tokio::test]
async fn restart_keeps_accounts() {
    let mut ts = TestServer::start(&["alice", "bob"], |_| {}).await;
    let _ = ts.connect("alice").await;
    ts.restart(|_| {}).await;
    let mut alice = ts.connect("alice").await;
    let _bob = ts.connect("bob").await;
    alice.send(Command::LstUsr { all: false }).await.unwrap();
    let l = until(&mut alice, |ev| if let ServerEvent::UsrLst(l) = ev { Some(l) } else { None }).await;
    assert_eq!(l.users.len(), 2);
}

#[tokio::test]
async fn frames_captured_before_a_restart_cannot_be_replayed_after_it() {
    let mut ts = TestServer::start(&["alice"], |_| {}).await;
    let alice = ts.user("alice");
    // Frames stamped before a server's start second are refused, so let this one age first.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let mut raw = ts.raw().await;
    // Stamped a second ago: inside the skew window, before the restart.
    let captured =
        raw.send_request(&alice, Command::Cnn { id: alice.id, batch: false, bind: false }, 7, now() - 1).await;
    assert_eq!(raw.frame().await.unwrap().command.as_str(), "UCNN");
    ts.restart(|_| {}).await;
    let mut replay = ts.raw().await;
    replay.send(&captured).await;
    replay.expect_fatal(ErrorCode::Stale).await;
    // A fresh CNN works.
    let _ = ts.connect("alice").await;
}

#[tokio::test]
async fn shutdown_tells_every_client() {
    let mut ts = TestServer::start(&["alice"], |_| {}).await;
    let mut alice = ts.connect("alice").await;
    let mut raw = ts.raw().await;
    raw.send(b"INFO\n0\n\n").await;
    assert_eq!(raw.frame().await.unwrap().command.as_str(), "SINFO");
    ts.stop().await;
    let e = next_err(&mut alice).await;
    assert_eq!(code(&e), ErrorCode::Shutdown);
    closed(&mut alice).await;
    let (f, _) = raw.expect_fatal(ErrorCode::Shutdown).await;
    assert!(f.signature.is_none(), "unauthenticated connections get it unsigned");
}

#[tokio::test]
async fn a_new_account_signs_in_as_soon_as_it_is_added() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    // Several in a row, each signing in right away: none may wait for the
    // server's next poll of the accounts (nor fail because of it).
    for i in 0..5 {
        let added = Store::open(&ts.db()).unwrap().add_account(&format!("new{i}"), now()).unwrap();
        let cred = Credentials { id: added.id, name: added.name.clone(), key: added.key.clone() };
        let mut raw = ts.raw().await;
        raw.authenticate(&cred).await;
    }
    // A rotated key works at once too.
    let rotated = Store::open(&ts.db()).unwrap().rotate_key("alice").unwrap();
    let cred = Credentials { id: rotated.id, name: rotated.name.clone(), key: rotated.key.clone() };
    ts.raw().await.authenticate(&cred).await;
    // And a wrong key is still refused.
    let mut raw = ts.raw().await;
    let stale = ts.user("alice");
    raw.send_request(&stale, Command::Cnn { id: stale.id, batch: false, bind: false }, rand::random(), now()).await;
    raw.expect_fatal(ErrorCode::AuthFailed).await;
}
