// The client: one account's life on a server, over any transport.
//
// It signs in (CNN, asking for server frame binding, §7.10), verifies every
// frame from the server, keeps the session alive (KALIVE), runs the reference
// behaviour (agent.js) on a 100 ms timer, keeps the chat model (chat.js) up to
// date, and reconnects with backoff and jitter when the connection is lost.
// The transport is a function taking handlers and returning {send, close}: a
// WebSocket in the browser (connection.js), a TCP socket in node
// (node/tcp.js), frames being the same.

import { Agent, cmd } from './agent.js';
import { Chat } from './chat.js';
import { encodeFrame } from './frame.js';
import { encodePayload, decodePayload } from './payload.js';
import { parseEvent, describeError, FATAL_CODES, FINAL_CODES } from './events.js';
import { frameTag, verifyTag, bytesToHex, randomNonce, serverKey, Stamper } from './sign.js';

const TICK_MS = 100;
/** The skew window assumed until SINFO says (§4.1's default). */
const DEFAULT_SKEW_S = 30;
/** KALIVE every 30 s until SINFO gives timeout_s (§7.8). */
const DEFAULT_KEEPALIVE_MS = 30_000;
/** Give up on a connection that has not signed in by then. */
const CONNECT_TIMEOUT_MS = 15_000;
const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
/** Commands whose errors we remember, to tell which request an ERR's `ref` names. */
const MAX_TRACKED = 512;
/** A CH_PULL unanswered this long is given up and asked again (its frame may have been dropped, §3.7). */
const PULL_TIMEOUT_MS = 20_000;
/** A CH_PULL refused because the previous one is still being read (§7.5) is asked again after this. */
const PULL_RETRY_MS = 300;
/** After frames were dropped by the frame rate limit (§3.7), wait this long before sending them again. */
const RATE_RETRY_MS = 1000;

const realClock = {
  now: () => Date.now(),
  mono: () => (globalThis.performance ? globalThis.performance.now() : Date.now()),
  setTimeout: (f, ms) => globalThis.setTimeout(f, ms),
  clearTimeout: (t) => globalThis.clearTimeout(t),
  setInterval: (f, ms) => globalThis.setInterval(f, ms),
  clearInterval: (t) => globalThis.clearInterval(t),
};

/**
 * @typedef {{id: string, name: string, key: Uint8Array}} Credentials
 * @typedef {{onOpen(): void, onFrame(f: {command: string, signature: Uint8Array|null, payload: Uint8Array}): void,
 *            onError(err: Error): void, onClose(reason?: string): void}} TransportHandlers
 * @typedef {(h: TransportHandlers) => {send(bytes: Uint8Array): void, close(): void}} Transport
 */

export class SigilClient {
  /**
   * @param {{credentials: Credentials, transport: Transport, clock?: typeof realClock,
   *          random?: () => number, names?: Record<string, string>,
   *          serverTime?: () => Promise<number|null>, onChange?: () => void,
   *          log?: (level: string, msg: string) => void}} options
   */
  constructor(options) {
    this.cred = options.credentials;
    this.transport = options.transport;
    this.clock = options.clock ?? realClock;
    this.random = options.random ?? Math.random;
    this.serverTime = options.serverTime ?? null;
    this.onChange = options.onChange ?? (() => {});
    this.log = options.log ?? (() => {});
    this.agent = new Agent(this.cred.id, this.random);
    this.chat = new Chat({ id: this.cred.id, name: this.cred.name }, { names: options.names });
    this.stamper = new Stamper();

    /** connecting | connected | offline */
    this.state = 'offline';
    /** Why we are offline, in words; null when nothing went wrong. */
    this.problem = null;
    /** When the next attempt is due (wall ms), while waiting to reconnect. */
    this.retryAt = null;
    /** Reconnecting cannot help (refused sign-in, session taken over): wait for the person. */
    this.final = false;
    this.stopped = true;

    this.conn = null;
    this.authenticated = false;
    /** The CNN of the session under way: {nonce, timestamp}. */
    this.cnn = null;
    /** What server frames are checked with: the account key, or once our UCNN says so the session key (§7.10). */
    this.frameKey = this.cred.key;
    /** The key derived from our CNN, until our UCNN says whether the server bound the session. */
    this.sessionKey = null;
    /** The server bound this session: every frame verified in it was sent to it, so a fatal ERR is fresh. */
    this.bound = false;
    this.skewS = DEFAULT_SKEW_S;
    this.sessions = 0;
    this.attempt = 0;
    this.outbox = [];
    this.flushScheduled = false;
    this.tracked = new Map();
    this.pulls = [];
    this.pullInFlight = null;
    /** A pull waiting to be asked again (timers.pullRetry). */
    this.pullRetrying = null;
    this.timers = { tick: null, keepalive: null, retry: null, connect: null, countdown: null, pull: null, pullRetry: null, resend: null };
  }

