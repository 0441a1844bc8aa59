// Connect four against a referee bot (`sigil game serve`): the bot's
// messages, the player's requests, and the game as a person sees it. Pure:
// no DOM, no sockets, no timers. The bot is the referee: this only mirrors
// what it says (crates/game/src/player.rs is the terminal's twin of it).
//
// The messages are JSON objects in private-message bodies,
// `{"v": 1, "seq": N, "type": "...", ...}`; the bot's answers also carry
// `re`, the `seq` they answer. The game's channel `c4-GAME` holds one record
// line per event (`[c4 start GAME red=A yellow=B] …`, `[c4 move P COL ROW] …`,
// `[c4 over REASON [WINNER]] …`), which `replayRecords` reads back for
// spectators.

export const VERSION = 1;
export const COLUMNS = 7;
export const ROWS = 6;
/** The referee puts the cursor in the middle column at each turn. */
export const START_CURSOR = 3;

/** What a player may ask. `state` is a request too (answered by a `state` with `rows`). */
export const REQUEST_TYPES = new Set(['join', 'ready', 'left', 'right', 'drop', 'leave', 'state']);
/** What the bot answers. */
export const REPLY_TYPES = new Set([
  'ack',
  'joined',
  'full',
  'game_start',
  'request_move',
  'cursor',
  'move_received',
  'moved',
  'game_over',
  'state',
  'error',
]);
const REASONS = new Set(['win', 'draw', 'player_left', 'forfeit']);

/** Player 1 plays red and moves first; player 2 plays yellow. */
export const colourOf = (player) => (player === 1 ? 'red' : player === 2 ? 'yellow' : null);
const other = (player) => (player === 1 ? 2 : 1);

const isInt = (v, lo, hi) => Number.isInteger(v) && v >= lo && v <= hi;
const isStr = (v) => typeof v === 'string';
const isColumn = (v) => isInt(v, 0, COLUMNS - 1);
const isRow = (v) => isInt(v, 0, ROWS - 1);
const isPlayer = (v) => v === 1 || v === 2;

/** Checks a reply's fields (the bot is trusted to be a bot, not to be well-formed). */
function validReply(m) {
  switch (m.type) {
    case 'ack':
      return true;
    case 'joined':
      return isStr(m.game) && isPlayer(m.player) && isStr(m.channel);
    case 'full':
      return isStr(m.reason);
    case 'game_start':
      return isStr(m.game) && isPlayer(m.player) && isStr(m.opponent) && isStr(m.channel);
    case 'request_move':
    case 'cursor':
      return isColumn(m.cursor);
    case 'move_received':
      return isColumn(m.column) && isRow(m.row);
    case 'moved':
      return isPlayer(m.player) && isColumn(m.column) && isRow(m.row);
    case 'game_over':
      return (
        REASONS.has(m.reason) &&
        (m.winner === undefined || m.winner === null || isPlayer(m.winner)) &&
        (m.line === undefined || (Array.isArray(m.line) && m.line.every((c) => Array.isArray(c) && isColumn(c[0]) && isRow(c[1]))))
      );
    case 'state':
      return Array.isArray(m.rows) && m.rows.every(isStr) && isStr(m.phase);
    case 'error':
      return isStr(m.code) && isStr(m.reason);
    default:
      return false;
  }
}

/**
 * Reads a private message's text as a game message: `{kind: 'reply'|'request',
 * message}`, or null when it is anything else (ordinary chat).
 */
export function parseGameMessage(text) {
  if (typeof text !== 'string' || text.length > 4096 || !text.trimStart().startsWith('{')) return null;
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return null;
  }
  if (m === null || typeof m !== 'object' || Array.isArray(m)) return null;
  if (m.v !== VERSION || !Number.isSafeInteger(m.seq) || !isStr(m.type)) return null;
  // `state` is both: the bot's answer has the rows.
  if (REPLY_TYPES.has(m.type) && (m.type !== 'state' || 'rows' in m)) {
    return validReply(m) ? { kind: 'reply', message: m } : null;
  }
  if (REQUEST_TYPES.has(m.type)) return { kind: 'request', message: m };
  return null;
}

