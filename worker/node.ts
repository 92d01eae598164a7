/**
 * A worker on Node: the WebSocket client of `ws`, this host's name and pid, and (unless turned off)
 * a relay listener for relayed reductions. cli/worker.ts and the tests build workers here.
 */
import { hostname } from 'node:os';
import { isLoopback } from '../shared/wire/address.js';
import { nodeConnect } from './node-transport.js';
import { nodeRelay } from './peers.js';
import { type SameHostMapper, nodeSameHost } from './same-host.js';
import { type Relay, WorkerClient, type WorkerOptions } from './worker.js';

export interface NodeWorkerOptions extends Omit<WorkerOptions, 'connect' | 'host' | 'pid' | 'relay' | 'sameHost'> {
  /** CA certificate(s) to trust for wss:// (the coordinator and peers). */
  ca?: Buffer;
  /** Take part in relayed reductions (default true). */
  relay?: boolean;
  /** Address peers dial, when not the one the coordinator sees. */
  peerHost?: string;
  /** Certificate and key of the relay listener; relays need them when the coordinator uses wss://. */
  tls?: { cert: Buffer; key: Buffer };
  /** Exchange tensors through shared memory when the coordinator is on this host and offers it (default true; tests pass a mapper of their own). */
  sameHost?: boolean | SameHostMapper;
}

/** What a Node worker is made of: its transports (ws, a relay listener) and its identity. */
export function nodeWorkerOptions(o: NodeWorkerOptions): WorkerOptions {
  const { ca, relay: wantRelay = true, peerHost, tls, sameHost = true, ...rest } = o;
  const maxPayload = o.maxPayload ?? 256 * 1024 * 1024;
  const log = o.log ?? (() => {});
  let relay: Relay | undefined;
  if (wantRelay && o.url.startsWith('wss:') && !tls) {
    log('relays off: the coordinator uses wss://, and relaying needs --tls-cert and --tls-key for this worker\'s listener');
  } else if (wantRelay) {
    const host = new URL(o.url.replace(/^ws/, 'http')).hostname;
    relay = nodeRelay({
      bindHost: '0.0.0.0', advertise: peerHost, coordinatorIsLocal: isLoopback(host),
      tls, ca, token: o.token, maxPayload, log,
    });
  }
  return { ...rest, connect: nodeConnect({ maxPayload, ca }), host: hostname(), pid: process.pid, relay, sameHost: sameHost === true ? nodeSameHost() : sameHost || undefined };
}

export function nodeWorker(o: NodeWorkerOptions): WorkerClient {
  return new WorkerClient(nodeWorkerOptions(o));
}
