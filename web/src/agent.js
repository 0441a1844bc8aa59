// The reference client behaviour (PROTOCOL.md §7.8), as a pure state machine:
// a port of crates/client/src/agent.rs.
//
// Fed events and the time, it answers with the commands a well-behaved
// client sends on its own: it acknowledges what it receives, stands for
// election after a random delay in a leaderless channel, votes for other
// candidates, commits as leader once a strict majority acknowledged,
// confirms merged messages it has, and pulls missed history after
// (re)connecting. No I/O and no clock of its own: the caller passes `nowMs`.

/** Delay before standing in a leaderless channel (ms, random in range). */
export const LEAD_DELAY_MS = [150, 1200];
/** After voting for someone, wait this long before standing ourselves. */
export const YIELD_DELAY_MS = [1500, 3000];
/** A refused or unanswered commit is tried again after this long (ms). */
export const COMMIT_RETRY_MS = 500;
/** Ids per batched frame at most (27 bytes each): message ids, and a CH_COMMIT's acks with them. */
export const MAX_IDS_PER_FRAME = 1024;

/** `yes` of `n` is a strict majority when 2 × yes > n (§7). */
export const isMajority = (yes, n) => 2 * yes > n;
/** The fewest acks that are a strict majority of `n`. */
export const smallestMajority = (n) => Math.floor(n / 2) + 1;

/** A command to send: its name and fields (nonce and timestamp come later). */
export const cmd = (name, fields = {}, ctx = undefined) => ({ name, fields, ctx });

const sorted = (set) => [...set].sort();

/**
 * Groups messages ready to commit, in order, into as few CH_COMMITs as possible.
 * @param {{id: string, need: number, acks: Set<string>}[]} ready
 * @returns {{ids: string[], acks: string[]}[]}
 */
export function groupCommits(ready) {
  const groups = [];
  for (const { id, need, acks } of ready) {
    const last = groups[groups.length - 1];
    if (last) {
      const shared = new Set([...last.common].filter((a) => acks.has(a)));
      const needed = Math.max(last.need, need);
      if (shared.size >= needed) {
        last.ids.push(id);
        last.need = needed;
        last.common = shared;
        continue;
      }
    }
    groups.push({ ids: [id], need, common: new Set(acks) });
  }
  // The fewest acks that make every message's majority: the frames stay small.
  return groups.map((g) => ({ ids: g.ids, acks: sorted(g.common).slice(0, Math.max(1, g.need)) }));
}

function chunks(list, size) {
  const out = [];
  for (let i = 0; i < list.length; i += size) out.push(list.slice(i, i + size));
  return out;
}

export class Agent {
  /**
   * @param {string} me our account id
   * @param {() => number} [random] uniform in [0, 1): the random delays
   */
  constructor(me, random = Math.random) {
    this.me = me;
    this.random = random;
    /** @type {Map<string, ReturnType<typeof newChannel>>} */
    this.channels = new Map();
    this.batching = false;
    this.idsPerFrame = MAX_IDS_PER_FRAME;
  }

  _delay([lo, hi]) {
    return lo + Math.floor(this.random() * (hi - lo));
  }

  _channel(id) {
    let c = this.channels.get(id);
    if (!c) {
      c = newChannel();
      this.channels.set(id, c);
    }
    return c;
  }

  /** The connection was re-established: pull every channel again, forget leaders. */
  reconnected() {
    for (const c of this.channels.values()) {
      c.pulled = false;
      // Until the pull reaches the end, live commits do not move the anchor:
      // a pull cut off by a disconnect resumes where it stopped.
      c.synced = false;
      c.leader = null;
      c.leadAt = null;
      c.pending.clear();
    }
  }

