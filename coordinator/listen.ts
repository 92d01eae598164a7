/** Listening on the coordinator's (or the dashboard's) port: the one rule for who may listen where. */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isLoopback } from '../shared/wire/address.js';
import { GanError } from '../shared/wire/errors.js';

/**
 * Listen on host:port; resolves to the bound port (0 picks a free one). Beyond loopback a token
 * is required unless `insecure` (E_INSECURE); a port in use is E_PORT, any other failure E_LISTEN.
 */
export function listenGuarded(server: Server, host: string, port: number, o: { token?: string; insecure?: boolean }): Promise<number> {
  if (!isLoopback(host) && !o.token && !o.insecure) {
    return Promise.reject(new GanError('E_INSECURE', `refusing to listen on ${host} without --token (pass --insecure to allow it)`));
  }
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      reject(e.code === 'EADDRINUSE'
        ? new GanError('E_PORT', `port ${port} on ${host} is already in use`)
        : new GanError('E_LISTEN', `cannot listen on ${host}:${port}: ${e.message}`));
    });
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}
