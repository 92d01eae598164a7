#!/usr/bin/env node
/**
 * `worker`: joins a coordinator and computes gradients until the run ends. It needs nothing but
 * the coordinator's address (and the token, when the coordinator has one).
 */
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { BACKEND_NAMES, type BackendName, initBackend } from '../shared/backend/choose.js';
import { EXIT_RESUMABLE, die, floatArg, intArg, isMain } from './args.js';
import { nodeWorker } from '../worker/node.js';
import { MODEL_KINDS, type ModelKind } from '../shared/compute/model.js';
import { GanError } from '../shared/wire/errors.js';

export interface WorkerCliOptions {
  connect: string;
  token?: string;
  ca?: string;
  backend: BackendName;
  threads?: number;
  connectTimeout: number;
  maxPayload: number;
  model?: ModelKind;
  relay: boolean;
  peerHost?: string;
  tlsCert?: string;
  tlsKey?: string;
  quiet: boolean;
}

export function program(): Command {
  return new Command('worker')
    .description('Compute GAN gradients for a coordinator.')
    .requiredOption('--connect <url>', 'coordinator address, ws://HOST:PORT (or wss:// with TLS)')
    .option('--token <secret>', 'shared secret of the coordinator (proved, never sent); env GAN_DDP_TOKEN')
    .option('--ca <file>', 'CA certificate (PEM) to trust for wss://')
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend: auto picks tfjs-node, else native (the C addon), else wasm, else cpu').choices(BACKEND_NAMES as string[]).default('auto'))
    .option('--threads <n>', 'compute threads of the native backend; one per worker when several share a host', intArg(1, 256))
    .option('--connect-timeout <s>', 'give up after this many seconds without reaching the coordinator', floatArg(0.1, 86400), 60)
    .option('--max-payload <mib>', 'largest message accepted from the coordinator, in MiB', intArg(1, 4096), 256)
    .addOption(new Option('--model <kind>', 'refuse a coordinator that trains another model kind').choices([...MODEL_KINDS]))
    .option('--no-relay', 'do not take part in relayed reductions (this worker cannot accept connections, e.g. behind NAT)')
    .option('--peer-host <addr>', 'address other workers dial for relays (default: the one the coordinator sees)')
    .option('--tls-cert <file>', 'certificate (PEM) of this worker\'s relay listener, needed for relays when the coordinator uses wss://')
    .option('--tls-key <file>', 'private key (PEM) for --tls-cert')
    .option('--quiet', 'print only errors', false);
}

/** How a worker started by `launch` treats a scheduler's signals. */
export interface WorkerRunContext {
  /** Signals that stop this worker to be restarted (a pod's eviction): exit EXIT_RESUMABLE, not 0. */
  preemptSignals?: NodeJS.Signals[];
  /** Signals meant for the coordinator (SLURM's USR1 warning reaches every task): noted, nothing more. */
  ignoreSignals?: NodeJS.Signals[];
}

export async function run(o: WorkerCliOptions, ctx: WorkerRunContext = {}): Promise<number> {
  if (!/^wss?:\/\/[^/]+/.test(o.connect)) throw new GanError('E_ARGS', `--connect ${o.connect}: expected ws://HOST:PORT or wss://HOST:PORT`);
  const log = (s: string) => process.stderr.write(`worker: ${s}\n`);
  // Spawned workers run --quiet: their coordinator already said which backend this host falls back to.
  const info = await initBackend(o.backend, { threads: o.threads, log: o.quiet ? () => {} : log });
  if (!o.quiet) log(`backend ${info.name} (${info.detail})`);
  const ca = o.ca ? readPem(o.ca, '--ca') : undefined;
  if (!!o.tlsCert !== !!o.tlsKey) throw new GanError('E_ARGS', '--tls-cert and --tls-key go together');
  const tls = o.tlsCert && o.tlsKey ? { cert: readPem(o.tlsCert, '--tls-cert'), key: readPem(o.tlsKey, '--tls-key') } : undefined;
  const w = nodeWorker({
    url: o.connect,
    token: o.token ?? process.env.GAN_DDP_TOKEN,
    ca,
    tls,
    relay: o.relay,
    peerHost: o.peerHost,
    backend: `${info.name} (${info.detail})`,
    connectTimeoutMs: o.connectTimeout * 1000,
    maxPayload: o.maxPayload * 1024 * 1024,
    expectModel: o.model,
    log: o.quiet ? undefined : log,
  });
  let preempted: string | null = null;
  for (const sig of ctx.ignoreSignals ?? []) process.on(sig, () => log(`${sig}: left to the coordinator (it checkpoints); computing on`));
  for (const sig of new Set<NodeJS.Signals>(['SIGTERM', 'SIGINT', ...(ctx.preemptSignals ?? [])])) {
    process.once(sig, () => {
      if (ctx.preemptSignals?.includes(sig)) preempted ??= sig;
      w.stop();
    });
  }
  await w.run();
  if (preempted) {
    log(`${preempted}: stopped after ${w.tasksDone} tasks; the run goes on without this worker until it is restarted`);
    return EXIT_RESUMABLE;
  }
  if (!o.quiet) log(`done after ${w.tasksDone} tasks`);
  return 0;
}

function readPem(file: string, flag: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new GanError('E_TLS', `${flag} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

export function main(argv: string[]): void {
  const cmd = program();
  cmd.parse(argv);
  run(cmd.opts<WorkerCliOptions>()).then((code) => process.exit(code), (e) => die('worker', e));
}

if (isMain(import.meta.url)) main(process.argv);
