import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Chat } from '../src/chat.js';
import { parseEvent, EventError } from '../src/events.js';
import { decodePayload, encodePayload, PayloadError } from '../src/payload.js';

const me = { id: '01ARZ3NDEKTSV4RRFFQ69G5FAV', name: 'alice' };
const bob = '01ARZ3NDEKTSV4RRFFQ69G5FB0';
const ch = '01ARZ3NDEKTSV4RRFFQ69G5FC0';
const m1 = '01ARZ3NDEKTSV4RRFFQ69G5FD1';
const ev = (command, fields) => parseEvent(command, decodePayload(encodePayload(fields)));

test('history is keyed by msg id: a message seen live and pulled is shown once', () => {
  const c = new Chat(me);
  c.apply(ev('CH_STATUS', { id: ch, name: 'general', leader: null, status: 'unhealthy', election: 0, online: 2 }));
  c.apply(ev('CH_MSG', { id: ch, msg_id: m1, msg: 'hi', from: bob, timestamp: 100, recipients: 2 }));
  assert.equal(c.channels.get(ch).messages.get(m1).state, 'pending');
  c.apply(ev('CH_APPEND', { id: ch, anchor: null, messages: [{ id: m1, from: bob, msg: 'hi', timestamp: 100, acks: [bob, me.id] }], more: false }));
  c.apply(ev('CH_MSG_COMMIT', { id: m1, channel: ch, acks: [bob, me.id] }));
  const list = c.channels.get(ch).messages;
  assert.equal(list.size, 1);
  assert.equal(list.get(m1).state, 'committed');
});

test('a message too large for the server is refused locally, in words', () => {
  const c = new Chat(me);
  c.apply(ev('SINFO', { protocol_version: 0, server_name: 's', version: '0', timeout_s: 180, max_payload: 1024, features: [] }));
  c.apply(ev('CH_STATUS', { id: ch, name: 'general', leader: me.id, status: 'healthy', election: 1, online: 1 }));
  c.onConnected();
  assert.equal(c.checkText('short'), null);
  assert.match(c.checkText('x'.repeat(1000)), /too long/);
  assert.deepEqual(c.sendText('x'.repeat(1000)), []);
  assert.equal(c.sendText('fine').length, 1);
});

test('a message sent while the channel has no leader waits, then goes', () => {
  const c = new Chat(me);
  c.onConnected();
  c.apply(ev('CH_STATUS', { id: ch, name: 'general', leader: null, status: 'unhealthy', election: 0, online: 1 }));
  assert.deepEqual(c.sendText('early'), []);
  const out = c.apply(ev('CH_STATUS', { id: ch, name: 'general', leader: me.id, status: 'healthy', election: 1, online: 1 }));
  assert.deepEqual(out.map((x) => [x.name, x.fields.msg]), [['CH_MSG', 'early']]);
});

test('private messages: delivered on MSG_ACK, failed in words on user_offline', () => {
  const c = new Chat(me);
  c.apply(ev('UCNN', { id: bob, name: 'bob' }));
  c.onConnected();
  c.select('user', bob);
  const [sent] = c.sendText('hello');
  c.apply(ev('MSG_ACK', { msg_id: sent.fields.msg_id, by: bob }));
  assert.equal(c.conversations.get(bob).messages.get(sent.fields.msg_id).delivered, true);
  const [second] = c.sendText('again');
  c.apply(ev('ERR', { code: 'user_offline', reason: 'x', ref: 5 }), second.ctx);
  const m = c.conversations.get(bob).messages.get(second.fields.msg_id);
  assert.equal(m.state, 'failed');
  assert.match(m.error, /offline/);
});

test('bad server payloads are errors, never crashes', () => {
  assert.throws(() => decodePayload(new Uint8Array()), PayloadError);
  assert.throws(() => decodePayload(new Uint8Array([0x91, 0x01])), PayloadError);
  assert.throws(() => decodePayload(new Uint8Array([0x81, 0x01, 0x01])), PayloadError);
  assert.throws(() => decodePayload(new Uint8Array([0x80, 0x00])), PayloadError);
  assert.throws(() => parseEvent('CH_STATUS', { id: 'x' }), EventError);
  assert.throws(() => parseEvent('MSG', { from: me.id, msg_id: m1, msg: 3, timestamp: 1 }), EventError);
  assert.throws(() => parseEvent('CH_VOTE', { channel: ch, election: -1, user: bob }), EventError);
  assert.equal(parseEvent('NEW_THING', {}).type, 'OTHER');
});
