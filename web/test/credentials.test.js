import { test } from 'node:test';
import assert from 'node:assert/strict';
import { credFromHash, credFromLink, fromJsonText, base64urlEncode, CredentialError } from '../src/credentials.js';

const cred = { id: '01ARZ3NDEKTSV4RRFFQ69G5FAV', name: 'alice', key: '00'.repeat(31) + 'ff' };
const frag = () => base64urlEncode(new TextEncoder().encode(JSON.stringify(cred)));

test('a sign-in link (#cred=base64url, no padding) gives the credential', () => {
  const c = credFromHash(`#cred=${frag()}`);
  assert.equal(c.id, cred.id);
  assert.equal(c.name, 'alice');
  assert.equal(c.key.length, 32);
  assert.equal(c.key[31], 0xff);
  assert.equal(credFromLink(`http://127.0.0.1:7071/#cred=${frag()}`).name, 'alice');
  assert.equal(credFromHash('#other=1'), null);
});

test('a .cred file (JSON and a newline, key and id in either case)', () => {
  const c = fromJsonText(JSON.stringify({ ...cred, id: cred.id.toLowerCase(), key: cred.key.toUpperCase() }) + '\n');
  assert.equal(c.id, cred.id);
  assert.equal(c.keyHex, cred.key);
});

test('bad links and files are refused in words', () => {
  const bad = [
    () => credFromHash('#cred=%%%'),
    () => credFromHash('#cred=abc'),
    () => credFromHash(`#cred=${frag().slice(0, 30)}`),
    () => credFromLink('http://example/'),
    () => fromJsonText('not json'),
    () => fromJsonText(JSON.stringify({ ...cred, key: 'abc' })),
    () => fromJsonText(JSON.stringify({ ...cred, id: 'nope' })),
    () => fromJsonText(JSON.stringify({ ...cred, name: 'has space' })),
    () => fromJsonText('[1,2]'),
  ];
  for (const f of bad) assert.throws(f, (e) => e instanceof CredentialError && e.message.length > 20 && !/undefined/.test(e.message));
});