  // ---- life cycle ----------------------------------------------------------

  /** Connects (again): also the "reconnect now" button. */
  start() {
    this.stopped = false;
    this.final = false;
    this._clearTimer('retry');
    this._clearTimer('countdown');
    if (this.conn) return;
    this._connect();
  }

  /** Signs out of the server: DCNN, close, no reconnecting. */
  stop() {
    this.stopped = true;
    this._clearTimer('retry');
    this._clearTimer('countdown');
    if (this.conn && this.authenticated) this._sendNow([cmd('DCNN')]);
    this._drop();
    this.state = 'offline';
    this.retryAt = null;
    this._changed();
  }

  _connect() {
    this.state = 'connecting';
    this.retryAt = null;
    this.authenticated = false;
    this.bound = false;
    this.frameKey = this.cred.key;
    this.sessionKey = null;
    this._changed();
    const conn = {};
    const current = () => this.conn === conn;
    const handlers = {
      onOpen: () => current() && this._onOpen(),
      onFrame: (f) => current() && this._onFrame(f),
      onError: (err) => current() && this.log('warn', `connection: ${err && err.message}`),
      onClose: (reason) => current() && this._onClose(reason),
    };
    this.conn = conn;
    try {
      Object.assign(conn, this.transport(handlers));
    } catch (err) {
      this.conn = null;
      this._onClosed(`could not connect: ${err && err.message}`);
      return;
    }
    this.timers.connect = this.clock.setTimeout(() => {
      if (current() && !this.authenticated) this._abort('the server did not answer in time');
    }, CONNECT_TIMEOUT_MS);
  }

  _onOpen() {
    // CNN with batch: true (§7.9) and bind: true (§7.10), as the reference client; everything
    // else after our UCNN. The session key is derived from this CNN's nonce and timestamp.
    const envelope = { nonce: randomNonce(), timestamp: this.stamper.stamp(this.clock.now()) };
    this.cnn = envelope;
    this.sessionKey = serverKey(this.cred.key, envelope.nonce, envelope.timestamp);
    this._sendNow([cmd('CNN', { id: this.cred.id, batch: true, bind: true })], envelope);
  }

  /** Closes the current connection and goes through the usual reconnect path. */
  _abort(why) {
    this.log('warn', why);
    const conn = this.conn;
    this._drop();
    if (conn) this._onClosed(why);
  }

  _drop() {
    const conn = this.conn;
    this.conn = null;
    this.authenticated = false;
    for (const t of ['tick', 'keepalive', 'connect', 'pull', 'pullRetry', 'resend']) this._clearTimer(t);
    this.outbox = [];
    this.pulls = [];
    this.pullInFlight = null;
    this.pullRetrying = null;
    this.tracked.clear();
    try {
      conn?.close?.();
    } catch {
      // Already closed.
    }
  }

  _onClose(reason) {
    this._drop();
    this._onClosed(reason);
  }

