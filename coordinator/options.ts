/** How a coordinator runs: its address, security, transport and hooks (the training itself is TrainConfig). */
import type { Dataset } from '../shared/data/mnist.js';
import type { AdmissionLimits } from '../shared/wire/admission.js';
import type { ThreadRegions } from '../shared/wire/thread-regions.js';
import type { Net } from '../shared/compute/model.js';
import type { TrainConfig } from './config.js';
import type { Coordinator } from './coordinator.js';
import type { RoundMetrics } from './metrics.js';
import type { Topology } from './topology.js';

/**
 * Values per chunk of a reduction, whatever the wire: small enough to pipeline over a few hops,
 * large enough that per-chunk costs vanish. On loopback 4 relayed workers on the 8-bit wire were
 * faster with 4x the values per chunk (485 against 552 ms a round), but behind 200 Mbit/s links
 * slower (542-569 against 587-622 samples/s, bench:hosts): there each hop's fill time counts.
 */
export const REDUCE_CHUNK = 65536;

export interface CoordinatorOptions {
  config: TrainConfig;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Run directory. */
  out: string;
  /** Continue the run in `out` from its checkpoint. */
  resume?: boolean;
  token?: string;
  /** Allow listening beyond loopback without a token. */
  insecure?: boolean;
  tls?: { cert: Buffer; key: Buffer };
  /** Interval of WebSocket pings; a worker that misses three in a row is dropped. */
  heartbeatMs?: number;
  /** Data already loaded (tests), instead of config.data / the embedded digits. */
  dataset?: Dataset;
  /** Human-readable progress lines. */
  log?: (line: string) => void;
  /** Callers that act at points of the run: progress, evaluation, fault injection in tests. */
  hooks?: RunHooks;
  /** How a phase's sum travels among the workers (topology.ts; default auto). */
  topology?: Topology;
  /** Workers on this host exchange tensors through shared memory when they prove they can (default auto). */
  sameHost?: 'auto' | 'off';
  /** Where same-host regions live when the addon is not built: the registry of this process's worker threads (`--spawn` made them threads). */
  threadRegions?: ThreadRegions;
  /** Values per reduction chunk (default REDUCE_CHUNK). */
  reduceChunk?: number;
  /** Serve the dashboard and observers on the coordinator's port (default true). */
  dashboard?: boolean;
  /** Limits on connections that have not proved the token (default: from the descriptor limit; admission.ts). */
  admission?: Partial<AdmissionLimits>;
}

/**
 * Points of the run where a caller acts. `phase` and `epoch` are awaited: the run goes on when
 * they resolve (an evaluation, a fault a test injects at an exact point); `round` is told only.
 */
export interface RunHooks {
  /** Before a phase's tasks go out. */
  phase?(round: number, net: Net): Promise<void> | void;
  /** After every round, with its metrics (the progress line). */
  round?(m: RoundMetrics, c: Coordinator): void;
  /** At the end of every epoch, before the next begins (evaluation); `epoch` counts the epochs done. */
  epoch?(epoch: number, c: Coordinator): Promise<void> | void;
}
