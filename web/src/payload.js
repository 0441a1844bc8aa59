// Payloads: one msgpack map with str keys (PROTOCOL.md §1.3).
//
// Integers are unsigned; u64 values above 2^53 (nonces, election numbers)
// travel as BigInt. Small integers are written in their shortest encoding,
// as the server writes them.

import { encode, decode } from '@msgpack/msgpack';

const U32 = 0x1_0000_0000;
const U32N = BigInt(U32);

/** A payload the client cannot use. */
export class PayloadError extends Error {
  constructor(message) {
    super(message);
    this.name = 'PayloadError';
  }
}

// @msgpack/msgpack with useBigInt64 writes numbers >= 2^32 as floats and
// BigInts always as uint64: turn the first into BigInt, the second (when
// small) into numbers, so each integer gets a valid, short encoding.
function wire(value) {
  if (typeof value === 'bigint') {
    if (value < 0n || value >= 1n << 64n) throw new RangeError('an integer is a u64');
    return value < U32N ? Number(value) : value;
  }
  if (typeof value === 'number' && Number.isInteger(value) && value >= U32) return BigInt(value);
  if (Array.isArray(value)) return value.map(wire);
  if (value && typeof value === 'object' && !(value instanceof Uint8Array)) {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = wire(v);
    return out;
  }
  return value;
}

/** @param {Record<string, unknown>} map @returns {Uint8Array} */
export function encodePayload(map) {
  return encode(wire(map), { useBigInt64: true, ignoreUndefined: true });
}

const strictKeys = (key) => {
  if (typeof key !== 'string') throw new PayloadError('a map key is not a string');
  return key;
};

/**
 * Decodes a payload into a plain object; throws PayloadError when it is not
 * exactly one msgpack map with str keys.
 * @param {Uint8Array} bytes
 */
export function decodePayload(bytes) {
  if (bytes.length === 0) throw new PayloadError('empty payload');
  let value;
  try {
    value = decode(bytes, { useBigInt64: true, mapKeyConverter: strictKeys });
  } catch (e) {
    throw new PayloadError(`not one msgpack value: ${e && e.message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array) {
    throw new PayloadError('the payload is not a map');
  }
  return value;
}
