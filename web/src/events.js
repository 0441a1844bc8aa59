// Server events: field checks and normalisation (PROTOCOL.md §3, §5, §6, §7).
//
// Every event is checked against its table before the client acts on it, so
// a malformed frame is reported and dropped instead of corrupting state.
// Ids are uppercased, u64 election numbers become BigInt, timestamps and
// counts become numbers. Unknown keys are ignored (§1.3).

import { normId } from './ids.js';

/** A server frame whose payload does not match its command. */
export class EventError extends Error {
  constructor(message) {
    super(message);
    this.name = 'EventError';
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function need(p, k) {
  if (!Object.prototype.hasOwnProperty.call(p, k)) throw new EventError(`missing ${k}`);
  return p[k];
}
function str(p, k) {
  const v = need(p, k);
  if (typeof v !== 'string') throw new EventError(`${k} is not a string`);
  return v;
}
function id(p, k) {
  const v = normId(need(p, k));
  if (!v) throw new EventError(`${k} is not an id`);
  return v;
}
function idOrNil(p, k) {
  const v = p[k];
  return v === null || v === undefined ? null : id(p, k);
}
function big(v, k) {
  if (typeof v === 'bigint' && v >= 0n) return v;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  throw new EventError(`${k} is not an unsigned integer`);
}
function u64(p, k) {
  return big(need(p, k), k);
}
/** A u64 as a number (timestamps, counts): exact up to 2^53, clamped above. */
function num(p, k) {
  const v = u64(p, k);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}
function optNum(p, k, dflt) {
  return p[k] === undefined ? dflt : num(p, k);
}
function bool(p, k) {
  const v = need(p, k);
  if (typeof v !== 'boolean') throw new EventError(`${k} is not a bool`);
  return v;
}
function arr(p, k, each) {
  const v = need(p, k);
  if (!Array.isArray(v)) throw new EventError(`${k} is not an array`);
  return v.map((x, i) => each(x, `${k}[${i}]`));
}
function optArr(p, k, each) {
  return p[k] === undefined || p[k] === null ? [] : arr(p, k, each);
}
function obj(v, k) {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array) {
    throw new EventError(`${k} is not a map`);
  }
  return v;
}
const anId = (v, k) => {
  const n = normId(v);
  if (!n) throw new EventError(`${k} is not an id`);
  return n;
};
const aStr = (v, k) => {
  if (typeof v !== 'string') throw new EventError(`${k} is not a string`);
  return v;
};

/**
 * A message body (bin|str) as text for display. A `bin` that is valid UTF-8
 * is shown as text; other binary content is described, not dumped.
 */
function body(p, k) {
  const v = need(p, k);
  if (typeof v === 'string') return { text: v, binary: false };
  if (v instanceof Uint8Array) {
    try {
      return { text: utf8.decode(v), binary: true };
    } catch {
      return { text: `[${v.length} bytes of binary data]`, binary: true };
    }
  }
  throw new EventError(`${k} is neither bin nor str`);
}

const historyEntry = (v, k) => {
  const m = obj(v, k);
  return { id: id(m, 'id'), from: id(m, 'from'), ...body(m, 'msg'), timestamp: num(m, 'timestamp'), acks: arr(m, 'acks', anId) };
};

const PARSERS = {
  SINFO: (p) => ({
    protocolVersion: num(p, 'protocol_version'),
    serverName: str(p, 'server_name'),
    version: str(p, 'version'),
    timeoutS: num(p, 'timeout_s'),
    cnnTimeoutS: optNum(p, 'cnn_timeout_s', 10),
    skewS: optNum(p, 'skew_s', 30),
    maxPayload: optNum(p, 'max_payload', 65536),
    minOnline: optNum(p, 'min_online', 1),
    // A server without the field speaks no extension.
    features: optArr(p, 'features', aStr),
  }),
  UCNN: (p) => ({ id: id(p, 'id'), name: str(p, 'name') }),
  UDCNN: (p) => ({ id: id(p, 'id'), name: str(p, 'name') }),
  USR_LST: (p) => ({
    users: arr(p, 'users', (v, k) => {
      const u = obj(v, k);
      return { id: id(u, 'id'), status: str(u, 'status'), name: str(u, 'name') };
    }),
    more: p.more === undefined ? false : bool(p, 'more'),
  }),
  USR_ADD: (p) => ({ id: id(p, 'id'), status: str(p, 'status'), name: str(p, 'name') }),
  USR_RMD: (p) => ({ id: id(p, 'id') }),
  USR_HSK: (p) => ({ id: id(p, 'id') }),
  MSG: (p) => ({ from: id(p, 'from'), msgId: id(p, 'msg_id'), ...body(p, 'msg'), timestamp: num(p, 'timestamp') }),
  MSG_ACK: (p) => ({ msgId: id(p, 'msg_id'), by: id(p, 'by') }),
  CH_UJOIN: (p) => ({ channel: id(p, 'channel'), user: id(p, 'user') }),
  CH_ULEAVE: (p) => ({ channel: id(p, 'channel'), user: id(p, 'user') }),
  CH_STATUS: (p) => ({
    id: id(p, 'id'),
    name: str(p, 'name'),
    leader: idOrNil(p, 'leader'),
    status: str(p, 'status'),
    election: u64(p, 'election'),
    online: num(p, 'online'),
  }),
  LST_CH: (p) => ({
    channels: arr(p, 'channels', (v, k) => {
      const c = obj(v, k);
      return { id: id(c, 'id'), name: str(c, 'name'), leader: idOrNil(c, 'leader'), status: str(c, 'status') };
    }),
    more: p.more === undefined ? false : bool(p, 'more'),
  }),
  CH_VOTE: (p) => ({ channel: id(p, 'channel'), election: u64(p, 'election'), user: id(p, 'user') }),
  CH_ELECTED: (p) => ({ channel: id(p, 'channel'), election: u64(p, 'election'), leader: id(p, 'leader') }),
  CH_MSG: (p) => ({
    id: id(p, 'id'),
    msgId: id(p, 'msg_id'),
    ...body(p, 'msg'),
    from: id(p, 'from'),
    timestamp: num(p, 'timestamp'),
    // 0 from a server that does not send it: the agent then uses the online count.
    recipients: optNum(p, 'recipients', 0),
  }),
  CH_MSG_ACK: (p) => ({
    id: id(p, 'id'),
    user: id(p, 'user'),
    users: optArr(p, 'users', anId),
    ids: optArr(p, 'ids', anId),
  }),
  CH_MSG_COMMIT: (p) => ({
    id: id(p, 'id'),
    channel: id(p, 'channel'),
    acks: arr(p, 'acks', anId),
    ids: optArr(p, 'ids', anId),
  }),
  CH_APPEND: (p) => ({
    id: id(p, 'id'),
    anchor: idOrNil(p, 'anchor'),
    messages: arr(p, 'messages', historyEntry),
    more: p.more === undefined ? false : bool(p, 'more'),
  }),
  CH_MSG_CONFIRM: (p) => ({ id: id(p, 'id'), message: id(p, 'message') }),
  ERR: (p) => ({
    code: str(p, 'code'),
    reason: p.reason === undefined ? '' : str(p, 'reason'),
    ref: p.ref === undefined || p.ref === null ? null : u64(p, 'ref'),
    msgId: p.msg_id === undefined || p.msg_id === null ? null : id(p, 'msg_id'),
  }),
};

/**
 * Checks and normalises an event. Unknown commands come back as
 * `{type: 'OTHER', command}` (a newer server may send more).
 * @param {string} command
 * @param {Record<string, unknown>} payload decoded msgpack map
 */
export function parseEvent(command, payload) {
  const parse = Object.prototype.hasOwnProperty.call(PARSERS, command) ? PARSERS[command] : null;
  if (!parse) return { type: 'OTHER', command };
  return { type: command, ...parse(payload) };
}

/** Error codes after which the server closes the connection (§5). */
export const FATAL_CODES = new Set([
  'bad_frame',
  'too_large',
  'auth_failed',
  'not_authenticated',
  'timeout',
  'stale',
  'replay',
  'bad_signature',
  'session_replaced',
  'slow_consumer',
  'account_removed',
  'shutdown',
]);

/** Codes after which reconnecting cannot help (as `sigil client` decides, §7.8). */
export const FINAL_CODES = new Set(['auth_failed', 'account_removed', 'session_replaced']);

const WORDS = {
  bad_frame: 'The server could not read a frame from this page.',
  too_large: 'A message was too large for the server.',
  auth_failed: 'The server did not accept this sign-in: the key is wrong, or the account was removed or got a new key. Ask for a new sign-in link.',
  not_authenticated: 'The page spoke before signing in.',
  timeout: 'The connection was idle for too long.',
  stale: "This device's clock is too far from the server's. Check the date and time settings.",
  replay: 'The server saw a repeated request and closed the connection.',
  bad_signature: 'The server could not verify a request from this page.',
  session_replaced: 'You signed in somewhere else (another tab or device), so this window was disconnected.',
  slow_consumer: 'The connection could not keep up with the server.',
  account_removed: 'This account was removed from the server.',
  shutdown: 'The server is restarting.',
  unknown_command: 'The server does not know a request this page sent.',
  bad_payload: 'The server refused a request as malformed.',
  no_such_user: 'That person does not exist on this server.',
  user_offline: 'That person is offline, so the message could not be delivered.',
  no_such_channel: 'That channel does not exist.',
  not_member: 'You are not a member of that channel.',
  already_member: 'You are already in that channel.',
  name_taken: 'A channel with that name already exists.',
  channel_unhealthy: 'The channel has no leader right now (an election is under way).',
  not_leader: 'This client is no longer the channel leader.',
  bad_election: 'An election request came too late.',
  already_voted: 'This client already voted in that election.',
  duplicate_msg: 'That message was already sent.',
  unknown_msg: 'The server does not know that message.',
  bad_commit: 'A commit was refused; it will be tried again.',
  not_committed: 'A message was not confirmed by the channel in time and was dropped.',
  merge_unconfirmed: 'A merged message was not confirmed in time.',
  rate_limited: 'Too many requests at once; slow down a little.',
  already_authenticated: 'This connection was already signed in.',
  read_only: 'The server cannot save anything right now (its disk is full or failing); chat in channels resumes once it can.',
};

/** An error code in words for people (codes are for machines, §5). */
export function describeError(code, reason = '') {
  return WORDS[code] ?? `The server reported a problem${reason ? `: ${reason}` : '.'}`;
}