  _onClosed(reason) {
    this.chat.onDisconnected();
    this.state = 'offline';
    if (this.stopped) {
      this._changed();
      return;
    }
    if (!this.problem && reason) this.problem = `Connection lost (${reason}).`;
    if (this.final) {
      this.retryAt = null;
      this._changed();
      return;
    }
    // Exponential backoff with jitter, so clients do not all return at once after a restart.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(this.attempt, 10));
    const delay = Math.round(ceiling * (0.5 + this.random() / 2));
    this.attempt++;
    this.retryAt = this.clock.now() + delay;
    this.timers.retry = this.clock.setTimeout(() => {
      this.timers.retry = null;
      this._clearTimer('countdown');
      if (!this.stopped && !this.conn) this._connect();
    }, delay);
    // The "reconnecting in N s" countdown needs a redraw every second.
    this._clearTimer('countdown');
    this.timers.countdown = this.clock.setInterval(() => this._changed(), 1000);
    this._changed();
  }

  _clearTimer(name) {
    const t = this.timers[name];
    if (t === null || t === undefined) return;
    if (name === 'tick' || name === 'keepalive' || name === 'countdown') this.clock.clearInterval(t);
    else this.clock.clearTimeout(t);
    this.timers[name] = null;
  }

  _changed() {
    try {
      this.onChange();
    } catch (err) {
      this.log('error', `view: ${err && err.stack}`);
    }
  }

  // ---- receiving -----------------------------------------------------------

  _onFrame(frame) {
    // Before our UCNN only unsigned ERR and SINFO may come; after it, every frame is signed (§2).
    if (frame.signature === null) {
      if (this.authenticated || (frame.command !== 'ERR' && frame.command !== 'SINFO')) {
        this.problem = 'The server sent an unsigned message; reconnecting to be safe.';
        this._abort(`unsigned ${frame.command}`);
        return;
      }
    } else if (!this.authenticated && frame.command !== 'UCNN') {
      // The server signs nothing before our UCNN: a signed frame there is a replay,
      // such as an ERR session_replaced recorded in an earlier session.
      this.problem = 'A message from an earlier session was replayed; reconnecting to be safe.';
      this._abort(`signed ${frame.command} before our UCNN`);
      return;
    } else if (!verifyTag(this._keyFor(frame), frame.command, frame.payload, frame.signature)) {
      this.problem = 'A message from the server failed its signature check; reconnecting to be safe.';
      this._abort(`bad signature on ${frame.command}`);
      return;
    }
    let event;
    try {
      event = parseEvent(frame.command, decodePayload(frame.payload));
    } catch (err) {
      // A malformed event is dropped, not fatal: the rest of the session is still good.
      this.log('warn', `dropped ${frame.command}: ${err && err.message}`);
      return;
    }
    try {
      this._onEvent(event);
    } catch (err) {
      this.log('error', `while handling ${frame.command}: ${err && err.stack}`);
    }
    this._changed();
  }

  /**
   * The key a signed frame is checked with. Our UCNN, the first signed frame of a
   * session, says whether the server bound it (§7.10): with `bind: true` it and every
   * frame after it are checked with the session key, none with the account key. The
   * field is inside the tag of the key it names, so it cannot be changed unseen.
   */
  _keyFor(frame) {
    if (!this.authenticated && this.sessionKey) {
      let payload = null;
      try {
        payload = decodePayload(frame.payload);
      } catch {
        // Not a map: its tag is checked with the account key, and its parse fails later.
      }
      if (payload && payload.bind === true) {
        this.frameKey = this.sessionKey;
        this.bound = true;
      }
      this.sessionKey = null;
    }
    return this.frameKey;
  }

  /** A MSG stamped this far back was sent before this session began (private messages go to online sessions only). */
  _sentBeforeSession(e) {
    return !this.bound && this.cnn !== null && e.timestamp + this.skewS < Number(this.cnn.timestamp);
  }