/** A bot's refusal in words. */
export function errorWords(code, reason = '') {
  switch (code) {
    case 'not_your_turn':
      return 'It is not your turn yet.';
    case 'column_full':
      return 'That column is full: pick another one.';
    case 'no_such_column':
      return 'There is no such column.';
    case 'not_playing':
      return 'No game is on right now.';
    case 'not_in_game':
      return 'You have no seat in a game: press New game.';
    case 'no_such_game':
      return 'That game does not exist any more.';
    default:
      return reason ? `The bot refused: ${reason}` : 'The bot refused that.';
  }
}

/** What a person's own game request says, in the conversation (null: nothing worth a line). */
export function describeOwnRequest(type, bot) {
  switch (type) {
    case 'join':
      return `You asked ${bot} for a game of connect four`;
    case 'ready':
      return 'You are ready for another game';
    case 'leave':
      return 'You left the game';
    default:
      return null;
  }
}

/** A game request someone sent to this account (it is not a bot: it cannot answer). */
export function describeRequest(message, from) {
  if (message.type === 'join') return `${from} asked for a game of connect four (only a connect-four bot can answer it)`;
  return `${from} sent a connect-four “${message.type}” request`;
}

/** An empty board: `board[column][row]`, row 0 at the bottom; 0 empty, 1 red, 2 yellow. */
export function emptyBoard() {
  return Array.from({ length: COLUMNS }, () => new Array(ROWS).fill(0));
}

/** The row a disc dropped in `column` lands on, or -1 when the column is full. */
export function landingRow(board, column) {
  const col = board[column];
  if (!col) return -1;
  const row = col.indexOf(0);
  return row;
}

/** The cells of four (or more) in a row through (column, row) for its owner, or []. */
export function fourThrough(board, column, row) {
  const who = board[column]?.[row];
  if (!who) return [];
  const at = (c, r) => c >= 0 && c < COLUMNS && r >= 0 && r < ROWS && board[c][r] === who;
  const cells = [];
  for (const [dc, dr] of [
    [1, 0],
    [0, 1],
    [1, 1],
    [1, -1],
  ]) {
    const run = [[column, row]];
    for (const sign of [1, -1]) {
      let c = column + sign * dc;
      let r = row + sign * dr;
      while (at(c, r)) {
        run.push([c, r]);
        c += sign * dc;
        r += sign * dr;
      }
    }
    if (run.length >= 4) cells.push(...run);
  }
  return cells;
}

/** The board from a `state` reply's rows (the top row first; `.` `1` `2`). */
export function boardFromRows(rows) {
  const board = emptyBoard();
  for (let i = 0; i < Math.min(rows.length, ROWS); i++) {
    const row = ROWS - 1 - i;
    const line = rows[i];
    for (let column = 0; column < Math.min(line.length, COLUMNS); column++) {
      const ch = line[column];
      if (ch === '1' || ch === '2') board[column][row] = Number(ch);
    }
  }
  return board;
}

/**
 * One person's side of a game against a bot: what the bot said so far, and
 * the requests to send it. `phase` is `idle` (nothing asked), `joining` (a
 * join is on its way), `waiting` (seated, for a second player), `playing`,
 * `over` (a game ended; the seat may be kept for a rematch) or `full` (no seat).
 */
