// The reference behaviour, ported from crates/client/src/agent.rs's tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, groupCommits, LEAD_DELAY_MS, YIELD_DELAY_MS } from '../src/agent.js';

const U = (n) => `0000000000000000000000000${n}`.slice(-26).replace(/^0/, '0');
const [me, b, c, ch] = [U(1), U(2), U(3), U(9)];
const status = (leader, online) => ({ type: 'CH_STATUS', id: ch, name: 'general', leader, status: leader ? 'healthy' : 'unhealthy', election: 0n, online });
const names = (cmds) => cmds.map((x) => [x.name, x.fields]);

test('a leaderless channel gets a candidate after a delay, and is pulled once', () => {
  const a = new Agent(me, () => 0.5);
  assert.deepEqual(names(a.onEvent(status(null, 3), 0)), [['CH_PULL', { id: ch, anchor: null }]]);
  assert.deepEqual(a.tick(LEAD_DELAY_MS[0] - 1), []);
  assert.deepEqual(names(a.tick(LEAD_DELAY_MS[1])), [['CH_LEAD', { channel: ch, election: 1n }]]);
  assert.deepEqual(a.onEvent(status(null, 3), 0), [], 'pulled once per connection');
});

test('votes for others once per election, and yields', () => {
  const a = new Agent(me, () => 0.99);
  a.onEvent(status(null, 3), 0);
  const vote = { type: 'CH_VOTE', channel: ch, election: 4n, user: b };
  assert.deepEqual(names(a.onEvent(vote, 10)), [['CH_VOTE', { channel: ch, election: 4n, user: b }]]);
  assert.deepEqual(a.onEvent(vote, 11), []);
  assert.deepEqual(a.tick(LEAD_DELAY_MS[1]), [], 'yields to the candidate');
  assert.deepEqual(names(a.tick(10 + YIELD_DELAY_MS[1])), [['CH_LEAD', { channel: ch, election: 5n }]]);
});

test('the leader commits on a strict majority, once', () => {
  const a = new Agent(me, () => 0.5);
  a.onEvent(status(me, 4), 0);
  a.onEvent({ type: 'CH_ELECTED', channel: ch, election: 1n, leader: me }, 0);
  const m = U(50);
  const msg = { type: 'CH_MSG', id: ch, msgId: m, text: 'x', binary: false, from: b, timestamp: 0, recipients: 4 };
  assert.deepEqual(names(a.onEvent(msg, 0)), [['ACK_CH_MSG', { id: m }]], '2 of 4 is no majority');
  const ack = { type: 'CH_MSG_ACK', id: m, user: c, users: [], ids: [] };
  assert.deepEqual(names(a.onEvent(ack, 0)), [['CH_COMMIT', { id: m, acks: [me, b, c].sort() }]]);
  assert.deepEqual(a.onEvent(ack, 0), [], 'commits once');
  assert.deepEqual(names(a.tick(600)), [['CH_COMMIT', { id: m, acks: [me, b, c].sort() }]], 'retried after 500 ms');
  a.onEvent({ type: 'CH_MSG_COMMIT', id: m, channel: ch, acks: [me, b, c], ids: [] }, 700);
  assert.deepEqual(a.tick(2000), [], 'nothing left to commit');
});

test('batched acks and commits are read and written (§7.9)', () => {
  const a = new Agent(me, () => 0.5);
  a.onEvent(status(me, 4), 0);
  a.onEvent({ type: 'CH_APPEND', id: ch, anchor: null, messages: [], more: false }, 0);
  a.onEvent({ type: 'CH_ELECTED', channel: ch, election: 1n, leader: me }, 0);
  a.onEvent({ type: 'SINFO', features: ['batch'], maxPayload: 65536, timeoutS: 180 }, 0);
  const [m1, m2] = [U(50), U(51)];
  const sent = [];
  for (const m of [m1, m2]) sent.push(...a.onEvent({ type: 'CH_MSG', id: ch, msgId: m, text: 'x', from: b, timestamp: 0, recipients: 4 }, 0));
  sent.push(...a.onEvent({ type: 'CH_MSG_ACK', id: m1, user: c, users: [], ids: [m2] }, 0));
  assert.deepEqual(names(a.coalesce(sent)), [
    ['ACK_CH_MSG', { id: m1, ids: [m2] }],
    ['CH_COMMIT', { id: m1, acks: [me, b, c].sort(), ids: [m2] }],
  ]);
  a.onEvent({ type: 'CH_MSG_COMMIT', id: m1, channel: ch, acks: [me, b, c], ids: [m2] }, 0);
  assert.equal(a.channels.get(ch).lastCommitted, m2);
  a.onEvent({ type: 'SINFO', features: [], maxPayload: 65536, timeoutS: 180 }, 0);
  const plain = [{ name: 'ACK_CH_MSG', fields: { id: m1 } }, { name: 'ACK_CH_MSG', fields: { id: m2 } }];
  assert.deepEqual(a.coalesce(plain), plain, 'no batching without the feature');
});

test('commits are grouped while their common acks suffice', () => {
  const u = [1, 2, 3, 4, 5, 6].map(U);
  const set = (ix) => new Set(ix.map((i) => u[i]));
  const [m1, m2, m3] = [U(50), U(51), U(52)];
  assert.deepEqual(
    groupCommits([
      { id: m1, need: 3, acks: set([0, 1, 2, 3]) },
      { id: m2, need: 3, acks: set([0, 1, 2, 4]) },
      { id: m3, need: 3, acks: set([3, 4, 5]) },
    ]),
    [
      { ids: [m1, m2], acks: [u[0], u[1], u[2]] },
      { ids: [m3], acks: [u[3], u[4], u[5]] },
    ],
  );
});

test('after a reconnect, history is pulled again from the last commit', () => {
  const a = new Agent(me, () => 0.5);
  a.onEvent(status(null, 1), 0);
  a.onEvent({ type: 'CH_APPEND', id: ch, anchor: null, messages: [{ id: U(70) }], more: false }, 0);
  a.reconnected();
  assert.deepEqual(names(a.onEvent(status(null, 1), 0)), [['CH_PULL', { id: ch, anchor: U(70) }]]);
  assert.deepEqual(names(a.onEvent({ type: 'CH_APPEND', id: ch, anchor: U(70), messages: [{ id: U(71) }], more: true }, 0)), [['CH_PULL', { id: ch, anchor: U(71) }]]);
});

test('a pull cut off by a disconnect resumes where it stopped, not at a live commit', () => {
  const a = new Agent(me, () => 0.5);
  a.onEvent(status(b, 2), 0);
  a.onEvent({ type: 'CH_APPEND', id: ch, anchor: null, messages: [{ id: U(51) }, { id: U(52) }], more: true }, 0);
  a.onEvent({ type: 'CH_MSG_COMMIT', id: U(59), channel: ch, acks: [b], ids: [] }, 0);
  a.reconnected();
  const again = a.onEvent(status(b, 2), 0);
  assert.ok(again.some((c) => c.name === 'CH_PULL' && c.fields.anchor === U(52)), JSON.stringify(again, (k, v) => (typeof v === 'bigint' ? String(v) : v)));
});
