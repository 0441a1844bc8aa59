//! The referee's states and transitions, driven message by message.

use super::*;

const ALICE: Ulid = Ulid::from_parts(1, 1);
const BOB: Ulid = Ulid::from_parts(1, 2);
const CAROL: Ulid = Ulid::from_parts(1, 3);
const DAVE: Ulid = Ulid::from_parts(1, 4);

fn referee() -> Referee {
    let mut n = 0;
    Referee::new(Rules { max_games: 2, grace_ms: 1_000 }, move || {
        n += 1;
        format!("g{n}")
    })
}

/// Sends `request` from `who`; returns the replies per recipient.
fn say(r: &mut Referee, who: Ulid, seq: u64, request: Request) -> Vec<Action> {
    let name = match who {
        ALICE => "alice",
        BOB => "bob",
        CAROL => "carol",
        _ => "dave",
    };
    r.on_message(who, name, &Incoming { v: VERSION, seq, request }.to_json(), 0)
}

fn replies_to(actions: &[Action], who: Ulid) -> Vec<Reply> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, message } if *to == who => Some(message.reply.clone()),
            _ => None,
        })
        .collect()
}

fn answer(actions: &[Action], who: Ulid, seq: u64) -> Reply {
    let answers: Vec<&Outgoing> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, message } if *to == who && message.re == Some(seq) => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "exactly one answer to {seq}: {actions:?}");
    answers[0].reply.clone()
}

fn code(reply: &Reply) -> &str {
    match reply {
        Reply::Error { code, .. } => code,
        other => panic!("not an error: {other:?}"),
    }
}

fn posts(actions: &[Action]) -> Vec<Record> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Post { text, .. } => Record::parse(text),
            _ => None,
        })
        .collect()
}

/// alice (1, red) and bob (2, yellow) in game g1, started.
fn started() -> Referee {
    let mut r = referee();
    let a = say(&mut r, ALICE, 1, Request::Join { game: None });
    assert_eq!(answer(&a, ALICE, 1), Reply::Joined { game: "g1".into(), player: 1, channel: "c4-g1".into() });
    // The channel is created before anyone is told its name.
    assert!(matches!(a.first(), Some(Action::OpenChannel { channel }) if channel == "c4-g1"), "{a:?}");
    let b = say(&mut r, BOB, 1, Request::Join { game: None });
    assert_eq!(answer(&b, BOB, 1), Reply::Joined { game: "g1".into(), player: 2, channel: "c4-g1".into() });
    assert!(!b.iter().any(|x| matches!(x, Action::OpenChannel { .. })));
    let starts: Vec<Reply> = replies_to(&b, ALICE);
    assert!(matches!(&starts[0], Reply::GameStart { colour, opponent, .. } if colour == "red" && opponent == "bob"));
    assert_eq!(starts[1], Reply::RequestMove { game: "g1".into(), cursor: 3 });
    assert!(matches!(&replies_to(&b, BOB)[1], Reply::GameStart { colour, .. } if colour == "yellow"));
    r
}

#[test]
fn a_join_gets_a_seat_and_two_players_start_a_game() {
    let mut r = started();
    // A third player gets a new game; a join of a full game is refused.
    let c = say(&mut r, CAROL, 1, Request::Join { game: Some("g1".into()) });
    assert!(matches!(answer(&c, CAROL, 1), Reply::Full { .. }));
    let c = say(&mut r, CAROL, 2, Request::Join { game: None });
    assert!(matches!(answer(&c, CAROL, 2), Reply::Joined { player: 1, ref game, .. } if game == "g2"));
    assert_eq!(r.games(), 2);
    // At the most games, a join that needs a new game is refused.
    let d = say(&mut r, DAVE, 1, Request::Join { game: None });
    assert!(matches!(answer(&d, DAVE, 1), Reply::Joined { player: 2, .. }));
    let e = say(&mut r, Ulid::from_parts(1, 5), 1, Request::Join { game: None });
    assert!(matches!(answer(&e, Ulid::from_parts(1, 5), 1), Reply::Full { .. }));
    // A second join tells the seat again.
    let a = say(&mut r, ALICE, 9, Request::Join { game: None });
    assert!(matches!(answer(&a, ALICE, 9), Reply::Joined { player: 1, .. }));
}

