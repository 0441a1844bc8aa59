import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  GameView,
  parseGameMessage,
  parseRecord,
  replayRecords,
  spectatorWords,
  boardFromRows,
  rowsOf,
  fourThrough,
  emptyBoard,
} from '../src/game.js';
import { Chat } from '../src/chat.js';
import { parseEvent } from '../src/events.js';
import { decodePayload, encodePayload } from '../src/payload.js';

/** The bot's side: numbered messages, `re` when they answer one of ours. */
function botSays() {
  let seq = 0;
  return (type, fields = {}, re) => JSON.stringify({ v: 1, seq: ++seq, ...(re === undefined ? {} : { re }), type, ...fields });
}
const seqOf = (request) => JSON.parse(request).seq;

/** A view seated as player 1 (red) against dave, at its first move. */
function redAgainstDave() {
  const bot = botSays();
  const v = new GameView({ bot: 'connect4' });
  const join = v.request('join');
  assert.deepEqual(JSON.parse(join), { v: 1, seq: 1, type: 'join' });
  assert.equal(v.phase, 'joining');
  assert.equal(v.headline(), 'Asking connect4 for a seat…');
  const joined = v.onMessage(bot('joined', { game: 'G1', player: 1, channel: 'c4-G1' }, seqOf(join)));
  assert.deepEqual(joined.after, ['state'], 'a seat is followed by asking where the game stands');
  assert.equal(joined.line, 'Joined a game as red (player 1)');
  assert.equal(v.channel, 'c4-G1');
  assert.equal(v.phase, 'waiting');
  assert.equal(v.headline(), 'Waiting for another player…');
  assert.equal(v.canMove, false);
  v.onMessage(bot('state', { game: 'G1', player: 1, phase: 'waiting', turn: null, cursor: null, rows: Array(6).fill('.......') }, seqOf(v.request('state'))));
  assert.equal(v.phase, 'waiting');
  const start = v.onMessage(bot('game_start', { game: 'G1', player: 1, colour: 'red', opponent: 'dave', channel: 'c4-G1' }));
  assert.equal(start.line, 'Game on: you are red against dave');
  assert.equal(v.canMove, false, 'no move before the bot asks for it');
  v.onMessage(bot('request_move', { game: 'G1', cursor: 3 }));
  assert.equal(v.canMove, true);
  assert.equal(v.headline(), 'Your turn');
  return { v, bot };
}

test('a short game: joined, the cursor, drops both ways, four in a row, game over', () => {
  const { v, bot } = redAgainstDave();
  for (let turn = 0; turn < 4; turn++) {
    const left = v.request('left');
    assert.deepEqual(JSON.parse(left), { v: 1, seq: seqOf(left), type: 'left' });
    assert.equal(v.onMessage(bot('cursor', { game: 'G1', cursor: 2 }, seqOf(left))).line, null, 'cursor moves are no news');
    assert.equal(v.cursor, 2);
    const drop = v.request('drop');
    assert.deepEqual(JSON.parse(drop), { v: 1, seq: seqOf(drop), type: 'drop' });
    assert.equal(v.canMove, false, 'no second drop while one is on its way');
    const got = v.onMessage(bot('move_received', { game: 'G1', column: 2, row: turn }, seqOf(drop)));
    assert.equal(got.line, null, 'moves are on the board, not in the conversation');
    assert.equal(v.detail(), 'You dropped in column 3.');
    assert.equal(v.board[2][turn], 1);
    if (turn === 3) break;
    assert.equal(v.myTurn, false);
    assert.equal(v.headline(), "dave's turn");
    v.onMessage(bot('moved', { game: 'G1', player: 2, column: 0, row: turn }));
    assert.equal(v.detail(), 'dave dropped in column 1.');
    assert.equal(v.onMessage(bot('request_move', { game: 'G1', cursor: 3 })).notable, true, 'your turn is news');
    assert.equal(v.cursor, 3, 'the cursor starts in the middle each turn');
  }
  const line = [[2, 0], [2, 1], [2, 2], [2, 3]];
  const over = v.onMessage(bot('game_over', { game: 'G1', winner: 1, reason: 'win', line }));
  assert.equal(over.line, 'You win!');
  assert.equal(v.phase, 'over');
  assert.equal(v.headline(), 'You win!');
  assert.deepEqual(v.line, line);
  assert.equal(v.canMove, false);
  assert.equal(v.canReady, true);
  assert.equal(v.seated, true, 'a win keeps the seats for a rematch');
  assert.deepEqual(rowsOf(v.board), ['.......', '.......', '..1....', '2.1....', '2.1....', '2.1....']);
});

