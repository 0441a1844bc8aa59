// The client's timers and recoveries, on a fake clock and a fake transport:
// history pulls that get no answer or are dropped by the frame rate limit
// (§3.7), channel messages dropped likewise, a wrong key, and the batching
// and ordering details the review found.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SigilClient } from '../src/client.js';
import { Agent } from '../src/agent.js';
import { Chat } from '../src/chat.js';
import { defaultUrl } from '../src/connection.js';
import { decodeFrame } from '../src/frame.js';
import { encodePayload, decodePayload } from '../src/payload.js';
import { parseEvent } from '../src/events.js';
import { frameTag, hexToBytes, serverKey } from '../src/sign.js';

const me = { id: '01ARZ3NDEKTSV4RRFFQ69G5FAV', name: 'alice', key: hexToBytes('11'.repeat(32)) };
const bob = '01ARZ3NDEKTSV4RRFFQ69G5FB0';
const ch = '01ARZ3NDEKTSV4RRFFQ69G5FC0';
const flush = () => new Promise((r) => setImmediate(r));

/** Timers that run only when the test moves the time. */
class FakeClock {
  constructor() {
    this.t = 1_700_000_000_000;
    this.timers = new Map();
    this.seq = 0;
  }
  now() {
    return this.t;
  }
  mono() {
    return this.t;
  }
  setTimeout(f, ms) {
    const id = ++this.seq;
    this.timers.set(id, { f, at: this.t + ms, every: null });
    return id;
  }
  setInterval(f, ms) {
    const id = ++this.seq;
    this.timers.set(id, { f, at: this.t + ms, every: ms });
    return id;
  }
  clearTimeout(id) {
    this.timers.delete(id);
  }
  clearInterval(id) {
    this.timers.delete(id);
  }
  /** Timeouts pending (intervals not counted). */
  get timeouts() {
    return [...this.timers.values()].filter((x) => x.every === null).length;
  }
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const [id, x] of this.timers) if (x.at <= end && (!next || x.at < next[1].at)) next = [id, x];
      if (!next) break;
      const [id, x] = next;
      this.t = x.at;
      if (x.every === null) this.timers.delete(id);
      else x.at += x.every;
      x.f();
    }
    this.t = end;
  }
}

/** A client on a fake connection: `sent()` gives what it wrote, `deliver()` plays the server. */
function setup() {
  const clock = new FakeClock();
  let handlers = null;
  const frames = [];
  const client = new SigilClient({
    credentials: me,
    clock,
    random: () => 0.5,
    transport: (h) => {
      handlers = h;
      return { send: (bytes) => frames.push(decodeFrame(bytes)), close: () => {} };
    },
  });
  /** A server frame signed with `key` (a session key, §7.10), as recorded: replayable. */
  const frameUnder = (key, command, fields) => {
    const payload = encodePayload(fields);
    return { command, signature: frameTag(key, command, payload), payload };
  };
  const deliver = (command, fields, signed = true) => {
    const payload = encodePayload(fields);
    handlers.onFrame({ command, signature: signed ? frameTag(me.key, command, payload) : null, payload });
  };
  const sent = (command) =>
    frames.filter((f) => f.command === command).map((f) => decodePayload(f.payload));
  /** The session key of the last CNN sent. */
  const sessionKey = () => {
    const cnn = sent('CNN').at(-1);
    return serverKey(me.key, cnn.nonce, cnn.timestamp);
  };
  client.start();
  handlers.onOpen();
  return { client, clock, deliver, frameUnder, sent, sessionKey, handlers: () => handlers };
}

async function signedIn() {
  const s = setup();
  s.deliver('UCNN', { id: me.id, name: me.name });
  s.deliver('CH_STATUS', { id: ch, name: 'general', leader: me.id, status: 'healthy', election: 1, online: 1 });
  await flush();
  return s;
}

