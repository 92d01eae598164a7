/** Listening on the coordinator's (or the dashboard's) port: the one rule for who may listen where. */
import type { Server } from 'node:http';
import type { Admission, Listening } from '../shared/wire/admission.js';
import { isLoopback } from '../shared/wire/address.js';
import { GanError } from '../shared/wire/errors.js';

/**
 * Listen on host:port through `admission` (admission.ts); resolves to the bound port (0 picks a
 * free one). Beyond loopback a token is required unless `insecure` (E_INSECURE); a port in use is
 * E_PORT, any other failure E_LISTEN.
 */
export async function listenGuarded(server: Server, admission: Admission, host: string, port: number, o: { token?: string; insecure?: boolean }): Promise<Listening> {
  if (!isLoopback(host) && !o.token && !o.insecure) {
    throw new GanError('E_INSECURE', `refusing to listen on ${host} without --token (pass --insecure to allow it)`);
  }
  try {
    return await admission.listen(server, host, port);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw err.code === 'EADDRINUSE'
      ? new GanError('E_PORT', `port ${port} on ${host} is already in use`)
      : new GanError('E_LISTEN', `cannot listen on ${host}:${port}: ${err.message}`);
  }
}
