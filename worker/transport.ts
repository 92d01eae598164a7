/**
 * What the worker needs of a WebSocket, so the same worker runs on Node's `ws` and on a browser's
 * WebSocket: only the entry points (cli/worker.ts, the browser page) choose the implementation.
 */

export interface Link {
  /** Queue a binary frame (dropped silently when the link is not open). */
  send(frame: Uint8Array): void;
  close(code: number, reason: string): void;
  /** Drop the connection at once, as a crash would. */
  terminate(): void;
  readonly open: boolean;
}

export interface LinkHandlers {
  onOpen?(): void;
  onMessage(frame: Uint8Array, binary: boolean): void;
  onClose(code: number, reason: string): void;
  /**
   * A failure to connect or a broken connection: `tls` when the server's certificate is not
   * trusted, `http` when the server answered the upgrade with a plain HTTP response (it is not a
   * coordinator), `network` otherwise.
   */
  onError(message: string, kind: 'tls' | 'http' | 'network'): void;
}

/** Open a link to `url` (ws:// or wss://). */
export type Connect = (url: string, h: LinkHandlers) => Link;
