// Credentials: an account's {id, name, key}, as `sigil account add` writes a
// .cred file, from a sign-in link (#cred=<base64url of that JSON>) or a file.
// Kept in memory for this tab, and in localStorage only when the person asks
// to be remembered.

import { normId } from './ids.js';
import { hexToBytes } from './sign.js';

const STORAGE_KEY = 'sigil.credentials';
const NAMES_KEY = 'sigil.names';
const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;

/** A credential that cannot be used; `message` is for people. */
export class CredentialError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CredentialError';
  }
}

/**
 * Checks a parsed credentials object.
 * @returns {{id: string, name: string, key: Uint8Array, keyHex: string}}
 */
export function fromObject(o, source = 'This file') {
  if (!o || typeof o !== 'object' || Array.isArray(o)) throw new CredentialError(`${source} is not a sigil credentials file.`);
  const id = normId(o.id);
  if (!id) throw new CredentialError(`${source} has no valid account id.`);
  if (typeof o.name !== 'string' || !NAME_RE.test(o.name)) throw new CredentialError(`${source} has no valid account name.`);
  if (typeof o.key !== 'string' || !/^[0-9a-fA-F]{64}$/.test(o.key)) {
    throw new CredentialError(`${source} has no valid key (it must be 64 hex digits).`);
  }
  const keyHex = o.key.toLowerCase();
  return { id, name: o.name, key: hexToBytes(keyHex), keyHex };
}

/** Parses the text of a .cred file (the JSON object and a newline). */
export function fromJsonText(text, source = 'This file') {
  let o;
  try {
    o = JSON.parse(text);
  } catch {
    throw new CredentialError(`${source} is not a sigil credentials file (it is not JSON).`);
  }
  return fromObject(o, source);
}

/** Decodes base64url (padding optional) to bytes; throws on anything else. */
export function base64urlDecode(s) {
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(s)) throw new Error('not base64url');
  const b64 = s.replace(/=+$/, '').replace(/-/g, '+').replace(/_/g, '/');
  if (b64.length % 4 === 1) throw new Error('not base64url');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** Encodes bytes as base64url without padding (as `sigil account add --link` prints). */
export function base64urlEncode(bytes) {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** The credential in a sign-in link's fragment value (after `cred=`). */
export function fromLinkValue(value) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(base64urlDecode(decodeURIComponent(value)));
  } catch {
    throw new CredentialError('This sign-in link is damaged or incomplete: it could not be decoded. Copy the whole link, or ask for a new one.');
  }
  return fromJsonText(text, 'This sign-in link');
}

/**
 * Reads `#cred=...` from a URL fragment. Returns null when there is none.
 * @param {string} hash location.hash
 */
export function credFromHash(hash) {
  const params = new URLSearchParams(String(hash).replace(/^#/, ''));
  const value = params.get('cred');
  if (value === null) return null;
  // URLSearchParams turns '+' into ' ': base64url has no '+', so put back nothing, just refuse spaces.
  return fromLinkValue(value.trim());
}

/** The credential from a full sign-in link pasted by a person. */
export function credFromLink(link) {
  const s = String(link).trim();
  const at = s.indexOf('#');
  if (at < 0) {
    // A bare value is accepted too.
    if (/^[A-Za-z0-9_-]{20,}$/.test(s)) return fromLinkValue(s);
    throw new CredentialError('That is not a sign-in link: it should end with #cred=…');
  }
  const found = credFromHash(s.slice(at));
  if (!found) throw new CredentialError('That is not a sign-in link: it should end with #cred=…');
  return found;
}

function storage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    // Storage can be disabled (privacy settings): then nothing is remembered.
    return null;
  }
}

/** Stores the credential on this device (the person ticked "remember me"). */
export function remember(cred) {
  const s = storage();
  if (!s) return false;
  try {
    s.setItem(STORAGE_KEY, JSON.stringify({ id: cred.id, name: cred.name, key: cred.keyHex }));
    return true;
  } catch {
    return false;
  }
}

/** The remembered credential, or null. A damaged entry is removed. */
export function recall() {
  const s = storage();
  if (!s) return null;
  const text = s.getItem(STORAGE_KEY);
  if (!text) return null;
  try {
    return fromJsonText(text);
  } catch {
    forget();
    return null;
  }
}

/** Forgets everything this page stored. */
export function forget() {
  const s = storage();
  if (!s) return;
  try {
    s.removeItem(STORAGE_KEY);
    s.removeItem(NAMES_KEY);
  } catch {
    // Nothing to forget.
  }
}

/** Names of people seen, kept with a remembered credential so offline people keep their names. */
export function recallNames() {
  try {
    const o = JSON.parse(storage()?.getItem(NAMES_KEY) ?? '{}');
    return o && typeof o === 'object' && !Array.isArray(o) ? o : {};
  } catch {
    return {};
  }
}

export function rememberNames(names) {
  try {
    storage()?.setItem(NAMES_KEY, JSON.stringify(names));
  } catch {
    // Best effort.
  }
}
