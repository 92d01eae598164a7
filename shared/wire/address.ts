/** Addresses: the one rule for what counts as this machine's loopback. */

/**
 * Whether `host` is this machine's loopback: a name or address as typed on the command line
 * (`localhost`, `127.0.0.1`), as a socket reports a peer (`::ffff:127.0.0.1`), or as it stands in a
 * URL (`[::1]`).
 */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').replace(/^::ffff:/i, '').toLowerCase();
  return h === 'localhost' || h === '::1' || h.startsWith('127.');
}