export class GameView {
  /** @param {{bot?: string}} [options] the bot's name, for the words */
  constructor(options = {}) {
    this.bot = options.bot ?? 'the bot';
    this.phase = 'idle';
    this.game = null;
    this.channel = null;
    /** My player number (1 red, 2 yellow), once known; kept after the game for the words. */
    this.player = null;
    /** I have a seat at the bot (join answered; lost on leave and forfeit). */
    this.seated = false;
    this.opponent = null;
    this.board = emptyBoard();
    /** Whose turn it is while playing (1 or 2). */
    this.turn = null;
    /** The bot's cursor, while it is my turn. */
    this.cursor = null;
    /** The winning line of the last game, as [column, row] pairs. */
    this.line = [];
    this.lastMove = null;
    /** How the last game ended: {reason, winner, leaver} (leaver: 'me' | 'them' | null). */
    this.outcome = null;
    /** The last refusal, in words (cleared by the next request). */
    this.error = null;
    /** The `seq` of a drop not answered yet: no second drop meanwhile. */
    this.dropping = null;
    /** After a game: `ready` sent (and answered with an ack). */
    this.readySent = false;
    /** A game started at least once with this seat (so "waiting" means "for a rematch"). */
    this.started = false;
    /** The last move in words ("bob dropped in column 4."). */
    this.news = null;
    /** The view shows the game (a person may hide it between games). */
    this.shown = true;
    this.seq = 0;
    this.joinSeq = null;
    this.leaveSeq = null;
    this.readySeq = null;
  }

  /** The other player's name, or words for them. */
  get opponentName() {
    return this.opponent ?? 'the other player';
  }

  get myTurn() {
    return this.phase === 'playing' && this.turn === this.player && this.cursor !== null;
  }

  /** Left, Right and Drop may be used: my turn, and no drop on its way. */
  get canMove() {
    return this.myTurn && this.dropping === null;
  }

  get canReady() {
    return this.phase === 'over' && this.seated && !this.readySent;
  }

  get canJoin() {
    return !this.seated && this.phase !== 'joining';
  }

  /**
   * A request to the bot, as the message text to send: `join`, `ready`,
   * `left`, `right`, `drop` (`{column}` optional, 0 to 6), `leave`, `state`.
   */
  request(type, fields = {}) {
    if (!REQUEST_TYPES.has(type)) throw new Error(`not a game request: ${type}`);
    const message = { v: VERSION, seq: ++this.seq, type };
    if (type === 'drop' && fields.column !== undefined && fields.column !== null) {
      if (!isColumn(fields.column)) throw new Error(`no column ${fields.column}`);
      message.column = fields.column;
    }
    if (type === 'join' && isStr(fields.game)) message.game = fields.game;
    this.error = null;
    switch (type) {
      case 'join':
        this.joinSeq = message.seq;
        if (!this.seated) this.phase = 'joining';
        this.shown = true;
        break;
      case 'drop':
        this.dropping = message.seq;
        break;
      case 'ready':
        this.readySeq = message.seq;
        this.readySent = true;
        break;
      case 'leave':
        this.leaveSeq = message.seq;
        break;
      default:
    }
    return JSON.stringify(message);
  }

  /** A request could not be sent (the bot is offline, say): said in words. */
  onSendFailed(words, type) {
    this.error = words;
    this.dropping = null;
    if (type === 'join' && this.phase === 'joining') this.phase = this.started || this.outcome ? 'over' : 'idle';
    if (type === 'ready') this.readySent = false;
  }

  _place(player, column, row) {
    this.board[column][row] = player;
    this.lastMove = { player, column, row };
  }

  _name(player) {
    return player === this.player ? 'you' : this.opponentName;
  }

