#!/usr/bin/env node
/**
 * `dashboard RUN_DIR [RUN_DIR...]`: the live dashboard's page for finished (or interrupted) runs,
 * read from their run directories; several runs are overlaid for comparison. Like the coordinator
 * it serves loopback only unless given a token (or --insecure), and the page proves the token.
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { Command } from 'commander';
import { WebSocketServer } from 'ws';
import { ObserverHub, RunView } from '../coordinator/dashboard/observers.js';
import { serveWeb } from '../coordinator/dashboard/web.js';
import { listenGuarded } from '../coordinator/listen.js';
import { descriptorLimit } from '../coordinator/descriptors.js';
import { Admission, PRE_AUTH_BYTES, admissionLimits } from '../shared/wire/admission.js';
import { type ModelConfig, defaultModelConfig } from '../shared/compute/model.js';
import { die, intArg, isMain } from './args.js';

export interface DashboardOptions {
  host: string;
  port: number;
  token?: string;
  insecure: boolean;
}

export function program(): Command {
  return new Command('dashboard')
    .description('Serve the dashboard for finished runs, read from their run directories (several are overlaid).')
    .argument('<run_dir...>', 'run directories (with config.json and metrics.jsonl)')
    .option('--host <addr>', 'address to listen on (beyond loopback needs --token or --insecure)', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0 picks a free one)', intArg(0, 65535), 8766)
    .option('--token <secret>', 'the page must prove this token (give it in the URL: #token=...); env GAN_DDP_TOKEN')
    .option('--insecure', 'allow listening beyond loopback without a token', false);
}

/** Serve `dirs` until closed; resolves to the bound port and a close function. */
export async function serve(dirs: string[], o: DashboardOptions): Promise<{ port: number; close: () => Promise<void> }> {
  const token = o.token ?? process.env.GAN_DDP_TOKEN;
  const runs = dirs.map((d, i) => RunView.fromDir(i, d));
  const hub = new ObserverHub({ token, model: (runs[0]?.data.config.model as ModelConfig | undefined) ?? defaultModelConfig, runs });
  const server = createServer(serveWeb);
  const admission = new Admission(admissionLimits(descriptorLimit().soft), (l) => process.stderr.write(`dashboard: ${l}\n`));
  const wss = new WebSocketServer({ noServer: true, maxPayload: PRE_AUTH_BYTES, perMessageDeflate: false });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    if ((req.url ?? '').split('?')[0] !== '/observe') return socket.destroy();
    wss.handleUpgrade(req, socket, head, (ws) => hub.accept(ws, () => admission.proven(socket)));
  });
  const listening = await listenGuarded(server, admission, o.host, o.port, { token, insecure: o.insecure });
  return {
    port: listening.port,
    close: async () => {
      hub.close();
      await listening.close();
    },
  };
}

export function main(argv: string[]): void {
  const cmd = program();
  cmd.parse(argv);
  const o = cmd.opts<DashboardOptions>();
  serve(cmd.args, o).then(
    ({ port, close }) => {
      const host = o.host === '0.0.0.0' ? '127.0.0.1' : o.host;
      process.stdout.write(`dashboard: http://${host}:${port}/${o.token ?? process.env.GAN_DDP_TOKEN ? '#token=<the token>' : ''} (${cmd.args.length} run${cmd.args.length === 1 ? '' : 's'}); Ctrl-C stops it\n`);
      const stop = () => void close().then(() => process.exit(0));
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    },
    (e) => die('dashboard', e),
  );
}

if (isMain(import.meta.url)) main(process.argv);