test('a refusal is said in words and changes nothing', () => {
  const { v, bot } = redAgainstDave();
  const drop = v.request('drop', { column: 6 });
  assert.equal(JSON.parse(drop).column, 6);
  const before = rowsOf(v.board);
  const r = v.onMessage(bot('error', { code: 'column_full', reason: 'column 6 is full' }, seqOf(drop)));
  assert.equal(r.line, 'Refused: That column is full: pick another one.');
  assert.equal(v.error, 'That column is full: pick another one.');
  assert.deepEqual(rowsOf(v.board), before);
  assert.equal(v.canMove, true, 'a refused drop may be tried again');
  v.request('left');
  assert.equal(v.error, null, 'the next request clears the refusal');
  v.onMessage(bot('error', { code: 'something_new', reason: 'the moon is full' }));
  assert.equal(v.error, 'The bot refused: the moon is full');
  assert.throws(() => v.request('drop', { column: 7 }));
  assert.throws(() => v.request('fly'));
});

test('the other player wins; ready and a rematch; a full bot', () => {
  const { v, bot } = redAgainstDave();
  v.onMessage(bot('move_received', { game: 'G1', column: 0, row: 0 }, seqOf(v.request('drop', { column: 0 }))));
  v.onMessage(bot('moved', { game: 'G1', player: 2, column: 1, row: 0 }));
  v.onMessage(bot('game_over', { game: 'G1', winner: 2, reason: 'win', line: [[1, 0], [2, 0], [3, 0], [4, 0]] }));
  assert.equal(v.headline(), 'dave wins');
  assert.match(v.detail(), /Play again/);
  const ready = v.request('ready');
  assert.equal(JSON.parse(ready).type, 'ready');
  assert.equal(v.onMessage(bot('ack', {}, seqOf(ready))).line, null);
  assert.equal(v.canReady, false);
  assert.match(v.detail(), /waiting for dave to be ready/);
  v.onMessage(bot('game_start', { game: 'G1', player: 1, colour: 'red', opponent: 'dave', channel: 'c4-G1' }));
  assert.equal(v.phase, 'playing');
  assert.deepEqual(v.line, [], 'a new game, a new board');
  assert.ok(rowsOf(v.board).every((r) => r === '.......'));

  const other = new GameView({ bot: 'connect4' });
  other.request('join');
  other.onMessage(botSays()('full', { reason: 'game is full: 64 games are being played' }, 1));
  assert.equal(other.phase, 'full');
  assert.equal(other.canJoin, true);
  assert.match(other.error, /64 games/);
});

test('leaving: mine and the other player’s; a draw; a forfeit', () => {
  const { v, bot } = redAgainstDave();
  const leave = v.request('leave');
  const r = v.onMessage(bot('game_over', { game: 'G1', winner: null, reason: 'player_left' }, seqOf(leave)));
  assert.equal(r.line, 'Game over: you left');
  assert.equal(v.seated, false);
  assert.equal(v.canJoin, true);
  assert.equal(v.canReady, false);
  assert.equal(v.detail(), 'Press New game to play again.');

  const b = redAgainstDave();
  b.v.onMessage(b.bot('game_over', { game: 'G1', reason: 'player_left' }));
  assert.equal(b.v.headline(), 'Game over: dave left');
  const c = redAgainstDave();
  c.v.onMessage(c.bot('game_over', { game: 'G1', winner: null, reason: 'draw' }));
  assert.equal(c.v.headline(), 'A draw: the board is full');
  assert.equal(c.v.seated, true);
  const d = redAgainstDave();
  d.v.onMessage(d.bot('game_over', { game: 'G1', winner: 1, reason: 'forfeit' }));
  assert.equal(d.v.headline(), 'You win: dave was away too long');
  assert.equal(d.v.seated, false);
});