  /**
   * Takes a message from the bot. Returns null when it is not one, else
   * `{line, after, notable}`: the event in words for the conversation (null
   * when the panel says it all: moves, the cursor, acks), requests to send
   * next (types), and whether it is news for an unread count (your turn is).
   */
  onMessage(text) {
    const parsed = parseGameMessage(text);
    if (!parsed || parsed.kind !== 'reply') return null;
    const m = parsed.message;
    const after = [];
    let line = null;
    let notable = false;
    if (this.dropping !== null && m.re === this.dropping) this.dropping = null;
    switch (m.type) {
      case 'ack':
        break;
      case 'joined': {
        // A seat in a game new to this view (not the same seat said again).
        const fresh = !this.seated || this.game !== m.game;
        this.game = m.game;
        this.channel = m.channel;
        this.player = m.player;
        this.seated = true;
        this.shown = true;
        if (fresh) {
          this.started = false;
          this.readySent = false;
          this.news = null;
          this.board = emptyBoard();
          this.line = [];
          this.lastMove = null;
          this.outcome = null;
          this.opponent = null;
        }
        if (this.phase !== 'playing' && (fresh || this.phase !== 'over')) this.phase = 'waiting';
        line = `Joined a game as ${colourOf(m.player)} (player ${m.player})`;
        // Ask where the game stands: a seat kept from before (a reload) may be mid-game.
        after.push('state');
        break;
      }
      case 'full':
        if (!this.seated) this.phase = 'full';
        this.error = `No seat: ${m.reason}`;
        line = `No seat: ${m.reason}`;
        break;
      case 'game_start':
        this.game = m.game;
        this.channel = m.channel;
        this.player = m.player;
        this.opponent = m.opponent;
        this.seated = true;
        this.shown = true;
        this.phase = 'playing';
        this.started = true;
        this.board = emptyBoard();
        this.turn = 1;
        this.cursor = null;
        this.line = [];
        this.lastMove = null;
        this.outcome = null;
        this.readySent = false;
        this.dropping = null;
        this.error = null;
        this.news = m.player === 1 ? 'You are red: red moves first.' : `You are yellow: ${m.opponent} (red) moves first.`;
        line = `Game on: you are ${colourOf(m.player)} against ${m.opponent}`;
        break;
      case 'request_move':
        notable = true;
        this.phase = 'playing';
        this.turn = this.player;
        this.cursor = m.cursor;
        break;
      case 'cursor':
        if (this.phase === 'playing' && this.turn === this.player) this.cursor = m.cursor;
        break;
      case 'move_received':
        if (this.player) this._place(this.player, m.column, m.row);
        this.cursor = null;
        this.turn = other(this.player);
        this.dropping = null;
        this.news = `You dropped in column ${m.column + 1}.`;
        break;
      case 'moved':
        this._place(m.player, m.column, m.row);
        this.turn = other(m.player);
        this.news = `${m.player === this.player ? 'You' : this.opponentName} dropped in column ${m.column + 1}.`;
        break;
      case 'game_over': {
        this.phase = 'over';
        this.cursor = null;
        this.turn = null;
        this.dropping = null;
        this.readySent = false;
        this.line = (m.line ?? []).map(([c, r]) => [c, r]);
        const leaver = m.reason === 'player_left' ? (m.re !== undefined && m.re === this.leaveSeq ? 'me' : 'them') : null;
        this.outcome = { reason: m.reason, winner: m.winner ?? null, leaver };
        if (m.reason === 'player_left' || m.reason === 'forfeit') {
          // The seats are gone with the game: a new one starts with join.
          this.seated = false;
          this.game = null;
        }
        this.news = null;
        line = this.outcomeWords();
        break;
      }
      case 'state':
        if (m.game === null || m.game === undefined) {
          if (this.seated) {
            // The bot no longer has us (it restarted, or the game ended while we were away).
            this.seated = false;
            this.game = null;
            this.cursor = null;
            this.turn = null;
            if (this.phase === 'playing' || this.phase === 'waiting') {
              this.phase = 'over';
              this.outcome = { reason: 'gone', winner: null, leaver: null };
            }
          }
          break;
        }
        this.game = m.game;
        this.seated = true;
        if (isPlayer(m.player)) this.player = m.player;
        this.board = boardFromRows(m.rows);
        if (m.phase === 'playing') {
          this.phase = 'playing';
          this.started = true;
          this.turn = isPlayer(m.turn) ? m.turn : this.turn;
          this.cursor = this.turn === this.player && isColumn(m.cursor) ? m.cursor : null;
        } else if (m.phase === 'over') {
          this.phase = 'over';
          this.cursor = null;
          this.turn = null;
          if (!this.outcome) this.outcome = { reason: 'unknown', winner: null, leaver: null };
        } else if (this.phase !== 'over') {
          this.phase = 'waiting';
        }
        break;
      case 'error':
        this.error = errorWords(m.code, m.reason);
        if (m.code === 'not_in_game') this.seated = false;
        if (m.re !== undefined && m.re === this.readySeq) this.readySent = false;
        if (m.re !== undefined && m.re === this.joinSeq && this.phase === 'joining') this.phase = 'idle';
        line = `Refused: ${this.error}`;
        break;
      default:
    }
    return { line, after, notable: notable || line !== null };
  }