  _onEvent(e) {
    if (e.type === 'MSG' && this._sentBeforeSession(e)) {
      // A replay from an earlier session (§7.10): neither shown nor acknowledged.
      this.log('warn', `a MSG stamped ${e.timestamp}, before this session began: not shown`);
      this.chat.notify('A private message from before this session was replayed to you; it is not shown.');
      return;
    }
    if (e.type === 'UCNN' && e.id === this.cred.id && !this.authenticated) {
      this.authenticated = true;
      this.state = 'connected';
      this.problem = null;
      this.attempt = 0;
      this._clearTimer('connect');
      // A new session: pull every channel from its last commit, forget leaders (§7.8).
      if (this.sessions > 0) this.agent.reconnected();
      this.sessions++;
      this.chat.onConnected();
      this._startTimers(DEFAULT_KEEPALIVE_MS);
      // Every account (§6.1 `all`): offline people are listed by name too.
      this._queue([cmd('INFO'), cmd('LST_USR', { all: true }), cmd('CH_LST')]);
    }
    let ctx = null;
    if (e.type === 'ERR') {
      ctx = e.ref === null ? null : this.tracked.get(e.ref.toString()) ?? null;
      this._onError(e, ctx);
    }
    if (e.type === 'SINFO') {
      this.skewS = e.skewS;
      this._startTimers(Math.max(1, Math.floor(e.timeoutS / 3)) * 1000);
    }
    if (e.type === 'CH_APPEND') this._pullAnswered(e);
    if (e.type === 'CH_MSG' && e.from === this.cred.id) this._learnClock(e.timestamp);
    const now = this.clock.mono();
    this._queue([...this.agent.onEvent(e, now), ...this.chat.apply(e, ctx && ctx.pull ? null : ctx)]);
  }

  _onError(e, ctx) {
    // Final only when fresh (§7.10): in a bound session, where nothing from another session
    // verifies; or refusing the first sign-in since start (the server reads its accounts
    // again before refusing a CNN, §6.3). Otherwise it may be replayed: the server closes the
    // connection if it was real, and the usual reconnecting follows.
    const fresh = this.authenticated ? this.bound : this.sessions === 0;
    if (FINAL_CODES.has(e.code) && fresh) {
      this.final = true;
      this.problem = describeError(e.code, e.reason);
    } else if (FINAL_CODES.has(e.code)) {
      this.problem = `${describeError(e.code, e.reason)} (This could not be checked to be about this session, so the page keeps trying.)`;
    } else if (FATAL_CODES.has(e.code)) {
      this.problem = describeError(e.code, e.reason);
      if (e.code === 'stale') this._askServerTime();
    }
    if (e.code === 'rate_limited' && e.ref === null && this.authenticated) {
      // Frames were dropped by the frame rate limit (§3.7), which ones is not said.
      this._afterDroppedFrames();
      return;
    }
    if (ctx && ctx.pull) {
      // Only the pull being read is ours to handle: an older one was already asked again.
      if (ctx.pull !== this.pullInFlight) return;
      const p = ctx.pull;
      this.pullInFlight = null;
      this._clearTimer('pull');
      if (e.code === 'rate_limited') {
        // Another pull was still being read: ask again shortly.
        this._retryPull(p, PULL_RETRY_MS);
      } else if (e.code === 'unknown_msg' && p.anchor !== null) {
        // Our anchor is unknown to the server (its database was replaced): read it all again.
        this.pulls.unshift({ id: p.id, anchor: null });
        this._pumpPulls();
      } else {
        this._pumpPulls();
      }
    }
  }