#[test]
fn the_cursor_moves_and_a_drop_passes_the_turn() {
    let mut r = started();
    assert_eq!(answer(&say(&mut r, ALICE, 2, Request::Left), ALICE, 2), Reply::Cursor { game: "g1".into(), cursor: 2 });
    for seq in 3..10 {
        say(&mut r, ALICE, seq, Request::Left);
    }
    assert_eq!(
        answer(&say(&mut r, ALICE, 10, Request::Right), ALICE, 10),
        Reply::Cursor { game: "g1".into(), cursor: 1 }
    );
    let d = say(&mut r, ALICE, 11, Request::Drop { column: None });
    assert_eq!(answer(&d, ALICE, 11), Reply::MoveReceived { game: "g1".into(), column: 1, row: 0 });
    let to_bob = replies_to(&d, BOB);
    assert_eq!(to_bob[0], Reply::Moved { game: "g1".into(), player: 1, column: 1, row: 0 });
    assert_eq!(to_bob[1], Reply::RequestMove { game: "g1".into(), cursor: 3 });
    assert_eq!(posts(&d), [Record::Move { player: 1, column: 1, row: 0 }]);
}

#[test]
fn out_of_turn_full_columns_and_strangers_are_refused_without_changing_anything() {
    let mut r = started();
    assert_eq!(code(&answer(&say(&mut r, BOB, 2, Request::Drop { column: None }), BOB, 2)), "not_your_turn");
    assert_eq!(code(&answer(&say(&mut r, BOB, 3, Request::Right), BOB, 3)), "not_your_turn");
    assert_eq!(code(&answer(&say(&mut r, CAROL, 1, Request::Drop { column: None }), CAROL, 1)), "not_in_game");
    assert_eq!(code(&answer(&say(&mut r, ALICE, 2, Request::Drop { column: Some(9) }), ALICE, 2)), "no_such_column");
    // Fill column 0 (alternating), then it refuses a seventh disc.
    let mut seq = 10;
    for i in 0..6 {
        let who = if i % 2 == 0 { ALICE } else { BOB };
        seq += 1;
        let d = say(&mut r, who, seq, Request::Drop { column: Some(0) });
        assert!(matches!(answer(&d, who, seq), Reply::MoveReceived { .. }));
    }
    let before = r.state(ALICE);
    assert_eq!(code(&answer(&say(&mut r, ALICE, 99, Request::Drop { column: Some(0) }), ALICE, 99)), "column_full");
    assert_eq!(r.state(ALICE), before);
    // Garbage is refused in words, with the seq when it can be read.
    let g = r.on_message(ALICE, "alice", "{\"v\":1,\"seq\":5,\"type\":\"teleport\"}", 0);
    assert_eq!(code(&answer(&g, ALICE, 5)), "bad_message");
    let g = r.on_message(ALICE, "alice", "hi!", 0);
    assert!(matches!(replies_to(&g, ALICE).as_slice(), [Reply::Error { .. }]));
    assert_eq!(r.state(ALICE), before);
}

