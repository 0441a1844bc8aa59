// The chat model: what a person sees (people, channels, conversations,
// messages, unread counts), built from server events. Pure: no I/O, no
// timers; user actions return the commands to send, and so may events
// (messages held back while a channel had no leader are sent again).

import { cmd } from './agent.js';
import { encodePayload } from './payload.js';
import { newUlid } from './ids.js';
import { describeError } from './events.js';
import { GameView, parseGameMessage, describeRequest, describeOwnRequest } from './game.js';

/** Channel names: 1 to 64 of A-Z a-z 0-9 _ . - # (§7.1). */
export const CHANNEL_NAME_RE = /^[A-Za-z0-9_.#-]{1,64}$/;

/** A channel message dropped by the frame rate limit is sent again this many times, then failed. */
const MAX_RESENDS = 3;

/** Errors the automatic behaviour causes in normal operation: not worth a person's attention. */
const BACKGROUND_CODES = new Set(['bad_election', 'already_voted', 'bad_commit', 'not_leader', 'unknown_msg', 'duplicate_msg']);

const utf8 = new TextEncoder();

/** Messages of one conversation, by id (so nothing is shown twice, §7.5) and in time order. */
class MessageList {
  constructor() {
    this.byId = new Map();
    this.order = [];
  }

  get(id) {
    return this.byId.get(id);
  }

  /** Inserts after every message not later than it: live messages arrive in order anyway. */
  insert(m) {
    this.byId.set(m.id, m);
    let i = this.order.length;
    while (i > 0 && this.order[i - 1].timestamp > m.timestamp) i--;
    this.order.splice(i, 0, m);
  }

  /** Gives `m` the server's timestamp, moving it to its place in time. */
  retime(m, timestamp) {
    if (m.timestamp === timestamp) return;
    const at = this.order.indexOf(m);
    if (at >= 0) this.order.splice(at, 1);
    m.timestamp = timestamp;
    this.insert(m);
  }

  get size() {
    return this.order.length;
  }
}

export class Chat {
  /**
   * @param {{id: string, name: string}} me
   * @param {{names?: Record<string, string>}} [options] names remembered from earlier sessions
   */
  constructor(me, options = {}) {
    this.me = me;
    this.server = null;
    /** @type {Map<string, {id: string, name: string, online: boolean}>} */
    this.users = new Map([[me.id, { id: me.id, name: me.name, online: false }]]);
    this.knownNames = new Map(Object.entries(options.names ?? {}));
    /** Channels this account is a member of. */
    this.channels = new Map();
    /** Every channel on the server, from the last complete LST_CH. */
    this.directory = new Map();
    /** Private conversations by the other person's id. */
    this.conversations = new Map();
    /** Connect-four games (game.js) by the bot's id: one per conversation with a bot. */
    this.games = new Map();
    /** @type {{kind: 'channel'|'user', id: string} | null} */
    this.current = null;
    /** Short-lived notices for the person: errors in words, events worth knowing. */
    this.notices = [];
    this.noticeSeq = 0;
    this.connected = false;
    this.pageUsers = [];
    this.pageChannels = [];
    /** Bumped on every change, so a view can tell when to redraw. */
    this.version = 0;
  }

  // ---- names ---------------------------------------------------------------

  nameOf(id) {
    return this.users.get(id)?.name ?? this.knownNames.get(id) ?? 'unknown member';
  }

  /** id → name of everyone seen, for a caller that remembers names. */
  names() {
    const out = Object.fromEntries(this.knownNames);
    for (const u of this.users.values()) out[u.id] = u.name;
    return out;
  }

  _user(id, name) {
    let u = this.users.get(id);
    if (!u) {
      u = { id, name: name ?? this.knownNames.get(id) ?? null, online: false };
      this.users.set(id, u);
    } else if (name) {
      u.name = name;
    }
    return u;
  }

  // ---- channels and conversations ------------------------------------------

  _channel(id, name) {
    let c = this.channels.get(id);
    if (!c) {
      c = {
        id,
        name: name ?? this.directory.get(id)?.name ?? '',
        leader: null,
        status: 'unhealthy',
        election: 0n,
        online: 0,
        candidate: null,
        unread: 0,
        members: new Set([this.me.id]),
        messages: new MessageList(),
        historyLoaded: false,
      };
      this.channels.set(id, c);
    } else if (name) {
      c.name = name;
    }
    return c;
  }

  _conversation(userId) {
    let c = this.conversations.get(userId);
    if (!c) {
      c = { userId, unread: 0, messages: new MessageList() };
      this.conversations.set(userId, c);
    }
    return c;
  }

  _isCurrent(kind, id) {
    return this.current !== null && this.current.kind === kind && this.current.id === id;
  }

  _firstChannel() {
    const list = [...this.channels.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
    return list.length ? { kind: 'channel', id: list[0].id } : null;
  }

  /** Shows a conversation and marks it read. */
  select(kind, id) {
    if (kind === 'channel' && !this.channels.has(id)) return;
    if (kind === 'user') this._conversation(id);
    this.current = { kind, id };
    const target = kind === 'channel' ? this.channels.get(id) : this.conversations.get(id);
    target.unread = 0;
    this.version++;
  }

  /** Marks the current conversation read (the person is looking at it). */
  markRead() {
    const c = this.current;
    if (!c) return;
    const target = c.kind === 'channel' ? this.channels.get(c.id) : this.conversations.get(c.id);
    if (target && target.unread) {
      target.unread = 0;
      this.version++;
    }
  }

  notify(text, level = 'error') {
    this.notices.push({ id: ++this.noticeSeq, text, level });
    if (this.notices.length > 5) this.notices.shift();
    this.version++;
  }

  dismissNotice(id) {
    this.notices = this.notices.filter((n) => n.id !== id);
    this.version++;
  }

  // ---- connection ----------------------------------------------------------

  /** A session started (our own UCNN): the rest of the world is learned again. */
  onConnected() {
    this.connected = true;
    this.version++;
  }

  /** The connection was lost: nobody's presence is known; leaders are forgotten. */
  onDisconnected() {
    this.connected = false;
    // A list half received from the lost session must not mix with the next one's.
    this.pageUsers = [];
    this.pageChannels = [];
    for (const u of this.users.values()) u.online = false;
    for (const c of this.channels.values()) {
      c.leader = null;
      c.candidate = null;
      c.status = 'unhealthy';
      // Sent but never echoed: maybe lost; sent again (same msg_id, so never twice) later.
      for (const m of c.messages.order) if (m.mine && m.state === 'sending') m.state = 'queued';
    }
    this.version++;
  }

  // ---- events --------------------------------------------------------------

  /**
   * Applies one parsed event. `ctx` is what we attached to the command an
   * ERR refers to (by its `ref`), when known. Returns commands to send.
   */
  apply(e, ctx = null) {
    this.version++;
    switch (e.type) {
      case 'SINFO':
        this.server = e;
        return [];
      case 'UCNN':
        this._user(e.id, e.name).online = true;
        // A bot back online (restarted, maybe): ask it where our game stands.
        return e.id !== this.me.id && this.games.get(e.id)?.seated ? this.sendGame(e.id, 'state') : [];
      case 'UDCNN':
        this._user(e.id, e.name).online = false;
        return [];
      case 'USR_LST':
        this.pageUsers.push(...e.users);
        if (!e.more) {
          // Every account with its status (LST_USR {all: true}); one not
          // listed is offline (an older server lists the connected only).
          const online = new Set(this.pageUsers.filter((u) => u.status !== 'offline').map((u) => u.id));
          for (const u of this.users.values()) u.online = online.has(u.id);
          for (const u of this.pageUsers) this._user(u.id, u.name).online = online.has(u.id);
          this.pageUsers = [];
          // A new session: the bot's messages meanwhile were lost; ask where our games stand.
          const out = [];
          for (const [id, g] of this.games) if (g.seated && online.has(id)) out.push(...this.sendGame(id, 'state'));
          return out;
        }
        return [];
      case 'USR_ADD':
        this._user(e.id, e.name).online = false;
        return [];
      case 'USR_RMD':
        this.users.delete(e.id);
        return [];
      case 'MSG': {
        this._user(e.from);
        const conv = this._conversation(e.from);
        if (conv.messages.get(e.msgId)) return [];
        // A connect-four message: shown as a line in words, or not at all (the panel shows it).
        const parsed = e.binary || e.from === this.me.id ? null : parseGameMessage(e.text);
        let game = null;
        const out = [];
        if (parsed?.kind === 'reply') {
          const g = this._game(e.from);
          const r = g.onMessage(e.text);
          game = { type: parsed.message.type, text: r.line, notable: r.notable };
          for (const type of r.after) out.push(...this.sendGame(e.from, type, {}, e.timestamp * 1000));
        } else if (parsed?.kind === 'request') {
          game = { type: parsed.message.type, text: describeRequest(parsed.message, this.nameOf(e.from)) };
        }
        conv.messages.insert({
          id: e.msgId,
          kind: 'private',
          from: e.from,
          text: e.text,
          binary: e.binary,
          timestamp: e.timestamp,
          mine: e.from === this.me.id,
          state: 'received',
          delivered: true,
          game,
        });
        // Unread: what is worth a look (your turn is; the bot moving the cursor is not).
        if (!this._isCurrent('user', e.from) && (!game || game.text || game.notable)) conv.unread++;
        return out;
      }
      case 'MSG_ACK': {
        const m = this.conversations.get(e.by)?.messages.get(e.msgId);
        if (m) {
          m.delivered = true;
          m.state = 'delivered';
        }
        return [];
      }
      case 'CH_UJOIN': {
        const c = this._channel(e.channel);
        c.members.add(e.user);
        // We created or joined it: show it (as `sigil client` does).
        if (e.user === this.me.id) this.select('channel', e.channel);
        return [];
      }
      case 'CH_ULEAVE':
        if (e.user === this.me.id) {
          this.channels.delete(e.channel);
          if (this._isCurrent('channel', e.channel)) this.current = this._firstChannel();
        } else {
          this.channels.get(e.channel)?.members.delete(e.user);
        }
        return [];
      case 'CH_STATUS': {
        const c = this._channel(e.id, e.name);
        c.leader = e.leader;
        c.status = e.status;
        if (e.election > c.election) c.election = e.election;
        c.online = e.online;
        if (e.leader) {
          c.members.add(e.leader);
          c.candidate = null;
        }
        this.directory.set(e.id, { id: e.id, name: e.name, leader: e.leader, status: e.status });
        if (this.current === null) this.select('channel', e.id);
        return e.status === 'healthy' ? this._flushQueued(c) : [];
      }
      case 'LST_CH':
        this.pageChannels.push(...e.channels);
        if (!e.more) {
          this.directory = new Map(this.pageChannels.map((c) => [c.id, c]));
          this.pageChannels = [];
        }
        return [];
      case 'CH_VOTE': {
        const c = this.channels.get(e.channel);
        if (c) {
          if (e.election > c.election) c.election = e.election;
          c.members.add(e.user);
          if (!c.leader) c.candidate = e.user;
        }
        return [];
      }
      case 'CH_ELECTED': {
        const c = this.channels.get(e.channel);
        if (c) {
          c.leader = e.leader;
          c.candidate = null;
          if (e.election > c.election) c.election = e.election;
          c.members.add(e.leader);
        }
        return [];
      }
      case 'CH_MSG': {
        const c = this._channel(e.id);
        c.members.add(e.from);
        const known = c.messages.get(e.msgId);
        if (known) {
          // Our own message came back: that is its receipt (§7.4).
          if (known.state !== 'committed') {
            known.state = 'pending';
            known.error = null;
          }
          // The server's clock stamps it (§4.1): ours was a guess.
          c.messages.retime(known, e.timestamp);
          known.recipients = e.recipients;
        } else {
          c.messages.insert(this._channelMessage(e.msgId, e.from, e, 'pending'));
          c.messages.get(e.msgId).recipients = e.recipients;
          if (e.from !== this.me.id && !this._isCurrent('channel', e.id)) c.unread++;
        }
        return [];
      }
      case 'CH_MSG_ACK':
        for (const id of [e.id, ...e.ids]) {
          for (const c of this.channels.values()) {
            const m = c.messages.get(id);
            if (!m) continue;
            for (const u of [e.user, ...e.users]) {
              m.ackers.add(u);
              c.members.add(u);
            }
            break;
          }
        }
        return [];
      case 'CH_MSG_COMMIT': {
        const c = this.channels.get(e.channel);
        if (!c) return [];
        for (const id of [e.id, ...e.ids]) {
          const m = c.messages.get(id);
          if (m) {
            m.state = 'committed';
            m.error = null;
          }
        }
        for (const a of e.acks) c.members.add(a);
        return [];
      }
      case 'CH_APPEND': {
        const c = this.channels.get(e.id);
        if (!c) return [];
        for (const h of e.messages) {
          c.members.add(h.from);
          const known = c.messages.get(h.id);
          if (known) {
            known.state = 'committed';
            known.error = null;
            c.messages.retime(known, h.timestamp);
            continue;
          }
          c.messages.insert(this._channelMessage(h.id, h.from, h, 'committed'));
          // The first load of a channel's history is not "unread"; what came while we were away is.
          if (c.historyLoaded && h.from !== this.me.id && !this._isCurrent('channel', e.id)) c.unread++;
        }
        if (!e.more) c.historyLoaded = true;
        return [];
      }
      case 'ERR':
        return this._onError(e, ctx);
      default:
        this.version--;
        return [];
    }
  }

  _channelMessage(id, from, e, state) {
    return {
      id,
      kind: 'channel',
      from,
      text: e.text,
      binary: e.binary,
      timestamp: e.timestamp,
      mine: from === this.me.id,
      state,
      ackers: new Set(),
      recipients: 0,
      error: null,
      resends: 0,
    };
  }

  _onError(e, ctx) {
    const words = describeError(e.code, e.reason);
    // An asynchronous error about one of our channel messages (§7.4).
    if (e.code === 'not_committed' && e.msgId) {
      for (const c of this.channels.values()) {
        const m = c.messages.get(e.msgId);
        if (m && m.state !== 'committed') {
          m.state = 'failed';
          m.error = 'Not confirmed by the channel in time.';
        }
      }
      return [];
    }
    if (ctx && ctx.kind === 'ch') {
      const m = this.channels.get(ctx.channel)?.messages.get(ctx.msgId);
      if (!m) return [];
      if (e.code === 'channel_unhealthy') {
        // Held back, and sent again as soon as the channel has a leader.
        m.state = 'queued';
        m.error = null;
      } else if (e.code === 'duplicate_msg') {
        // The server already has it (a resend after a reconnect): it will show as committed.
        if (m.state !== 'committed') m.state = 'pending';
      } else {
        m.state = 'failed';
        m.error = words;
      }
      return [];
    }
    if (ctx && ctx.kind === 'pv') {
      const m = this.conversations.get(ctx.to)?.messages.get(ctx.msgId);
      if (m && e.code !== 'duplicate_msg') {
        m.state = 'failed';
        m.error = words;
        if (m.game) this.games.get(ctx.to)?.onSendFailed(words, m.game.type);
      }
      return [];
    }
    if (ctx && ctx.user) {
      this.notify(ctx.what ? `${ctx.what}: ${words}` : words);
      return [];
    }
    if (BACKGROUND_CODES.has(e.code)) return [];
    // Frames dropped by the frame rate limit (§3.7): the client sends them again by itself.
    if (e.code === 'rate_limited' && e.ref === null) return [];
    this.notify(words);
    return [];
  }

  _flushQueued(c) {
    const out = [];
    for (const m of c.messages.order) {
      if (m.mine && m.state === 'queued') {
        m.state = 'sending';
        out.push(this._chMsg(c.id, m));
      }
    }
    return out;
  }

  /** True when some channel message of ours was sent and not echoed yet. */
  hasUnconfirmedSends() {
    for (const c of this.channels.values()) for (const m of c.messages.order) if (m.mine && m.state === 'sending') return true;
    return false;
  }

  /**
   * Sends again (same msg_id) the channel messages of ours still not echoed,
   * after the server dropped frames without saying which (§3.7). One that did
   * arrive is refused as duplicate_msg and shows as pending; one dropped too
   * often is failed, with a Retry.
   */
  resendUnconfirmed() {
    const out = [];
    for (const c of this.channels.values()) {
      for (const m of c.messages.order) {
        if (!m.mine || m.state !== 'sending') continue;
        m.resends++;
        if (m.resends > MAX_RESENDS) {
          m.state = 'failed';
          m.error = 'The server was too busy to take this message.';
        } else {
          out.push(this._chMsg(c.id, m));
        }
      }
    }
    this.version++;
    return out;
  }

  _chMsg(channel, m) {
    return cmd('CH_MSG', { id: channel, msg_id: m.id, msg: m.text }, { kind: 'ch', channel, msgId: m.id });
  }

  // ---- user actions --------------------------------------------------------

  /** Largest payload the server takes (SINFO); the default until it arrives. */
  get maxPayload() {
    return this.server?.maxPayload ?? 65536;
  }

  /**
   * Why `text` cannot go to the current conversation (too long, no target),
   * or null. Checked before sending: an over-long frame would be fatal (§1.2).
   */
  checkText(text) {
    const cur = this.current;
    if (!cur) return 'Join or create a channel first, or pick a person.';
    if (text.trim() === '') return 'Type a message first.';
    const max = this.maxPayload;
    if (cur.kind === 'channel') {
      const c = this.channels.get(cur.id);
      if (!c) return 'You are not in that channel any more.';
      // The relayed CH_MSG plus 96 bytes plus 27 per online member must fit (§7.4).
      const online = Math.max(c.online, 1);
      const relayed = encodePayload({
        id: c.id,
        msg_id: c.id,
        msg: text,
        from: this.me.id,
        timestamp: 2n ** 40n,
        recipients: online,
      }).length;
      const room = max - 96 - 27 * online - (relayed - utf8.encode(text).length);
      if (relayed + 96 + 27 * online > max) return tooLong(utf8.encode(text).length, room);
    } else {
      const size = encodePayload({ to: cur.id, msg_id: cur.id, msg: text, nonce: 2n ** 63n, timestamp: 2n ** 40n }).length;
      const room = max - (size - utf8.encode(text).length);
      if (size > max) return tooLong(utf8.encode(text).length, room);
    }
    return null;
  }

  /** Sends text to the current conversation; returns the commands (none if refused). */
  sendText(text, nowMs = Date.now()) {
    const problem = this.checkText(text);
    if (problem) {
      this.notify(problem);
      return [];
    }
    const cur = this.current;
    const id = newUlid(nowMs);
    const timestamp = Math.floor(nowMs / 1000);
    this.version++;
    if (cur.kind === 'channel') {
      const c = this.channels.get(cur.id);
      const m = this._channelMessage(id, this.me.id, { text, binary: false, timestamp }, this.connected ? 'sending' : 'queued');
      c.messages.insert(m);
      if (!this.connected || c.status !== 'healthy') {
        // No leader yet: held back and sent once the channel is healthy.
        m.state = 'queued';
        return [];
      }
      return [this._chMsg(c.id, m)];
    }
    const conv = this._conversation(cur.id);
    conv.messages.insert({
      id,
      kind: 'private',
      from: this.me.id,
      text,
      binary: false,
      timestamp,
      mine: true,
      state: 'sent',
      delivered: false,
      error: null,
    });
    return [cmd('PV_MSG', { to: cur.id, msg_id: id, msg: text }, { kind: 'pv', to: cur.id, msgId: id })];
  }

  // ---- connect four (game.js) ------------------------------------------------

  _game(userId) {
    let g = this.games.get(userId);
    if (!g) {
      g = new GameView({ bot: this.nameOf(userId) });
      this.games.set(userId, g);
    }
    g.bot = this.nameOf(userId);
    return g;
  }

  /** The game with `userId` (a bot), or null. */
  gameWith(userId) {
    return this.games.get(userId) ?? null;
  }

  /**
   * Sends `userId` a game request (`join`, `left`, `drop`, …): the commands,
   * none when it cannot go (the reason is then in the game's words).
   */
  sendGame(userId, type, fields = {}, nowMs = Date.now()) {
    const g = this._game(userId);
    this.version++;
    if (!this.connected) {
      g.error = 'You are offline: the game goes on when the connection is back.';
      return [];
    }
    if (!this.users.get(userId)?.online) {
      g.error = `${this.nameOf(userId)} is offline: the game waits until it is back.`;
      return [];
    }
    const text = g.request(type, fields);
    const id = newUlid(nowMs);
    this._conversation(userId).messages.insert({
      id,
      kind: 'private',
      from: this.me.id,
      text,
      binary: false,
      timestamp: Math.floor(nowMs / 1000),
      mine: true,
      state: 'sent',
      delivered: false,
      error: null,
      game: { type, text: describeOwnRequest(type, g.bot) },
    });
    return [cmd('PV_MSG', { to: userId, msg_id: id, msg: text }, { kind: 'pv', to: userId, msgId: id })];
  }

  /** Asks `userId` (a connect-four bot) for a seat, and shows the game. */
  playGame(userId, nowMs = Date.now()) {
    const g = this._game(userId);
    g.shown = true;
    return g.seated ? [] : this.sendGame(userId, 'join', {}, nowMs);
  }

  /** Hides or shows the game panel of the conversation with `userId`. */
  showGame(userId, shown) {
    const g = this.games.get(userId);
    if (g) g.shown = shown;
    this.version++;
  }

  /** Tries a failed message again, with the same msg_id (the server refuses a duplicate). */
  retry(kind, convId, msgId) {
    this.version++;
    if (kind === 'channel') {
      const c = this.channels.get(convId);
      const m = c?.messages.get(msgId);
      if (!m || m.state !== 'failed') return [];
      m.error = null;
      m.resends = 0;
      if (c.status !== 'healthy' || !this.connected) {
        m.state = 'queued';
        return [];
      }
      m.state = 'sending';
      return [this._chMsg(c.id, m)];
    }
    const m = this.conversations.get(convId)?.messages.get(msgId);
    if (!m || m.state !== 'failed') return [];
    m.state = 'sent';
    m.error = null;
    return [cmd('PV_MSG', { to: convId, msg_id: msgId, msg: m.text }, { kind: 'pv', to: convId, msgId })];
  }

  /** CH_NEW, after checking the name as the server would (§7.1). */
  createChannel(rawName) {
    const name = String(rawName).trim().replace(/^#+/, '');
    if (!CHANNEL_NAME_RE.test(name)) {
      return { error: 'A channel name is 1 to 64 letters, digits, or _ . - # (no spaces).' };
    }
    const taken = [...this.directory.values(), ...this.channels.values()].some(
      (c) => c.name.toLowerCase() === name.toLowerCase(),
    );
    if (taken) return { error: `A channel named ${name} already exists: join it instead.` };
    return { commands: [cmd('CH_NEW', { name }, { user: true, what: `Creating #${name}` })] };
  }

  /** CH_JOIN of a channel known by name (from the directory) or id. */
  joinChannel(nameOrId) {
    const wanted = String(nameOrId).trim().replace(/^#+/, '').toLowerCase();
    const all = [...this.directory.values()];
    const hit = all.find((c) => c.id === nameOrId) ?? all.find((c) => c.name.replace(/^#+/, '').toLowerCase() === wanted);
    if (!hit) return { error: `There is no channel named ${nameOrId}. Create it, or refresh the list.` };
    if (this.channels.has(hit.id)) {
      this.select('channel', hit.id);
      return { commands: [] };
    }
    return { commands: [cmd('CH_JOIN', { id: hit.id }, { user: true, what: `Joining #${hit.name.replace(/^#+/, '')}` })] };
  }

  leaveChannel(id) {
    const c = this.channels.get(id);
    if (!c) return [];
    return [cmd('CH_LEAVE', { id }, { user: true, what: `Leaving #${c.name}` })];
  }

  // ---- for tests and the debug hook ----------------------------------------

  /** A plain, JSON-safe picture of the state (no BigInt, no Map). */
  snapshot() {
    const channels = [...this.channels.values()].map((c) => ({
      id: c.id,
      name: c.name,
      leader: c.leader ? this.nameOf(c.leader) : null,
      leaderId: c.leader,
      term: c.election <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(c.election) : c.election.toString(),
      status: c.status,
      online: c.online,
      members: [...c.members].map((m) => this.nameOf(m)).sort(),
      unread: c.unread,
      messages: c.messages.order.map((m) => ({ id: m.id, from: this.nameOf(m.from), text: m.text, state: m.state })),
    }));
    const games = [...this.games].map(([id, g]) => ({ with: this.nameOf(id), ...g.snapshot() }));
    const conversations = [...this.conversations.values()].map((c) => ({
      with: this.nameOf(c.userId),
      unread: c.unread,
      messages: c.messages.order.map((m) => ({
        id: m.id,
        from: this.nameOf(m.from),
        text: m.text,
        state: m.state,
        delivered: m.delivered,
      })),
    }));
    const unread = channels.reduce((n, c) => n + c.unread, 0) + conversations.reduce((n, c) => n + c.unread, 0);
    return {
      me: { id: this.me.id, name: this.me.name },
      server: this.server ? { name: this.server.serverName, version: this.server.version, maxPayload: this.server.maxPayload } : null,
      current: this.current ? { ...this.current } : null,
      channels,
      directory: [...this.directory.values()].map((c) => ({ id: c.id, name: c.name, status: c.status })),
      users: [...this.users.values()].filter((u) => u.name).map((u) => ({ id: u.id, name: u.name, online: u.online })),
      conversations,
      games,
      unread,
    };
  }
}

function tooLong(bytes, room) {
  return `That message is too long for this server: ${bytes} bytes, and at most ${Math.max(0, room)} fit. Split it into shorter messages.`;
}
