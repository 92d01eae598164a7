/**
 * A worker that knows the token and lies: it completes the handshake honestly, takes its task,
 * then sends a gradient the coordinator must refuse (of the wrong size, holding NaN, or beyond the
 * bounds), encoded in the run's wire precision (Welcome.wire: on the 16-bit wire a value beyond
 * the bounds is already infinite, so it is refused as not finite). It exits when its connection
 * is closed, printing the close code and reason.
 *
 *   node dist/scripts/soak-rogue.js URL shape|nan|bounds        (token: GAN_DDP_TOKEN)
 */
import { hostname } from 'node:os';
import { WebSocket } from 'ws';
import { modelSignature, netLayout } from '../shared/compute/model.js';
import { type ChunkMsg, Kind, type Message, PROTOCOL_VERSION, decode, encode } from '../shared/wire/codec.js';
import { answerChallenge } from '../shared/wire/handshake.js';
import { type WirePrecision, encodeValues } from '../shared/numerics/wire-format.js';

export type Lie = 'shape' | 'nan' | 'bounds';

export function rogue(url: string, lie: Lie, token: string | undefined): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 512 * 1024 * 1024 });
    let model: Extract<Message, { k: Kind.Challenge }>['model'] | null = null;
    let wire: WirePrecision = 'fp32';
    ws.on('message', (data) => {
      const m = decode(data as Buffer);
      if (m.k === Kind.Challenge) {
        model = m.model;
        void answerChallenge(m, { token }).then(({ proof }) => {
          ws.send(encode({ k: Kind.Hello, v: PROTOCOL_VERSION, signature: modelSignature(m.model), backend: 'rogue', host: hostname(), pid: process.pid, proof }));
        });
      } else if (m.k === Kind.Welcome) {
        wire = m.wire as WirePrecision;
      } else if (m.k === Kind.Reduce && model) {
        const total = netLayout(model, m.phase).total;
        const n = lie === 'shape' ? Math.min(total, m.chunk) - 1 : Math.min(total, m.chunk);
        const data = new Float32Array(n).fill(lie === 'nan' ? NaN : lie === 'bounds' ? 1e30 : 0.01);
        const chunk: ChunkMsg = { k: Kind.Chunk, round: m.round, phase: m.phase, attempt: m.attempt, offset: 0, partial: m.partial, ...encodeValues(wire, data) };
        ws.send(encode(chunk));
      }
    });
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
    ws.on('error', () => {});
  });
}

if (process.argv[1]?.endsWith('soak-rogue.js')) {
  const [url, lie] = process.argv.slice(2);
  void rogue(url!, (lie ?? 'shape') as Lie, process.env.GAN_DDP_TOKEN).then((r) => {
    process.stdout.write(`rogue closed: ${r.code} ${r.reason}\n`);
    process.exit(0);
  });
}