test('yellow waits for red; a state reply rebuilds the board after a reload', () => {
  const bot = botSays();
  const v = new GameView({ bot: 'connect4' });
  v.onMessage(bot('joined', { game: 'G2', player: 2, channel: 'c4-G2' }, seqOf(v.request('join'))));
  v.onMessage(bot('game_start', { game: 'G2', player: 2, colour: 'yellow', opponent: 'alice', channel: 'c4-G2' }));
  assert.equal(v.headline(), "alice's turn");
  assert.equal(v.canMove, false);
  v.onMessage(bot('moved', { game: 'G2', player: 1, column: 3, row: 0 }));
  assert.equal(v.board[3][0], 1);

  // A page opened again: the same seat said again, then the state.
  const fresh = new GameView({ bot: 'connect4' });
  const again = bot('joined', { game: 'G2', player: 2, channel: 'c4-G2' }, seqOf(fresh.request('join')));
  assert.deepEqual(fresh.onMessage(again).after, ['state']);
  const rows = ['.......', '.......', '.......', '.......', '...2...', '..11...'];
  fresh.onMessage(bot('state', { game: 'G2', player: 2, phase: 'playing', turn: 2, cursor: 3, rows }, seqOf(fresh.request('state'))));
  assert.equal(fresh.phase, 'playing');
  assert.equal(fresh.canMove, true);
  assert.deepEqual(rowsOf(fresh.board), rows);
  assert.equal(fresh.headline(), 'Your turn');
  // The bot no longer knows us (it restarted): the game is over.
  fresh.onMessage(bot('state', { game: null, player: null, phase: 'waiting', turn: null, cursor: null, rows: Array(6).fill('.......') }));
  assert.equal(fresh.seated, false);
  assert.equal(fresh.phase, 'over');
  assert.match(fresh.headline(), /no longer has this game/);
});

test('only game messages are game messages', () => {
  assert.equal(parseGameMessage('hello'), null);
  assert.equal(parseGameMessage('{"hello": 1}'), null);
  assert.equal(parseGameMessage('{"v":2,"seq":1,"type":"ack"}'), null);
  assert.equal(parseGameMessage('{"v":1,"seq":1,"type":"fly"}'), null);
  assert.equal(parseGameMessage('{"v":1,"seq":1,"type":"cursor","game":"g","cursor":9}'), null, 'a cursor off the board');
  assert.equal(parseGameMessage('[1,2]'), null);
  assert.equal(parseGameMessage('{"v":1,"seq":1,"type":"state"}').kind, 'request');
  assert.equal(parseGameMessage('{"v":1,"seq":1,"type":"state","game":null,"player":null,"phase":"waiting","turn":null,"cursor":null,"rows":[]}').kind, 'reply');
  assert.equal(parseGameMessage('{"v":1,"seq":4,"type":"join"}').kind, 'request');
  assert.equal(new GameView().onMessage('just chatting'), null);
  assert.deepEqual(boardFromRows(['..2....', '..1....'].concat(Array(4).fill('.......')))[2].slice(4), [1, 2]);
});