  /**
   * Some of our frames were dropped unanswered (§3.7): a pull being read is
   * asked again, and channel messages not yet echoed are sent again (same
   * msg_id: one that did arrive is refused as a duplicate, never shown twice).
   * Both wait a moment, so that the bucket refills first.
   */
  _afterDroppedFrames() {
    const p = this.pullInFlight;
    if (p) {
      this.pullInFlight = null;
      this._clearTimer('pull');
      this._retryPull(p, RATE_RETRY_MS);
    }
    // Messages sent after the ERR may have been dropped too (one ERR per run): the resend
    // takes every message still unechoed by then.
    if (this.timers.resend !== null || !this.chat.hasUnconfirmedSends()) return;
    this.timers.resend = this.clock.setTimeout(() => {
      this.timers.resend = null;
      if (this.authenticated) this.send(this.chat.resendUnconfirmed());
    }, RATE_RETRY_MS);
  }

  /** Puts `p` back at the head of the pulls after `ms`; no other pull is sent meanwhile. */
  _retryPull(p, ms) {
    if (this.pullRetrying) this._requeuePull(this.pullRetrying);
    this._clearTimer('pullRetry');
    this.pullRetrying = p;
    this.timers.pullRetry = this.clock.setTimeout(() => {
      this.timers.pullRetry = null;
      this.pullRetrying = null;
      this._requeuePull(p);
      this._pumpPulls();
    }, ms);
  }

  _requeuePull(p) {
    if (!this.pulls.some((q) => q.id === p.id && q.anchor === p.anchor)) this.pulls.unshift(p);
  }

  /** Our own CH_MSG came back with the server's clock: keep our timestamps near it (§4.1). */
  _learnClock(serverSecs) {
    const skew = serverSecs * 1000 - this.clock.now();
    if (Math.abs(skew) > 10_000) this.stamper.setOffset(skew);
  }

  _askServerTime() {
    if (!this.serverTime) return;
    this.serverTime()
      .then((ms) => {
        if (typeof ms === 'number' && Number.isFinite(ms)) this.stamper.setOffset(ms - this.clock.now());
      })
      .catch(() => {});
  }

  _startTimers(keepaliveMs) {
    this._clearTimer('keepalive');
    this.timers.keepalive = this.clock.setInterval(() => this._queue([cmd('KALIVE')]), keepaliveMs);
    if (this.timers.tick === null) {
      this.timers.tick = this.clock.setInterval(() => {
        try {
          this._queue(this.agent.tick(this.clock.mono()));
        } catch (err) {
          this.log('error', `tick: ${err && err.stack}`);
        }
      }, TICK_MS);
    }
  }

  // ---- history pulls: one at a time per connection (§7.5) ------------------

  _pullAnswered(e) {
    const same = (p) => p && p.id === e.id && p.anchor === e.anchor;
    if (same(this.pullInFlight)) {
      this.pullInFlight = null;
      this._clearTimer('pull');
      this._pumpPulls();
    } else if (same(this.pullRetrying)) {
      // Answered after all (it was not the dropped frame): no need to ask again.
      this._clearTimer('pullRetry');
      this.pullRetrying = null;
      this._pumpPulls();
    }
  }

  _pumpPulls() {
    // A pull waiting out a refusal goes first: nothing overtakes it meanwhile.
    if (this.pullInFlight || this.timers.pullRetry !== null || !this.pulls.length || !this.authenticated) return;
    const p = this.pulls.shift();
    this.pullInFlight = p;
    this._queue([cmd('CH_PULL', { id: p.id, anchor: p.anchor }, { pull: p })], true);
    // No answer at all (a lost frame): ask again rather than wait forever.
    this._clearTimer('pull');
    this.timers.pull = this.clock.setTimeout(() => {
      this.timers.pull = null;
      if (this.pullInFlight !== p) return;
      this.pullInFlight = null;
      this.log('warn', `no answer to CH_PULL of ${p.id}: asking again`);
      this._requeuePull(p);
      this._pumpPulls();
    }, PULL_TIMEOUT_MS);
  }

  // ---- sending -------------------------------------------------------------

