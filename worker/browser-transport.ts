/** Links over a browser's WebSocket (worker/transport.ts): the browser worker's transport. */
import type { Connect } from './transport.js';

export const browserConnect: Connect = (url, h) => {
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  let opened = false;
  ws.onopen = () => {
    opened = true;
    h.onOpen?.();
  };
  ws.onmessage = (e: MessageEvent) => {
    if (e.data instanceof ArrayBuffer) h.onMessage(new Uint8Array(e.data), true);
    else h.onMessage(new TextEncoder().encode(String(e.data)), false);
  };
  // A browser does not tell why a connection failed (a refused port, a certificate, an HTTP answer):
  // before it opened it is a network failure; after, the close code says the rest.
  ws.onerror = () => {
    if (!opened) h.onError(`cannot open ${url}`, 'network');
  };
  ws.onclose = (e: CloseEvent) => h.onClose(e.code, e.reason);
  return {
    send(frame) {
      if (ws.readyState === WebSocket.OPEN) ws.send(frame as Uint8Array<ArrayBuffer>);
    },
    close: (code, reason) => ws.close(code === 1000 || (code >= 3000 && code < 5000) ? code : 1000, reason),
    terminate: () => ws.close(),
    get open() {
      return ws.readyState === WebSocket.OPEN;
    },
  };
};