test('a spectator replays the channel record: the board, whose turn, the winner and the four', () => {
  const lines = [
    '[c4 start G1 red=carol yellow=dave] carol (red) plays dave (yellow)',
    '[c4 move 1 2 0] player 1 (red) drops in column 3',
    'someone chatting',
    '[c4 move 2 0 0] player 2 (yellow) drops in column 1',
    '[c4 move 1 2 1] player 1 (red) drops in column 3',
  ];
  assert.deepEqual(parseRecord(lines[0]), { type: 'start', game: 'G1', red: 'carol', yellow: 'dave' });
  assert.equal(parseRecord('[c4 move 3 1 0] nope'), null);
  let g = replayRecords(lines);
  assert.equal(g.turn, 2);
  assert.deepEqual(spectatorWords(g), { headline: "dave's turn", detail: 'carol (red) dropped in column 3.' });
  const more = [
    '[c4 move 2 0 1] x',
    '[c4 move 1 2 2] x',
    '[c4 move 2 0 2] x',
    '[c4 move 1 2 3] x',
    '[c4 over win 1] player 1 (red) wins',
  ];
  g = replayRecords([...lines, ...more]);
  assert.equal(spectatorWords(g).headline, 'carol wins');
  assert.deepEqual(g.line.map(([c, r]) => `${c},${r}`).sort(), ['2,0', '2,1', '2,2', '2,3']);
  assert.equal(replayRecords(['hello']), null);
  const diag = emptyBoard();
  for (const [c, r] of [[0, 0], [1, 1], [2, 2], [3, 3]]) diag[c][r] = 2;
  assert.equal(fourThrough(diag, 1, 1).length, 4);
});

// ---- in the chat model ---------------------------------------------------------

const me = { id: '01ARZ3NDEKTSV4RRFFQ69G5FAV', name: 'carol' };
const botId = '01ARZ3NDEKTSV4RRFFQ69G5FB0';
const ev = (command, fields) => parseEvent(command, decodePayload(encodePayload(fields)));
let msgN = 0;
const fromBot = (text) => ev('MSG', { from: botId, msg_id: `01ARZ3NDEKTSV4RRFFQ69G5G${String(++msgN).padStart(2, '0')}`, msg: text, timestamp: 100 + msgN });

test('the chat keeps a game per bot: lines in words, the moves and cursor hidden, no unread for them', () => {
  const c = new Chat(me);
  c.onConnected();
  c.apply(ev('UCNN', { id: botId, name: 'connect4' }));
  const [join] = c.playGame(botId, 100_000);
  assert.equal(join.name, 'PV_MSG');
  assert.deepEqual(JSON.parse(join.fields.msg), { v: 1, seq: 1, type: 'join' });
  const bot = botSays();
  const out = c.apply(fromBot(bot('joined', { game: 'G1', player: 1, channel: 'c4-G1' }, 1)));
  assert.deepEqual(out.map((x) => JSON.parse(x.fields.msg).type), ['state']);
  c.apply(fromBot(bot('game_start', { game: 'G1', player: 1, colour: 'red', opponent: 'dave', channel: 'c4-G1' })));
  c.apply(fromBot(bot('request_move', { game: 'G1', cursor: 3 })));
  const g = c.gameWith(botId);
  assert.equal(g.canMove, true);
  const conv = c.conversations.get(botId);
  assert.equal(conv.unread, 3, 'joined, the start and your turn are news; the follow-up state is not');
  const shown = conv.messages.order.map((m) => m.game?.text).filter(Boolean);
  assert.deepEqual(shown, [
    'You asked connect4 for a game of connect four',
    'Joined a game as red (player 1)',
    'Game on: you are red against dave',
  ]);
  // The bot goes offline: a request is not sent, and the game says why.
  c.apply(ev('UDCNN', { id: botId, name: 'connect4' }));
  assert.deepEqual(c.sendGame(botId, 'drop'), []);
  assert.match(g.error, /connect4 is offline/);
  // Someone who is not a bot asked us for a game: a line in words.
  const bobId = '01ARZ3NDEKTSV4RRFFQ69G5FC0';
  c.apply(ev('MSG', { from: bobId, msg_id: '01ARZ3NDEKTSV4RRFFQ69G5H00', msg: '{"v":1,"seq":1,"type":"join"}', timestamp: 200 }));
  assert.match(c.conversations.get(bobId).messages.order[0].game.text, /asked for a game of connect four/);
  assert.equal(c.gameWith(bobId), null);
  assert.equal(c.snapshot().games[0].with, 'connect4');
});