  /** Queues commands; they go out together, acks and commits batched (§7.9). */
  _queue(commands, pullsReady = false) {
    for (const c of commands) {
      if (c.name === 'CH_PULL' && !pullsReady) {
        // Pulls wait their turn: a second pull while one is read is refused (§7.5).
        const dup = this.pulls.some((p) => p.id === c.fields.id && p.anchor === c.fields.anchor);
        if (!dup) this.pulls.push({ id: c.fields.id, anchor: c.fields.anchor });
      } else {
        this.outbox.push(c);
      }
    }
    if (!pullsReady) this._pumpPulls();
    if (this.outbox.length && !this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => {
        this.flushScheduled = false;
        const out = this.outbox;
        this.outbox = [];
        if (this.authenticated) this._sendNow(this.agent.coalesce(out));
      });
    }
  }

  /** Signs and sends `commands`; `envelope` gives the nonce and timestamp (the CNN's), else fresh ones. */
  _sendNow(commands, envelope = null) {
    const conn = this.conn;
    if (!conn) return;
    for (const c of commands) {
      const nonce = envelope ? envelope.nonce : randomNonce();
      const timestamp = envelope ? envelope.timestamp : this.stamper.stamp(this.clock.now());
      const fields = { ...c.fields, nonce, timestamp };
      let bytes;
      try {
        const payload = encodePayload(fields);
        bytes = encodeFrame(c.name, bytesToHex(frameTag(this.cred.key, c.name, payload)), payload);
      } catch (err) {
        this.log('error', `could not encode ${c.name}: ${err && err.message}`);
        continue;
      }
      if (c.ctx) {
        this.tracked.set(nonce.toString(), c.ctx);
        if (this.tracked.size > MAX_TRACKED) this.tracked.delete(this.tracked.keys().next().value);
      }
      try {
        conn.send(bytes);
      } catch (err) {
        this._abort(`send failed: ${err && err.message}`);
        return;
      }
    }
  }

  /** Sends what a user action produced. */
  send(commands) {
    if (commands && commands.length) this._queue(commands);
    this._changed();
  }

  // ---- user actions --------------------------------------------------------

  /** Wall-clock ms corrected to the server's clock (as far as we know it). */
  serverNow() {
    return this.clock.now() + this.stamper.offsetMs;
  }

  sendText(text) {
    this.send(this.chat.sendText(text, this.serverNow()));
  }

  retry(kind, convId, msgId) {
    this.send(this.chat.retry(kind, convId, msgId));
  }

  /** @returns {string|null} a problem in words, or null once sent */
  createChannel(name) {
    const r = this.chat.createChannel(name);
    if (r.error) return r.error;
    this.send(r.commands);
    return null;
  }

  joinChannel(nameOrId) {
    const r = this.chat.joinChannel(nameOrId);
    if (r.error) return r.error;
    this.send(r.commands);
    return null;
  }

  leaveChannel(id) {
    this.send(this.chat.leaveChannel(id));
  }

  refreshChannels() {
    if (this.authenticated) this.send([cmd('CH_LST')]);
  }

  select(kind, id) {
    this.chat.select(kind, id);
    this._changed();
  }

  // ---- connect four (game.js) ----------------------------------------------

  /** Asks the bot `userId` for a game and shows it. */
  playGame(userId) {
    this.send(this.chat.playGame(userId, this.serverNow()));
  }

  /** A game request to the bot `userId`: left, right, drop ({column}), ready, join, leave. */
  gameRequest(userId, type, fields = {}) {
    this.send(this.chat.sendGame(userId, type, fields, this.serverNow()));
  }

  /** Shows or hides the game panel of a conversation. */
  showGame(userId, shown) {
    this.chat.showGame(userId, shown);
    this._changed();
  }

  /** A JSON-safe picture for tests and the debug hook. */
  snapshot() {
    return {
      connected: this.state === 'connected',
      state: this.state,
      bound: this.bound,
      problem: this.problem,
      retryAt: this.retryAt,
      ...this.chat.snapshot(),
    };
  }
}
