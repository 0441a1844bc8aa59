// Signatures (PROTOCOL.md §2): tag = HMAC-SHA3-512(key, COMMAND || 0x0A || PAYLOAD),
// the key being the account's 32 secret bytes (not their hex text), or for a
// session the server bound (§7.10) the key derived from its CNN. Web Crypto
// has no SHA-3, hence @noble/hashes.

import { hmac } from '@noble/hashes/hmac.js';
import { sha3_512 } from '@noble/hashes/sha3.js';

const utf8 = new TextEncoder();

/** @param {string} hex an even number of hex digits @returns {Uint8Array} */
export function hexToBytes(hex) {
  if (typeof hex !== 'string' || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new Error('not a hex string');
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** @param {Uint8Array} bytes @returns {string} lowercase hex */
export function bytesToHex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/**
 * The 64-byte tag of a frame.
 * @param {Uint8Array} key 32 bytes
 * @param {string} command
 * @param {Uint8Array} payload the payload bytes exactly as sent
 */
export function frameTag(key, command, payload) {
  const mac = hmac.create(sha3_512, key);
  mac.update(utf8.encode(command));
  mac.update(new Uint8Array([0x0a]));
  mac.update(payload);
  return mac.digest();
}

const SERVER_KEY_LABEL = utf8.encode('sigil server v0');

/**
 * The key a server signs a bound session's frames with (server frame binding,
 * PROTOCOL.md §7.10): the first 32 bytes of
 * HMAC-SHA3-512(key, "sigil server v0" || 0x00 || nonce || timestamp), the
 * session's CNN nonce and timestamp as 8-byte big-endian integers.
 * @param {Uint8Array} key the account's 32 bytes
 * @param {bigint|number} nonce
 * @param {bigint|number} timestamp
 * @returns {Uint8Array} 32 bytes
 */
export function serverKey(key, nonce, timestamp) {
  const data = new Uint8Array(SERVER_KEY_LABEL.length + 1 + 16);
  data.set(SERVER_KEY_LABEL, 0);
  const view = new DataView(data.buffer);
  view.setBigUint64(SERVER_KEY_LABEL.length + 1, BigInt(nonce));
  view.setBigUint64(SERVER_KEY_LABEL.length + 9, BigInt(timestamp));
  return hmac(sha3_512, key, data).slice(0, 32);
}

/** Checks a received tag in constant time (its length is not secret). */
export function verifyTag(key, command, payload, tag) {
  if (!(tag instanceof Uint8Array) || tag.length !== 64) return false;
  const want = frameTag(key, command, payload);
  let diff = 0;
  for (let i = 0; i < 64; i++) diff |= want[i] ^ tag[i];
  return diff === 0;
}

/** A nonce drawn uniformly over the whole u64 range (§0), as a BigInt. */
export function randomNonce() {
  const b = new Uint8Array(8);
  globalThis.crypto.getRandomValues(b);
  return new DataView(b.buffer).getBigUint64(0);
}

/**
 * Unix seconds for stamping frames, never going backwards (§4.2 asks that
 * timestamps do not), corrected by an estimated offset to the server's clock.
 */
export class Stamper {
  constructor() {
    this.last = 0;
    this.offsetMs = 0;
  }

  /** A new estimate of server clock minus ours: timestamps may then step back once. */
  setOffset(offsetMs) {
    this.offsetMs = offsetMs;
    this.last = 0;
  }

  /** @param {number} nowMs wall-clock milliseconds */
  stamp(nowMs) {
    const t = Math.floor((nowMs + this.offsetMs) / 1000);
    this.last = Math.max(this.last, t);
    return this.last;
  }
}
