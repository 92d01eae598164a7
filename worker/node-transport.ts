/** Links over Node's `ws` (worker/transport.ts): the Node worker's transport, and its peer links' client side. */
import { WebSocket } from 'ws';
import type { Connect, Link, LinkHandlers } from './transport.js';

/** Node's codes for a server certificate that does not verify. */
const TLS_ERRORS = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_SIGNATURE_FAILURE',
]);

/** Wrap an open or opening `ws` socket (a dialed one, or one a server accepted) as a Link. */
export function wrapSocket(ws: WebSocket, h: LinkHandlers): Link {
  ws.on('open', () => h.onOpen?.());
  ws.on('message', (data, isBinary) => h.onMessage(data as Buffer, isBinary));
  ws.on('close', (code, reason) => h.onClose(code, reason.toString()));
  ws.on('error', (e) => {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    h.onError(e.message, TLS_ERRORS.has(code) ? 'tls' : /^Unexpected server response/.test(e.message) ? 'http' : 'network');
  });
  return {
    send(frame) {
      if (ws.readyState === WebSocket.OPEN) ws.send(frame);
    },
    close: (code, reason) => ws.close(code, reason),
    terminate: () => ws.terminate(),
    get open() {
      return ws.readyState === WebSocket.OPEN;
    },
  };
}

export interface NodeConnectOptions {
  /** Largest frame accepted. */
  maxPayload: number;
  /** CA certificate(s) to trust for wss://. */
  ca?: Buffer;
}

export function nodeConnect(o: NodeConnectOptions): Connect {
  return (url, h) =>
    wrapSocket(new WebSocket(url, { perMessageDeflate: false, maxPayload: o.maxPayload, ca: o.ca, handshakeTimeout: 10_000 }), h);
}