  /**
   * Handles one event at `nowMs`; returns the commands to send.
   * @param {{type: string} & Record<string, any>} e a parsed event (events.js)
   */
  onEvent(e, nowMs) {
    const out = [];
    switch (e.type) {
      case 'MSG':
        out.push(cmd('ACK_MSG', { from: e.from, msg_id: e.msgId }));
        break;
      case 'SINFO':
        this.batching = e.features.includes('batch');
        // 27 bytes per id (28 to be safe) plus some room for the rest of the payload.
        this.idsPerFrame = Math.max(1, Math.min(MAX_IDS_PER_FRAME, Math.floor((e.maxPayload - 128) / 28)));
        break;
      case 'CH_STATUS': {
        const delay = this._delay(LEAD_DELAY_MS);
        const c = this._channel(e.id);
        c.name = e.name;
        c.leader = e.leader;
        if (e.election > c.election) c.election = e.election;
        c.online = e.online;
        c.healthy = e.status === 'healthy';
        if (c.leader) c.leadAt = null;
        else if (c.leadAt === null) c.leadAt = nowMs + delay;
        if (!c.pulled) {
          c.pulled = true;
          out.push(cmd('CH_PULL', { id: e.id, anchor: c.lastCommitted }));
        }
        break;
      }
      case 'CH_ULEAVE':
        if (e.user === this.me) this.channels.delete(e.channel);
        break;
      case 'CH_VOTE': {
        const delay = this._delay(YIELD_DELAY_MS);
        const c = this._channel(e.channel);
        if (e.election > c.election) c.election = e.election;
        const key = e.election.toString();
        if (e.user !== this.me && !c.voted.has(key)) {
          // Like Raft: grant the vote and hold back our own candidacy.
          c.voted.add(key);
          out.push(cmd('CH_VOTE', { channel: e.channel, election: e.election, user: e.user }));
          c.leadAt = nowMs + delay;
        }
        // Votes are per election; old ones need not be remembered.
        const keepFrom = c.election > 16n ? c.election - 16n : 0n;
        for (const v of c.voted) if (BigInt(v) < keepFrom) c.voted.delete(v);
        break;
      }
      case 'CH_ELECTED': {
        const c = this._channel(e.channel);
        c.leader = e.leader;
        if (e.election > c.election) c.election = e.election;
        c.leadAt = null;
        if (e.leader === this.me) for (const id of [...c.pending.keys()].sort()) this._tryCommit(e.channel, id, nowMs, out);
        break;
      }
      case 'CH_MSG': {
        const c = this._channel(e.id);
        const acks = new Set([e.from]);
        if (e.from !== this.me) {
          out.push(cmd('ACK_CH_MSG', { id: e.msgId }));
          acks.add(this.me);
        }
        const of = e.recipients > 0 ? e.recipients : Math.max(1, c.online);
        c.pending.set(e.msgId, { acks, of, committing: null });
        this._tryCommit(e.id, e.msgId, nowMs, out);
        break;
      }
      case 'CH_MSG_ACK':
        // Each of `user` and `users` acknowledged each of `id` and `ids` (§7.3, §7.9).
        for (const id of [e.id, ...e.ids]) {
          for (const [channel, c] of this.channels) {
            const p = c.pending.get(id);
            if (!p) continue;
            p.acks.add(e.user);
            for (const u of e.users) p.acks.add(u);
            this._tryCommit(channel, id, nowMs, out);
            break;
          }
        }
        break;
      case 'CH_MSG_COMMIT': {
        const c = this._channel(e.channel);
        // `ids`: further commits, in commit order (batching, §7.9).
        for (const id of [e.id, ...e.ids]) {
          c.pending.delete(id);
          c.committed.add(id);
          if (c.synced) c.lastCommitted = id;
        }
        break;
      }
      case 'CH_APPEND': {
        const c = this._channel(e.id);
        for (const m of e.messages) {
          c.pending.delete(m.id);
          c.committed.add(m.id);
        }
        if (e.messages.length) c.lastCommitted = e.messages[e.messages.length - 1].id;
        if (e.more) out.push(cmd('CH_PULL', { id: e.id, anchor: c.lastCommitted }));
        else c.synced = true;
        break;
      }
      case 'CH_MSG_CONFIRM': {
        const c = this.channels.get(e.id);
        if (c && c.committed.has(e.message)) out.push(cmd('ACK_CH_MSG', { id: e.message }));
        break;
      }
      case 'ERR':
        if (e.code === 'bad_commit') {
          // Which commit failed is not said: retry them all, on the next ack or tick.
          for (const c of this.channels.values()) for (const p of c.pending.values()) p.committing = null;
        } else if (e.code === 'not_committed' && e.msgId) {
          for (const c of this.channels.values()) c.pending.delete(e.msgId);
        }
        break;
      default:
        break;
    }
    return out;
  }