  /** How the last game ended, in words. */
  outcomeWords() {
    const o = this.outcome;
    if (!o) return 'Game over';
    const name = (p) => (p === this.player ? 'you' : this.opponentName);
    switch (o.reason) {
      case 'win':
        if (o.winner === this.player) return 'You win!';
        return o.winner ? `${this.opponentName} wins` : 'Game over';
      case 'draw':
        return 'A draw: the board is full';
      case 'player_left':
        if (o.leaver === 'me') return 'Game over: you left';
        return this.opponent ? `Game over: ${this.opponent} left` : 'Game over: player left';
      case 'forfeit':
        if (o.winner === this.player) return `You win: ${this.opponentName} was away too long`;
        return o.winner ? `${name(o.winner)} wins: you were away too long` : 'Game over: forfeit';
      case 'gone':
        return `Game over: ${this.bot} no longer has this game`;
      default:
        return 'Game over';
    }
  }

  /** The headline of the game: whose turn, or how it ended. */
  headline() {
    switch (this.phase) {
      case 'idle':
        return 'Connect four';
      case 'joining':
        return `Asking ${this.bot} for a seat…`;
      case 'full':
        return 'No seat free';
      case 'waiting':
        return this.started ? `Waiting for ${this.opponentName}…` : 'Waiting for another player…';
      case 'playing':
        if (this.turn === this.player) return 'Your turn';
        return this.opponent ? `${this.opponent}'s turn` : "The other player's turn";
      case 'over':
        return this.outcomeWords();
      default:
        return '';
    }
  }

  /** A second line: what just happened, or what to do next. */
  detail() {
    switch (this.phase) {
      case 'idle':
        return `Press New game to ask ${this.bot} for a seat.`;
      case 'joining':
        return `Only a connect-four bot answers this: if ${this.bot} is not one, nothing happens.`;
      case 'full':
        return this.error ?? '';
      case 'waiting':
        return this.started
          ? `You are ready: the next game starts when ${this.opponentName} is ready too.`
          : `You play ${colourOf(this.player) ?? 'a colour'} when someone joins.`;
      case 'playing':
        if (this.turn === this.player && this.news === null) return 'Move with ◀ ▶, then Drop.';
        return this.news ?? '';
      case 'over':
        if (this.seated) {
          return this.readySent ? `You are ready: waiting for ${this.opponentName} to be ready too.` : `Press Play again for a rematch with ${this.opponentName}.`;
        }
        return 'Press New game to play again.';
      default:
        return '';
    }
  }

  /** A JSON-safe picture, for tests and the debug hook. */
  snapshot() {
    return {
      phase: this.phase,
      game: this.game,
      channel: this.channel,
      player: this.player,
      colour: colourOf(this.player),
      opponent: this.opponent,
      seated: this.seated,
      turn: this.turn,
      cursor: this.cursor,
      myTurn: this.myTurn,
      canMove: this.canMove,
      headline: this.headline(),
      detail: this.detail(),
      error: this.error,
      rows: rowsOf(this.board),
      line: this.line,
    };
  }
}

