// The node transport: plain TCP to a sigil server (PROTOCOL.md §0). Frames
// are the same bytes as over WebSocket; here they come as a stream, so the
// incremental FrameReader splits them. Used by the tests, never bundled.

import net from 'node:net';
import { FrameReader } from '../frame.js';

/**
 * A transport (see client.js) over TCP.
 * @param {string} host
 * @param {number} port
 */
export function tcpTransport(host, port) {
  return (handlers) => {
    const socket = net.connect({ host, port });
    socket.setNoDelay(true);
    const reader = new FrameReader();
    let closed = false;
    const close = (reason) => {
      if (closed) return;
      closed = true;
      handlers.onClose(reason);
    };
    socket.on('connect', () => handlers.onOpen());
    socket.on('data', (chunk) => {
      let frames;
      try {
        frames = reader.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
      } catch (err) {
        handlers.onError(err);
        socket.destroy();
        close(`bad frame from the server: ${err.message}`);
        return;
      }
      for (const f of frames) if (!closed) handlers.onFrame(f);
    });
    socket.on('error', (err) => handlers.onError(err));
    socket.on('close', () => close('connection closed'));
    return {
      send(bytes) {
        if (!socket.destroyed) socket.write(bytes);
      },
      close() {
        closed = true;
        socket.end();
        // Let the server read what was sent (a DCNN), then let go.
        setTimeout(() => socket.destroy(), 500).unref();
      },
    };
  };
}
