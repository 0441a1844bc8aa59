// The browser transport: a WebSocket to ws(s)://<this host>/<this page's directory>/ws speaking the
// `sigil.v0` subprotocol, one frame per binary message in each direction.

import { decodeFrame } from './frame.js';

export const SUBPROTOCOL = 'sigil.v0';

/**
 * The WebSocket address of the server that served this page: `ws` next to
 * the page (/ws for a page at /, /chat/ws for /chat/ behind a proxy), its
 * scheme ws: or wss: as the page's is http: or https:.
 */
export function defaultUrl(loc = globalThis.location) {
  const url = new URL('ws', loc.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

/**
 * A transport (see client.js) over WebSocket.
 * @param {string} url
 */
export function webSocketTransport(url) {
  return (handlers) => {
    const ws = new WebSocket(url, SUBPROTOCOL);
    ws.binaryType = 'arraybuffer';
    let closed = false;
    const close = (reason) => {
      if (closed) return;
      closed = true;
      handlers.onClose(reason);
    };
    ws.onopen = () => handlers.onOpen();
    ws.onmessage = (ev) => {
      if (!(ev.data instanceof ArrayBuffer)) {
        handlers.onError(new Error('a text message where a frame was expected'));
        return;
      }
      let frame;
      try {
        frame = decodeFrame(new Uint8Array(ev.data));
      } catch (err) {
        // The server never sends a bad frame: something is wrong with this connection.
        handlers.onError(err);
        try {
          ws.close(1002, 'bad frame');
        } catch {
          // Closing anyway.
        }
        close(`bad frame from the server: ${err.message}`);
        return;
      }
      handlers.onFrame(frame);
    };
    ws.onerror = () => handlers.onError(new Error('WebSocket error'));
    ws.onclose = (ev) => close(ev.reason || (ev.code === 1006 ? 'no connection to the server' : `closed (${ev.code})`));
    return {
      send(bytes) {
        if (ws.readyState === WebSocket.OPEN) ws.send(bytes);
      },
      close() {
        closed = true;
        try {
          ws.close(1000);
        } catch {
          // Already closed.
        }
      },
    };
  };
}