  /** As leader, commits `msgId` once a strict majority acknowledged it (again, if due). */
  _tryCommit(channel, msgId, nowMs, out) {
    const c = this.channels.get(channel);
    if (!c || c.leader !== this.me) return;
    const p = c.pending.get(msgId);
    if (!p) return;
    const due = p.committing === null || nowMs >= p.committing + COMMIT_RETRY_MS;
    if (due && isMajority(p.acks.size, p.of)) {
      p.committing = nowMs;
      out.push(cmd('CH_COMMIT', { id: msgId, acks: sorted(p.acks) }));
    }
  }

  /**
   * Batches commands about to be sent together (§7.9), once the server's
   * SINFO named `batch`: all ACK_CH_MSGs become one, commits as few CH_COMMITs
   * as groupCommits allows. Other commands keep their order; a batch takes
   * the place of its first command.
   */
  coalesce(commands) {
    if (!this.batching) return commands;
    const out = [];
    const acks = [];
    const commits = [];
    let ackAt = -1;
    let commitAt = -1;
    for (const c of commands) {
      if (c.name === 'ACK_CH_MSG') {
        if (ackAt < 0) ackAt = out.length;
        acks.push(c.fields.id, ...(c.fields.ids ?? []));
      } else if (c.name === 'CH_COMMIT' && !(c.fields.ids && c.fields.ids.length)) {
        let of = 0;
        for (const ch of this.channels.values()) {
          const p = ch.pending.get(c.fields.id);
          if (p) {
            of = p.of;
            break;
          }
        }
        if (commitAt < 0) commitAt = out.length;
        commits.push({ id: c.fields.id, need: smallestMajority(of), acks: new Set(c.fields.acks) });
      } else {
        out.push(c);
      }
    }
    const batches = [];
    if (ackAt >= 0) {
      for (const ch of chunks(acks, this.idsPerFrame)) batches.push([ackAt, cmd('ACK_CH_MSG', { id: ch[0], ids: ch.slice(1) })]);
    }
    if (commitAt >= 0) {
      for (const g of groupCommits(commits)) {
        // The acks travel in every frame of the group: they take room from the ids (§1.2: an
        // over-long frame is fatal). One id per frame at least, as an unbatched CH_COMMIT has.
        for (const ch of chunks(g.ids, Math.max(1, this.idsPerFrame - g.acks.length))) {
          batches.push([commitAt, cmd('CH_COMMIT', { id: ch[0], acks: g.acks, ids: ch.slice(1) })]);
        }
      }
    }
    // Inserted back to front (stable by position), so earlier positions stay right.
    batches.sort((a, b) => a[0] - b[0]);
    for (let i = batches.length - 1; i >= 0; i--) out.splice(batches[i][0], 0, batches[i][1]);
    return out;
  }

  /** Time passed: stand for election where due; retry commits. */
  tick(nowMs) {
    const out = [];
    for (const [channel, c] of this.channels) {
      if (c.leader !== this.me) continue;
      for (const id of [...c.pending.keys()]) this._tryCommit(channel, id, nowMs, out);
    }
    for (const [channel, c] of this.channels) {
      if (c.leader === null && c.leadAt !== null && c.leadAt <= nowMs) {
        const election = c.election + 1n;
        c.election = election;
        c.voted.add(election.toString());
        // If this election fails, try again later with a higher number.
        c.leadAt = nowMs + this._delay(YIELD_DELAY_MS);
        out.push(cmd('CH_LEAD', { channel, election }));
      }
    }
    return out;
  }
}

function newChannel() {
  return {
    name: '',
    leader: null,
    election: 0n,
    online: 0,
    healthy: false,
    lastCommitted: null,
    committed: new Set(),
    /** @type {Map<string, {acks: Set<string>, of: number, committing: number|null}>} */
    pending: new Map(),
    leadAt: null,
    voted: new Set(),
    pulled: false,
    synced: false,
  }
}
