import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrame, decodeFrame, FrameReader, FrameError } from '../src/frame.js';

const enc = new TextEncoder();
const bytes = (s) => enc.encode(s);
const SIG = 'ab'.repeat(64);

function rejects(input, code, options) {
  assert.throws(
    () => {
      const r = new FrameReader(options);
      r.push(typeof input === 'string' ? bytes(input) : input);
      r.end();
    },
    (e) => e instanceof FrameError && e.code === code,
    `${JSON.stringify(input)} should be ${code}`,
  );
}

test('encode then decode gives the frame back', () => {
  const payload = new Uint8Array([0x81, 0xa1, 0x61, 0x01, 0x0a, 0x0d, 0x00]);
  for (const sig of ['', SIG]) {
    const f = decodeFrame(encodeFrame('CH_MSG', sig, payload));
    assert.equal(f.command, 'CH_MSG');
    assert.deepEqual([...f.payload], [...payload]);
    assert.equal(f.signature === null ? '' : Buffer.from(f.signature).toString('hex'), sig);
  }
  assert.deepEqual([...encodeFrame('INFO', '', new Uint8Array())], [...bytes('INFO\n0\n\n')]);
});

test('a stream of frames split at every byte', () => {
  const a = encodeFrame('KALIVE', SIG, bytes('hello'));
  const b = encodeFrame('INFO', '', new Uint8Array());
  const stream = new Uint8Array([...bytes('\r\n\n'), ...a, ...bytes('\n'), ...b]);
  const r = new FrameReader();
  const got = [];
  for (const byte of stream) got.push(...r.push(new Uint8Array([byte])));
  r.end();
  assert.deepEqual(got.map((f) => f.command), ['KALIVE', 'INFO']);
  assert.equal(new TextDecoder().decode(got[0].payload), 'hello');
});

test('CRLF header lines (nc -C) are read, upper-case hex signatures too', () => {
  const f = decodeFrame(bytes(`INFO\r\n2\r\n${SIG.toUpperCase()}\r\nab`));
  assert.equal(f.command, 'INFO');
  assert.equal(f.signature.length, 64);
});

test('the grammar refuses what the server refuses (§1.2)', () => {
  rejects('info\n0\n\n', 'bad_frame');
  rejects('INFO\n007\n\n', 'bad_frame');
  rejects('INFO\n00\n\n', 'bad_frame');
  rejects('INFO\n\n\n', 'bad_frame');
  rejects('INFO\n1a\n\n', 'bad_frame');
  rejects('ABCDEFGHIJKLMNOPQ\n0\n\n', 'bad_frame');
  rejects('INFO\r0\n\n', 'bad_frame');
  rejects('INFO\n0\nabc\n', 'bad_frame');
  rejects(`INFO\n0\n${SIG}0\n`, 'bad_frame');
  rejects('INFO\n0\nzz\n', 'bad_frame');
  rejects('INFO\n5\n\nabc', 'bad_frame'); // ends inside the payload
  rejects('INF', 'bad_frame'); // ends inside a header
  rejects('INFO\n1025\n\n', 'too_large', { limit: 1024 });
  rejects('INFO\n10000\n', 'too_large', { limit: 1024 }); // at the 5th digit
  assert.throws(() => encodeFrame('info', '', new Uint8Array()), FrameError);
  assert.throws(() => encodeFrame('INFO', 'AB'.repeat(64), new Uint8Array()), FrameError);
});

test('a WebSocket message holds exactly one frame', () => {
  const one = encodeFrame('INFO', '', new Uint8Array());
  assert.throws(() => decodeFrame(new Uint8Array([...one, ...one])), FrameError);
  assert.throws(() => decodeFrame(one.subarray(0, one.length - 1)), FrameError);
  assert.throws(() => decodeFrame(new Uint8Array()), FrameError);
});

test('a clean end between frames, even after blank lines or a lone CR', () => {
  const r = new FrameReader();
  r.push(bytes('INFO\n0\n\n\n\r'));
  assert.doesNotThrow(() => r.end());
});
