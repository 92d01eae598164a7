/**
 * Latency and loss without sch_netem: test/fixtures/netem-relay.mjs, a userspace TCP relay run as
 * its own process (inside a network namespace when `wrap` says so), that a client connects to in
 * place of the real server. It delays each direction by a fixed one-way latency and turns a
 * seeded fraction of segments into retransmission stalls, which is all TCP lets an application
 * see of packet loss.
 */
import { join } from 'node:path';
import { Proc, ROOT } from './util-faults.js';

export const RELAY_SCRIPT = join(ROOT, 'test', 'fixtures', 'netem-relay.mjs');

export interface LinkImpairment {
  /** One-way latency added to each direction, in ms. */
  delayMs: number;
  /** Fraction of segments lost (0.01 is 1%). */
  loss: number;
  /** Extra wait for a lost segment (and everything behind it), in ms. */
  rtoMs: number;
  /** Seeds which segments are lost, so a run can be repeated exactly. */
  seed: number;
  /** Bytes per segment for the loss draw (default 1448, an Ethernet TCP payload). */
  segmentBytes?: number;
}

export interface RelayDirection {
  bytes: number;
  segments: number;
  lost: number;
  /** Longest any byte was held, ms: the delay, or delay plus rto once something was lost. */
  maxHoldMs: number;
}

export interface RelayStats {
  connections: number;
  /** Client to target. */
  up: RelayDirection;
  /** Target to client. */
  down: RelayDirection;
}

export interface RelayOptions extends LinkImpairment {
  /** Where the relay forwards to, "host:port". */
  target: string;
  /** Address to listen on (port 0 picks a free one); default 127.0.0.1:0. */
  listen?: string;
  /** Prefix argv, e.g. ['ip', 'netns', 'exec', 'ns1']. */
  wrap?: string[];
  name?: string;
}

export interface Relay {
  proc: Proc;
  host: string;
  port: number;
  /** SIGTERM the relay and return what it forwarded. */
  stop(timeoutMs?: number): Promise<RelayStats>;
}

export async function startRelay(o: RelayOptions): Promise<Relay> {
  const args = [
    RELAY_SCRIPT, '--listen', o.listen ?? '127.0.0.1:0', '--target', o.target,
    '--delay', String(o.delayMs), '--loss', String(o.loss), '--rto', String(o.rtoMs), '--seed', String(o.seed),
    '--segment', String(o.segmentBytes ?? 1448), '--watch-pid', String(process.pid),
  ];
  const wrap = o.wrap ?? [];
  const proc = wrap.length ? new Proc(o.name ?? 'relay', wrap[0]!, [...wrap.slice(1), process.execPath, ...args]) : new Proc(o.name ?? 'relay', process.execPath, args);
  try {
    const m = await proc.waitFor(/^relay listening on (\S+):(\d+)$/, 10_000);
    return {
      proc,
      host: m[1]!,
      port: Number(m[2]),
      async stop(timeoutMs = 5000) {
        proc.signal('SIGTERM');
        await proc.waitExit(timeoutMs);
        const line = proc.lines.find((l) => l.startsWith('relay stats '));
        if (!line) throw new Error(`${proc.name} exited without stats (${JSON.stringify(proc.exit)}); output:\n${proc.output.slice(-2000)}`);
        return JSON.parse(line.slice('relay stats '.length)) as RelayStats;
      },
    };
  } catch (e) {
    await proc.kill('SIGKILL');
    throw e;
  }
}
