// Frames: COMMAND LF LEN LF SIGNATURE LF PAYLOAD (PROTOCOL.md §1).
//
// The parser follows the grammar byte by byte, like the server's, so a
// hostile or broken peer can never make it hold more than LEN-limit bytes or
// accept a frame the grammar refuses. Over TCP frames arrive as a stream
// (FrameReader); over WebSocket each message holds exactly one (decodeFrame).

import { hexToBytes } from './sign.js';

/** A framing fault; `code` is the protocol's word for it (§1.2). */
export class FrameError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'FrameError';
    this.code = code;
  }
}

/** The largest frame accepted from the server: its max_payload is at most
 * 16 MiB (§9.1), and one old history entry may be sent whole above it (§1.3). */
export const DEFAULT_READ_LIMIT = 32 * 1024 * 1024;

const LF = 0x0a;
const CR = 0x0d;
const COMMAND_RE = /^[A-Z_]{1,16}$/;
const SIG_RE = /^(?:[0-9a-f]{128})?$/;
const ascii = new TextEncoder();

const isCommandByte = (b) => (b >= 0x41 && b <= 0x5a) || b === 0x5f;
const isDigit = (b) => b >= 0x30 && b <= 0x39;
const isHex = (b) => isDigit(b) || (b >= 0x61 && b <= 0x66) || (b >= 0x41 && b <= 0x46);

/**
 * Encodes one frame. `signature` is 128 lowercase hex digits or '' (unsigned).
 * @param {string} command
 * @param {string} signature
 * @param {Uint8Array} payload
 * @returns {Uint8Array}
 */
export function encodeFrame(command, signature, payload) {
  if (!COMMAND_RE.test(command)) throw new FrameError('bad_frame', `bad command name ${JSON.stringify(command)}`);
  if (!SIG_RE.test(signature)) throw new FrameError('bad_frame', 'a signature is 128 lowercase hex digits or empty');
  if (!(payload instanceof Uint8Array)) throw new TypeError('payload must be a Uint8Array');
  // LF only, lowercase hex, no blank lines: as the server writes (§1.1).
  const head = ascii.encode(`${command}\n${payload.length}\n${signature}\n`);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}

/**
 * An incremental frame parser for a byte stream. push() returns the frames
 * completed by a chunk, or throws FrameError on the first byte the grammar
 * refuses (the stream is then unusable: framing faults are fatal, §1.2).
 */
export class FrameReader {
  /** @param {{limit?: number}} [options] the LEN limit */
  constructor(options = {}) {
    this.limit = options.limit ?? DEFAULT_READ_LIMIT;
    this._reset();
  }

  _reset() {
    this.state = 'start'; // start | blankcr | command | len | sig | payload
    this.cr = false; // a CR was read in a header line; only LF may follow
    this.command = '';
    this.lenText = '';
    this.len = 0;
    this.sig = '';
    this.payload = null;
    this.filled = 0;
  }

  /** True between frames: a connection may end here cleanly (§1.1). */
  get idle() {
    return this.state === 'start' || this.state === 'blankcr';
  }

  /**
   * @param {Uint8Array} chunk
   * @returns {{command: string, signature: Uint8Array|null, payload: Uint8Array}[]}
   */
  push(chunk) {
    const frames = [];
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'payload') {
        const take = Math.min(this.len - this.filled, chunk.length - i);
        this.payload.set(chunk.subarray(i, i + take), this.filled);
        this.filled += take;
        i += take;
        if (this.filled === this.len) frames.push(this._finish());
        continue;
      }
      this._headerByte(chunk[i++], frames);
    }
    return frames;
  }

  /** The stream ended: a fault unless it ended between frames. */
  end() {
    if (!this.idle) throw new FrameError('bad_frame', 'the connection ended inside a frame');
  }

  _headerByte(b, frames) {
    if (this.cr) {
      // A CR is tolerated only right before the LF that ends a header line.
      if (b !== LF) throw new FrameError('bad_frame', 'CR not followed by LF');
      this.cr = false;
      this._endLine(frames);
      return;
    }
    switch (this.state) {
      case 'start':
        if (b === LF) return; // a blank line before a COMMAND line
        if (b === CR) {
          this.state = 'blankcr';
          return;
        }
        if (!isCommandByte(b)) throw new FrameError('bad_frame', 'a command name holds only A-Z and _');
        this.state = 'command';
        this.command = String.fromCharCode(b);
        return;
      case 'blankcr':
        if (b !== LF) throw new FrameError('bad_frame', 'CR not followed by LF');
        this.state = 'start';
        return;
      case 'command':
        if (b === CR) this.cr = true;
        else if (b === LF) this._endLine(frames);
        else if (!isCommandByte(b)) throw new FrameError('bad_frame', 'a command name holds only A-Z and _');
        else if (this.command.length >= 16) throw new FrameError('bad_frame', 'a command name has at most 16 characters');
        else this.command += String.fromCharCode(b);
        return;
      case 'len':
        if (b === CR) this.cr = true;
        else if (b === LF) this._endLine(frames);
        else if (!isDigit(b)) throw new FrameError('bad_frame', 'LEN holds only digits');
        else if (this.lenText === '0') throw new FrameError('bad_frame', 'LEN has a leading zero');
        else if (this.lenText.length >= String(this.limit).length) throw new FrameError('too_large', 'LEN is over the limit');
        else this.lenText += String.fromCharCode(b);
        return;
      case 'sig':
        if (b === CR) this.cr = true;
        else if (b === LF) this._endLine(frames);
        else if (!isHex(b)) throw new FrameError('bad_frame', 'a signature holds only hex digits');
        else if (this.sig.length >= 128) throw new FrameError('bad_frame', 'a signature has 128 hex digits');
        else this.sig += String.fromCharCode(b);
        return;
      default:
        throw new FrameError('bad_frame', 'parser in an unknown state');
    }
  }

  _endLine(frames) {
    switch (this.state) {
      case 'command':
        this.state = 'len';
        return;
      case 'len':
        if (this.lenText === '') throw new FrameError('bad_frame', 'LEN is empty');
        this.len = Number(this.lenText);
        if (this.len > this.limit) throw new FrameError('too_large', `LEN ${this.len} is over the limit ${this.limit}`);
        this.state = 'sig';
        return;
      case 'sig':
        if (this.sig.length !== 0 && this.sig.length !== 128) {
          throw new FrameError('bad_frame', 'a signature has 128 hex digits');
        }
        // Room for the payload is reserved only once LEN was accepted.
        this.payload = new Uint8Array(this.len);
        this.filled = 0;
        this.state = 'payload';
        if (this.len === 0) frames.push(this._finish());
        return;
      default:
        throw new FrameError('bad_frame', 'unexpected end of line');
    }
  }

  _finish() {
    const frame = {
      command: this.command,
      signature: this.sig === '' ? null : hexToBytes(this.sig),
      payload: this.payload,
    };
    this._reset();
    return frame;
  }
}

/**
 * Decodes a buffer that must hold exactly one frame (blank lines before it
 * allowed, nothing after): one WebSocket message.
 * @param {Uint8Array} bytes
 * @param {{limit?: number}} [options]
 */
export function decodeFrame(bytes, options) {
  const reader = new FrameReader(options);
  const frames = reader.push(bytes);
  if (frames.length !== 1 || !reader.idle || reader.state !== 'start') {
    throw new FrameError('bad_frame', frames.length > 1 ? 'more than one frame in a message' : 'not one whole frame');
  }
  return frames[0];
}