/** The board as text rows, the top row first (`.` `1` `2`), as the bot's `state` has it. */
export function rowsOf(board) {
  const rows = [];
  for (let row = ROWS - 1; row >= 0; row--) {
    let line = '';
    for (let column = 0; column < COLUMNS; column++) line += board[column][row] ? String(board[column][row]) : '.';
    rows.push(line);
  }
  return rows;
}

// ---- the channel's record, for spectators -------------------------------------

/** One record line (`[c4 …] words`) read back, or null for any other line. */
export function parseRecord(line) {
  if (typeof line !== 'string' || !line.startsWith('[c4 ')) return null;
  const end = line.indexOf(']');
  if (end < 0) return null;
  const words = line.slice(4, end).trim().split(/\s+/);
  const int = (w) => (/^\d+$/.test(w) ? Number(w) : NaN);
  switch (words[0]) {
    case 'start': {
      if (words.length !== 4 || !words[2].startsWith('red=') || !words[3].startsWith('yellow=')) return null;
      return { type: 'start', game: words[1], red: words[2].slice(4), yellow: words[3].slice(7) };
    }
    case 'move': {
      if (words.length !== 4) return null;
      const [player, column, row] = words.slice(1).map(int);
      if (!isPlayer(player) || !isColumn(column) || !isRow(row)) return null;
      return { type: 'move', player, column, row };
    }
    case 'over': {
      if (words.length < 2 || words.length > 3 || !REASONS.has(words[1])) return null;
      const winner = words.length === 3 ? int(words[2]) : null;
      if (winner !== null && !isPlayer(winner)) return null;
      return { type: 'over', reason: words[1], winner };
    }
    default:
      return null;
  }
}

/** The words of a record line after its bracketed part. */
export function recordWords(line) {
  const end = line.indexOf(']');
  return end < 0 ? line : line.slice(end + 1).trim();
}

/**
 * The last game of a channel's record lines (in commit order), as a
 * spectator sees it: null when there is no start line. Moves are dropped by
 * the rules (a move they refuse is skipped), the winning four found here.
 */
export function replayRecords(lines) {
  let game = null;
  for (const text of lines) {
    const r = parseRecord(text);
    if (!r) continue;
    if (r.type === 'start') {
      game = { game: r.game, red: r.red, yellow: r.yellow, board: emptyBoard(), turn: 1, moves: 0, over: null, line: [], lastMove: null };
      continue;
    }
    if (!game || game.over) continue;
    if (r.type === 'move') {
      const row = landingRow(game.board, r.column);
      if (row < 0) continue;
      game.board[r.column][row] = r.player;
      game.lastMove = { player: r.player, column: r.column, row };
      game.moves += 1;
      game.turn = other(r.player);
      const four = fourThrough(game.board, r.column, row);
      if (four.length) game.line = four;
    } else {
      game.over = { reason: r.reason, winner: r.winner };
      game.turn = null;
    }
  }
  return game;
}

/** A spectator's headline and detail for a replayed game. */
export function spectatorWords(g) {
  const name = (p) => (p === 1 ? g.red : g.yellow);
  const who = (p) => `${name(p)} (${colourOf(p)})`;
  let headline;
  if (!g.over) headline = `${name(g.turn)}'s turn`;
  else if (g.over.reason === 'win' && g.over.winner) headline = `${name(g.over.winner)} wins`;
  else if (g.over.reason === 'forfeit' && g.over.winner) headline = `${name(g.over.winner)} wins by forfeit`;
  else if (g.over.reason === 'draw') headline = 'A draw: the board is full';
  else if (g.over.reason === 'player_left') headline = 'Game over: a player left';
  else headline = 'Game over';
  const detail = g.lastMove
    ? `${who(g.lastMove.player)} dropped in column ${g.lastMove.column + 1}.`
    : `${who(1)} plays ${who(2)}; red moves first.`;
  return { headline, detail };
}