test('a pull whose frame was dropped (ERR rate_limited without ref) is asked again', async () => {
  const { client, clock, deliver, sent } = await signedIn();
  assert.equal(sent('CH_PULL').length, 1);
  assert.ok(client.pullInFlight);
  deliver('ERR', { code: 'rate_limited', reason: 'too many frames' });
  assert.equal(client.pullInFlight, null, 'not stuck waiting for an answer that never comes');
  assert.equal(client.chat.notices.length, 0, 'handled, not shown');
  clock.advance(1000);
  await flush();
  assert.equal(sent('CH_PULL').length, 2);
  assert.equal(sent('CH_PULL')[1].id, ch);
  // Answered: the next pull may go.
  deliver('CH_APPEND', { id: ch, anchor: null, messages: [], more: false });
  assert.equal(client.pullInFlight, null);
});

test('a pull with no answer at all is asked again after a timeout', async () => {
  const { clock, sent } = await signedIn();
  clock.advance(19_000);
  await flush();
  assert.equal(sent('CH_PULL').length, 1);
  clock.advance(2000);
  await flush();
  assert.equal(sent('CH_PULL').length, 2);
});

test('a pull refused while another is read is retried on a tracked timer, cleared by stop', async () => {
  const { client, clock, deliver, sent } = await signedIn();
  const ref = sent('CH_PULL')[0].nonce;
  deliver('ERR', { code: 'rate_limited', reason: 'a pull is being read', ref });
  assert.notEqual(client.timers.pullRetry, null);
  client.stop();
  assert.equal(clock.timeouts, 0, 'no timer outlives the session');
  clock.advance(5000);
  await flush();
  assert.equal(sent('CH_PULL').length, 1);
});

test('a channel message dropped by the rate limit is sent again, then failed with a Retry', async () => {
  const { client, clock, deliver, sent } = await signedIn();
  client.select('channel', ch);
  client.sendText('hello');
  await flush();
  const [first] = sent('CH_MSG');
  const msg = () => client.chat.channels.get(ch).messages.get(first.msg_id);
  assert.equal(msg().state, 'sending');
  for (let i = 1; i <= 3; i++) {
    deliver('ERR', { code: 'rate_limited', reason: 'too many frames' });
    clock.advance(1000);
    await flush();
    assert.equal(sent('CH_MSG').length, 1 + i, `resend ${i}`);
    assert.equal(sent('CH_MSG')[i].msg_id, first.msg_id, 'same msg_id: never shown twice');
    assert.notEqual(sent('CH_MSG')[i].nonce, first.nonce, 'a fresh nonce (§3.7)');
  }
  deliver('ERR', { code: 'rate_limited', reason: 'too many frames' });
  clock.advance(1000);
  await flush();
  assert.equal(sent('CH_MSG').length, 4);
  assert.equal(msg().state, 'failed');
  assert.ok(msg().error);
  // Retry sends it again; its echo makes it pending.
  client.retry('channel', ch, first.msg_id);
  await flush();
  assert.equal(msg().state, 'sending');
  deliver('CH_MSG', { id: ch, msg_id: first.msg_id, msg: 'hello', from: me.id, timestamp: Math.floor(clock.now() / 1000), recipients: 1 });
  assert.equal(msg().state, 'pending');
});

test('a wrong key ends at once, in words, without a retry', async () => {
  const { client, clock, deliver, handlers } = setup();
  deliver('ERR', { code: 'auth_failed', reason: 'no' }, false);
  handlers().onClose('closed');
  assert.equal(client.final, true);
  assert.match(client.problem, /did not accept this sign-in/);
  assert.equal(client.retryAt, null);
  assert.equal(clock.timeouts, 0);
});

test('own messages carry the corrected clock and move to the server time', async () => {
  const { client, clock, deliver } = await signedIn();
  client.select('channel', ch);
  // Our clock is 60 s ahead of the server's.
  client.stamper.setOffset(-60_000);
  client.sendText('mine');
  const list = client.chat.channels.get(ch).messages;
  const mine = list.order[0];
  assert.equal(mine.timestamp, Math.floor((clock.now() - 60_000) / 1000));
  const t = mine.timestamp;
  const other = '01ARZ3NDEKTSV4RRFFQ69G5FD9';
  deliver('CH_MSG', { id: ch, msg_id: other, msg: 'earlier', from: bob, timestamp: t - 5, recipients: 2 });
  assert.deepEqual(list.order.map((m) => m.text), ['earlier', 'mine']);
  // The server's copy stamps it before bob's: it moves up.
  deliver('CH_MSG', { id: ch, msg_id: mine.id, msg: 'mine', from: me.id, timestamp: t - 10, recipients: 2 });
  assert.deepEqual(list.order.map((m) => m.text), ['mine', 'earlier']);
  assert.equal(mine.state, 'pending');
});

