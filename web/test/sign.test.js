import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { frameTag, verifyTag, bytesToHex, hexToBytes, randomNonce, serverKey } from '../src/sign.js';
import { decodeFrame, encodeFrame } from '../src/frame.js';
import { encodePayload, decodePayload } from '../src/payload.js';
import { SIGIL_BIN, skipWithoutBinary, tempDir, addAccount } from './helpers.js';

const VECTORS = new URL('../../spec/vectors/hmac-sha3-512.json', import.meta.url);

test('the spec test vectors (spec/vectors/hmac-sha3-512.json)', { skip: existsSync(VECTORS) ? false : 'spec/vectors not found' }, () => {
  const v = JSON.parse(readFileSync(VECTORS, 'utf8'));
  assert.ok(v.frame_vectors.length > 0);
  for (const f of v.frame_vectors) {
    const tag = frameTag(hexToBytes(f.key), f.command, hexToBytes(f.payload));
    assert.equal(bytesToHex(tag), f.tag, f.name);
    assert.ok(verifyTag(hexToBytes(f.key), f.command, hexToBytes(f.payload), tag));
  }
});

test('session keys and bound frames match the spec vectors (§7.10)', { skip: existsSync(VECTORS) ? false : 'spec/vectors not found' }, () => {
  const v = JSON.parse(readFileSync(VECTORS, 'utf8'));
  assert.ok(v.server_keys.length > 0 && v.bound_frames.length > 0);
  for (const k of v.server_keys) {
    const key = serverKey(hexToBytes(k.key), BigInt(k.cnn_nonce), BigInt(k.cnn_timestamp));
    assert.equal(bytesToHex(key), k.server_key, k.name);
  }
  for (const f of v.bound_frames) {
    const key = serverKey(hexToBytes(f.key), BigInt(f.cnn_nonce), BigInt(f.cnn_timestamp));
    const payload = hexToBytes(f.payload);
    assert.equal(bytesToHex(frameTag(key, f.command, payload)), f.tag, f.name);
    // The same frame under the account key (a reflected client frame) does not pass.
    assert.ok(!verifyTag(key, f.command, payload, hexToBytes(f.account_key_tag)), f.name);
  }
});

test('a tag does not verify under another command, key or payload', () => {
  const key = new Uint8Array(32).fill(7);
  const payload = encodePayload({ nonce: 1, timestamp: 2 });
  const tag = frameTag(key, 'KALIVE', payload);
  assert.ok(verifyTag(key, 'KALIVE', payload, tag));
  assert.ok(!verifyTag(key, 'INFO', payload, tag));
  assert.ok(!verifyTag(new Uint8Array(32), 'KALIVE', payload, tag));
  assert.ok(!verifyTag(key, 'KALIVE', new Uint8Array([...payload, 0]), tag));
  assert.ok(!verifyTag(key, 'KALIVE', payload, tag.subarray(1)));
});

test('nonces cover the u64 range and survive msgpack exactly', () => {
  const n = randomNonce();
  assert.equal(typeof n, 'bigint');
  for (const value of [0n, 1n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 63n, 2n ** 64n - 1n, n]) {
    const back = decodePayload(encodePayload({ nonce: value })).nonce;
    assert.equal(BigInt(back), value);
  }
});

test('frames match the Rust implementation (sigil frame)', { skip: skipWithoutBinary }, () => {
  const { dir, cleanup } = tempDir();
  try {
    const db = join(dir, 'v.db');
    const acct = addAccount(db, 'vector');
    const credFile = join(dir, 'vector.cred');
    writeFileSync(credFile, JSON.stringify(acct) + '\n', { mode: 0o600 });
    const key = hexToBytes(acct.key);
    const cases = [
      ['KALIVE', { nonce: 1, timestamp: 1763700005 }],
      ['CNN', { id: acct.id, timestamp: 1763700000, nonce: 18446744073709551615n, batch: true }],
      ['CH_MSG', { id: '01ARZ3NDEKTSV4RRFFQ69G5FAV', msg_id: '01ARZ3NDEKTSV4RRFFQ69G5FAW', msg: 'héllo ✓', nonce: 4294967296, timestamp: 1763700001 }],
      ['CH_LEAD', { channel: '01ARZ3NDEKTSV4RRFFQ69G5FAV', election: 2n ** 40n, nonce: 99, timestamp: 1763700002 }],
    ];
    for (const [command, fields] of cases) {
      const json = JSON.stringify(fields, (_, v) => (typeof v === 'bigint' ? `@@${v}@@` : v)).replace(/"@@(\d+)@@"/g, '$1');
      const rust = new Uint8Array(execFileSync(SIGIL_BIN, ['frame', '--cred', credFile, command, json]));
      const frame = decodeFrame(rust);
      assert.equal(frame.command, command);
      // Our signer gives the tag the Rust signer gave, over the same bytes.
      assert.equal(bytesToHex(frameTag(key, command, frame.payload)), bytesToHex(frame.signature), command);
      // And our encoder writes the same bytes, frame and all (the tool writes keys sorted).
      const sortedFields = Object.fromEntries(Object.entries(fields).sort(([a], [b]) => (a < b ? -1 : 1)));
      const payload = encodePayload(sortedFields);
      const ours = encodeFrame(command, bytesToHex(frameTag(key, command, payload)), payload);
      assert.equal(Buffer.from(ours).toString('hex'), Buffer.from(rust).toString('hex'), command);
    }
  } finally {
    cleanup();
  }
});