#[test]
fn four_in_a_row_ends_the_game_and_ready_from_both_starts_another() {
    let mut r = started();
    let mut seq = 1;
    let mut last = Vec::new();
    for (who, column) in [(ALICE, 0), (BOB, 6), (ALICE, 1), (BOB, 6), (ALICE, 2), (BOB, 6), (ALICE, 3)] {
        seq += 1;
        last = say(&mut r, who, seq, Request::Drop { column: Some(column) });
    }
    let over = Reply::GameOver {
        game: "g1".into(),
        winner: Some(1),
        reason: EndReason::Win,
        line: vec![[0, 0], [1, 0], [2, 0], [3, 0]],
    };
    assert_eq!(replies_to(&last, ALICE).last(), Some(&over));
    assert_eq!(replies_to(&last, BOB).last(), Some(&over));
    assert_eq!(posts(&last).last(), Some(&Record::Over { winner: Some(1), reason: EndReason::Win }));
    // Both not ready: moves are refused; one ready is not enough.
    assert_eq!(code(&answer(&say(&mut r, BOB, 50, Request::Drop { column: None }), BOB, 50)), "not_playing");
    let a = say(&mut r, ALICE, 51, Request::Ready);
    assert_eq!(answer(&a, ALICE, 51), Reply::Ack);
    assert!(replies_to(&a, BOB).is_empty());
    let b = say(&mut r, BOB, 52, Request::Ready);
    assert!(replies_to(&b, ALICE).iter().any(|m| matches!(m, Reply::GameStart { .. })));
    assert!(!b.iter().any(|a| matches!(a, Action::OpenChannel { .. })), "the pair keeps its channel");
    assert!(matches!(posts(&b).as_slice(), [Record::Start { .. }]));
}

#[test]
fn leaving_ends_the_game_for_both_and_frees_the_seats() {
    let mut r = started();
    let l = say(&mut r, BOB, 2, Request::Leave);
    let over = |winner| Reply::GameOver { game: "g1".into(), winner, reason: EndReason::PlayerLeft, line: vec![] };
    assert_eq!(answer(&l, BOB, 2), over(None));
    assert_eq!(replies_to(&l, ALICE), [over(None)]);
    assert!(l.contains(&Action::CloseChannel { channel: "c4-g1".into() }));
    assert_eq!(r.games(), 0);
    assert_eq!(r.game_of(ALICE), None);
    assert_eq!(code(&answer(&say(&mut r, ALICE, 3, Request::Ready), ALICE, 3)), "not_in_game");
    // The bot waits for players again.
    let c = say(&mut r, CAROL, 1, Request::Join { game: None });
    assert!(matches!(answer(&c, CAROL, 1), Reply::Joined { player: 1, .. }));
}

#[test]
fn a_player_away_past_the_grace_period_forfeits() {
    let mut r = started();
    r.on_offline(BOB, 10_000);
    assert!(r.tick(10_500).is_empty(), "within the grace period");
    r.on_online(BOB);
    assert!(r.tick(20_000).is_empty(), "came back in time");
    r.on_offline(BOB, 30_000);
    let t = r.tick(31_000);
    let over = Reply::GameOver { game: "g1".into(), winner: Some(1), reason: EndReason::Forfeit, line: vec![] };
    assert_eq!(replies_to(&t, ALICE), [over]);
    assert_eq!(posts(&t), [Record::Over { winner: Some(1), reason: EndReason::Forfeit }]);
    assert_eq!(r.games(), 0);
}

#[test]
fn every_message_is_answered_once() {
    let mut r = started();
    let requests = [
        Request::State,
        Request::Left,
        Request::Right,
        Request::Ready,
        Request::Drop { column: None },
        Request::Join { game: None },
        Request::Leave,
    ];
    for (i, request) in requests.into_iter().enumerate() {
        for who in [ALICE, BOB, CAROL] {
            let seq = 100 + i as u64;
            let _ = answer(&say(&mut r, who, seq, request.clone()), who, seq);
        }
    }
}

#[test]
fn a_player_who_missed_messages_is_told_the_game_as_it_stands() {
    let mut r = started();
    say(&mut r, ALICE, 2, Request::Drop { column: Some(4) });
    let told = r.resync(BOB);
    match replies_to(&told, BOB).as_slice() {
        [Reply::State { phase, turn, rows, .. }] => {
            assert_eq!((phase.as_str(), *turn), ("playing", Some(2)));
            assert_eq!(rows[5], "....1..");
        }
        other => panic!("{other:?}"),
    }
    assert!(r.resync(CAROL).is_empty(), "nobody to tell: carol has no seat");
}