test('a user or channel list half received before a disconnect is dropped', () => {
  const chat = new Chat(me);
  const ev = (c, f) => parseEvent(c, decodePayload(encodePayload(f)));
  chat.apply(ev('USR_LST', { users: [{ id: bob, status: 'online', name: 'ghost' }], more: true }));
  chat.apply(ev('LST_CH', { channels: [{ id: ch, name: 'ghost', leader: null, status: 'unhealthy' }], more: true }));
  chat.onDisconnected();
  chat.onConnected();
  chat.apply(ev('USR_LST', { users: [], more: false }));
  chat.apply(ev('LST_CH', { channels: [], more: false }));
  assert.equal(chat.users.has(bob), false);
  assert.equal(chat.directory.size, 0);
});

test('batched commits leave room for their acks under a small max_payload', () => {
  const U = (n) => `01ARZ3NDEKTSV4RRFFQ69G${String(n).padStart(4, '0')}`;
  const a = new Agent(me.id, () => 0.5);
  const maxPayload = 2048;
  a.onEvent({ type: 'SINFO', features: ['batch'], maxPayload, timeoutS: 180 }, 0);
  const users = Array.from({ length: 20 }, (_, i) => U(100 + i));
  const acks = [me.id, ...users.slice(0, 10)].sort();
  // 60 messages pending in a channel of 21: each needs 11 acks.
  for (let i = 0; i < 60; i++) a._channel(ch).pending.set(U(i), { acks: new Set(acks), of: 21, committing: null });
  const commits = Array.from({ length: 60 }, (_, i) => ({ name: 'CH_COMMIT', fields: { id: U(i), acks }, ctx: undefined }));
  const out = a.coalesce(commits);
  assert.ok(out.length > 1);
  let ids = 0;
  for (const c of out) {
    ids += 1 + c.fields.ids.length;
    assert.equal(c.fields.acks.length, 11);
    const payload = encodePayload({ ...c.fields, nonce: 2n ** 64n - 1n, timestamp: 2n ** 40n });
    assert.ok(payload.length <= maxPayload, `${payload.length} bytes > ${maxPayload}`);
  }
  assert.equal(ids, 60, 'every message committed');
});

test('the WebSocket address follows the page path and scheme', () => {
  assert.equal(defaultUrl(new URL('http://127.0.0.1:8080/')), 'ws://127.0.0.1:8080/ws');
  assert.equal(defaultUrl(new URL('http://127.0.0.1:8080/#cred=abc')), 'ws://127.0.0.1:8080/ws');
  assert.equal(defaultUrl(new URL('https://example.org/chat/')), 'wss://example.org/chat/ws');
  assert.equal(defaultUrl(new URL('https://example.org/chat/index.html?x=1')), 'wss://example.org/chat/ws');
});

