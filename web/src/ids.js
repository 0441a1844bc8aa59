// Ids are ULIDs: 26 Crockford base32 characters, first one 0-7 (PROTOCOL.md §0).

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const ULID_RE = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;

/** True for a ULID in either case. */
export function isUlid(s) {
  return typeof s === 'string' && ULID_RE.test(s.toUpperCase());
}

/** The id uppercased (as the server writes ids), or null when it is not one. */
export function normId(s) {
  return isUlid(s) ? s.toUpperCase() : null;
}

/**
 * A fresh ULID: 48 bits of milliseconds then 80 random bits, so message ids
 * sort roughly by creation time and never repeat.
 * @param {number} [nowMs]
 */
export function newUlid(nowMs = Date.now()) {
  let time = '';
  let t = Math.max(0, Math.floor(nowMs));
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const rnd = new Uint8Array(16);
  globalThis.crypto.getRandomValues(rnd);
  let tail = '';
  for (let i = 0; i < 16; i++) tail += ALPHABET[rnd[i] % 32];
  return time + tail;
}
