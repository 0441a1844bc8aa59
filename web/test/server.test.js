// The client core against a real `sigil serve`, over TCP (the frames are the
// bytes a WebSocket carries): sign-in, presence, a private message and its
// delivery ack, a channel with an election, acks and commits, and the
// history pulled after a reconnect, shown once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SigilClient } from '../src/client.js';
import { tcpTransport } from '../src/node/tcp.js';
import { fromObject } from '../src/credentials.js';
import { skipWithoutBinary, tempDir, addAccount, startServer, waitFor } from './helpers.js';

test('two accounts chat privately and in a channel', { skip: skipWithoutBinary, timeout: 60_000 }, async (t) => {
  const { dir, cleanup } = tempDir();
  const db = join(dir, 'chat.db');
  const alice = fromObject(addAccount(db, 'alice'));
  const bob = fromObject(addAccount(db, 'bob'));
  const server = await startServer(db);
  const clients = [];
  const logs = [];
  const make = (cred) => {
    const c = new SigilClient({
      credentials: cred,
      transport: tcpTransport('127.0.0.1', server.port),
      log: (level, msg) => logs.push(`${cred.name} ${level}: ${msg}`),
    });
    clients.push(c);
    c.start();
    return c;
  };
  t.after(async () => {
    for (const c of clients) c.stop();
    await server.stop();
    cleanup();
  });

  const a = make(alice);
  const b = make(bob);
  await waitFor('both signed in', () => a.snapshot().connected && b.snapshot().connected);
  await waitFor('alice sees bob online', () => a.snapshot().users.some((u) => u.name === 'bob' && u.online));
  await waitFor('SINFO', () => a.snapshot().server?.maxPayload === 65536);
  assert.ok(a.snapshot().bound && b.snapshot().bound, 'this server binds the sessions (§7.10)');

  // A private message, delivered and acknowledged.
  a.select('user', bob.id);
  a.sendText('hi bob');
  const got = await waitFor('bob receives it', () =>
    b.snapshot().conversations.find((c) => c.with === 'alice')?.messages.find((m) => m.text === 'hi bob'),
  );
  assert.equal(got.from, 'alice');
  await waitFor('alice sees it delivered', () =>
    a.snapshot().conversations.find((c) => c.with === 'bob')?.messages.find((m) => m.text === 'hi bob')?.delivered,
  );

  // A channel: created, led (alone, alice elects herself), joined by bob.
  assert.equal(a.createChannel('#general'), null);
  const general = () => a.snapshot().channels.find((c) => c.name === 'general');
  await waitFor('alice leads #general', () => general()?.leader === 'alice');
  assert.ok(general().term >= 1);
  b.refreshChannels();
  await waitFor('bob lists #general', () => b.snapshot().directory.some((c) => c.name === 'general'));
  assert.equal(b.joinChannel('general'), null);
  const bobGeneral = () => b.snapshot().channels.find((c) => c.name === 'general');
  await waitFor('bob is in #general, led by alice', () => bobGeneral()?.leader === 'alice' && bobGeneral()?.online === 2);
  assert.equal(b.snapshot().current.id, general().id, 'joining shows the channel');

  // Messages from both, each committed by the leader on a strict majority.
  a.select('channel', general().id);
  a.sendText('hello channel');
  b.sendText('hello from bob');
  const committed = (snap, text) => snap.channels.find((c) => c.name === 'general')?.messages.find((m) => m.text === text)?.state === 'committed';
  await waitFor('both messages committed for both', () =>
    ['hello channel', 'hello from bob'].every((text) => committed(a.snapshot(), text) && committed(b.snapshot(), text)),
  );

  // Bob goes away; alice talks; bob comes back and pulls what he missed, once.
  b.stop();
  await waitFor('alice sees bob offline', () => a.snapshot().users.some((u) => u.name === 'bob' && !u.online));
  a.sendText('while you were away');
  await waitFor('committed without bob', () => committed(a.snapshot(), 'while you were away'));
  b.start();
  await waitFor('bob pulled the missed message', () => committed(b.snapshot(), 'while you were away'), 15_000);
  const ids = bobGeneral().messages.map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, 'no message is shown twice');
  assert.equal(ids.length, 3);
  assert.equal(bobGeneral().unread, 0, 'bob is looking at #general');

  // After the reconnect, channel messages flow both ways again.
  await waitFor('a leader again', () => bobGeneral()?.leader && bobGeneral()?.online === 2);
  b.sendText('back again');
  await waitFor('committed after the reconnect', () => committed(a.snapshot(), 'back again') && committed(b.snapshot(), 'back again'));

  // A message the server would refuse as too large is refused here, in words, and the session lives.
  b.sendText('x'.repeat(70_000));
  assert.match(b.snapshot().channels.length ? b.chat.notices.at(-1).text : '', /too long/);
  assert.ok(b.snapshot().connected);
  assert.deepEqual(logs.filter((l) => /error/.test(l)), []);
});

test('a wrong key is refused for good, in words, without reconnecting', { skip: skipWithoutBinary, timeout: 30_000 }, async (t) => {
  const { dir, cleanup } = tempDir();
  const db = join(dir, 'bad.db');
  const acct = addAccount(db, 'carol');
  const server = await startServer(db);
  const c = new SigilClient({
    credentials: fromObject({ ...acct, key: '00'.repeat(32) }),
    transport: tcpTransport('127.0.0.1', server.port),
  });
  t.after(async () => {
    c.stop();
    await server.stop();
    cleanup();
  });
  c.start();
  await waitFor('refused', () => c.final && c.state === 'offline');
  assert.match(c.problem, /did not accept this sign-in/);
  assert.equal(c.retryAt, null);
});