test('a bound session checks every frame with its session key: a reflected own frame fails, and so does one from an earlier session', async () => {
  const { client, clock, frameUnder, sent, sessionKey, handlers } = setup();
  assert.equal(sent('CNN')[0].bind, true, 'asked at CNN (§7.10)');
  const k1 = sessionKey();
  handlers().onFrame(frameUnder(k1, 'UCNN', { id: me.id, name: me.name, bind: true }));
  assert.ok(client.authenticated && client.bound);
  const msg = frameUnder(k1, 'MSG', { from: bob, msg_id: '01ARZ3NDEKTSV4RRFFQ69G5FD1', msg: 'hi', timestamp: Math.floor(clock.now() / 1000) });
  handlers().onFrame(msg);
  assert.equal(client.chat.conversations.get(bob).messages.size, 1);
  // Our own CH_VOTE sent back to us: signed with the account key, it fails.
  await flush();
  handlers().onFrame(frameUnder(me.key, 'CH_VOTE', { channel: ch, election: 1, user: bob }));
  assert.equal(client.state, 'offline');
  assert.match(client.problem, /signature/);
  // The next session: the first one's MSG, replayed, fails too.
  clock.advance(2000);
  handlers().onOpen();
  const k2 = sessionKey();
  assert.notDeepEqual(k2, k1);
  handlers().onFrame(frameUnder(k2, 'UCNN', { id: me.id, name: me.name, bind: true }));
  assert.ok(client.bound);
  handlers().onFrame(msg);
  assert.equal(client.state, 'offline');
  assert.match(client.problem, /signature/);
});

test('a UCNN without bind falls back to the account key; one claiming bind under the account key is refused', () => {
  const plain = setup();
  plain.deliver('UCNN', { id: me.id, name: me.name });
  assert.ok(plain.client.authenticated && !plain.client.bound, 'a server without the extension');
  const forged = setup();
  forged.deliver('UCNN', { id: me.id, name: me.name, bind: true });
  assert.ok(!forged.client.authenticated);
  assert.match(forged.client.problem, /signature/);
});

test('a signed frame before our UCNN is refused without ending the client', () => {
  const { client, deliver } = setup();
  deliver('ERR', { code: 'session_replaced', reason: 'recorded in an earlier session' });
  assert.equal(client.final, false);
  assert.notEqual(client.retryAt, null, 'it tries again');
  assert.match(client.problem, /replayed/);
});

test('a fatal ERR ends the client only in a bound session, where it is fresh', () => {
  const plain = setup();
  plain.deliver('UCNN', { id: me.id, name: me.name });
  plain.deliver('ERR', { code: 'session_replaced', reason: 'maybe recorded earlier' });
  assert.equal(plain.client.final, false);
  assert.match(plain.client.problem, /keeps trying/);
  plain.handlers().onClose('closed');
  assert.notEqual(plain.client.retryAt, null);

  const bound = setup();
  const k = bound.sessionKey();
  bound.handlers().onFrame(bound.frameUnder(k, 'UCNN', { id: me.id, name: me.name, bind: true }));
  bound.handlers().onFrame(bound.frameUnder(k, 'ERR', { code: 'session_replaced', reason: 'now' }));
  bound.handlers().onClose('closed');
  assert.equal(bound.client.final, true);
  assert.equal(bound.client.retryAt, null);
});

test('a private message is shown once; one stamped before a plain session began is neither shown nor acknowledged', async () => {
  const { client, deliver, sent } = await signedIn();
  const start = Number(sent('CNN')[0].timestamp);
  const conv = () => client.chat.conversations.get(bob);
  const acked = () => sent('ACK_MSG').map((a) => a.msg_id);
  const A = '01ARZ3NDEKTSV4RRFFQ69G5FE1';
  deliver('MSG', { from: bob, msg_id: A, msg: 'once', timestamp: start });
  deliver('MSG', { from: bob, msg_id: A, msg: 'once', timestamp: start + 1 });
  await flush();
  assert.equal(conv().messages.size, 1, 'never shown twice');
  assert.deepEqual(acked(), [A, A], 'acknowledged again: its sender may not have learned of the first ack');
  const B = '01ARZ3NDEKTSV4RRFFQ69G5FE2';
  deliver('MSG', { from: bob, msg_id: B, msg: 'old', timestamp: start - 31 });
  await flush();
  assert.equal(conv().messages.get(B), undefined);
  assert.ok(!acked().includes(B));
  assert.match(client.chat.notices.at(-1).text, /replayed/);
  const C = '01ARZ3NDEKTSV4RRFFQ69G5FE3';
  deliver('MSG', { from: bob, msg_id: C, msg: 'skewed', timestamp: start - 30 });
  assert.ok(conv().messages.get(C), 'within skew_s: the server clock may be behind ours');
});
