/** The attacker's side of the fuzz test: seeded randomness, raw msgpack, connections that count how they end, and heap readings. */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Packr } from 'msgpackr';
import { WebSocket } from 'ws';
import { Kind, type Message, decode } from '../shared/wire/codec.js';

export function gcFn(): (() => void) | null {
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  } catch {
    return null;
  }
}

export function heapMb(gc: (() => void) | null): number {
  if (gc) {
    gc();
    gc();
    return process.memoryUsage().heapUsed / 2 ** 20;
  }
  return process.memoryUsage().rss / 2 ** 20;
}

/** Seeded, so a failure names the seed that reproduces it. */
export function rng(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(a: readonly T[]): T => a[Math.floor(next() * a.length)]!,
    bytes: (n: number) => {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = Math.floor(next() * 256);
      return b;
    },
  };
}
export type Rng = ReturnType<typeof rng>;

export const rawPackr = new Packr({ useRecords: false, moreTypes: false, variableMapSize: true });
export const pack = (v: unknown) => Buffer.from(rawPackr.pack(v));

export interface Stats {
  frames: number;
  connections: number;
  closeCodes: Map<number, number>;
  welcomed: number;
  tasks: number;
  acceptedGrads: number;
  /** Frames written behind a first bad frame on the same connection. */
  afterDrop: number;
}

export interface Conn {
  ws: WebSocket;
  challenge: Extract<Message, { k: Kind.Challenge }>;
  closed: Promise<{ code: number; reason: string }>;
  /** Messages after the Challenge, as they come. */
  next(pred: (m: Message) => boolean, ms: number): Promise<Message | null>;
}

/** Open a connection and read its Challenge; null if the coordinator would not talk. */
export function open(url: string): Promise<Conn | null> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 64 * 2 ** 20 });
    const inbox: Message[] = [];
    let wake: (() => void) | null = null;
    let resolveClosed!: (v: { code: number; reason: string }) => void;
    const closed = new Promise<{ code: number; reason: string }>((r) => (resolveClosed = r));
    const guard = setTimeout(() => ws.terminate(), 15_000);
    ws.on('close', (code, reason) => {
      clearTimeout(guard);
      resolveClosed({ code, reason: reason.toString() });
      wake?.();
      resolve(null);
    });
    ws.on('error', () => {});
    ws.on('message', (d) => {
      let m: Message;
      try {
        m = decode(d as Buffer);
      } catch {
        return;
      }
      if (m.k === Kind.Challenge) {
        resolve({
          ws, challenge: m, closed,
          async next(pred, ms) {
            const end = Date.now() + ms;
            for (;;) {
              const i = inbox.findIndex(pred);
              if (i >= 0) return inbox.splice(i, 1)[0]!;
              if (ws.readyState !== WebSocket.OPEN || Date.now() >= end) return null;
              await new Promise<void>((r) => {
                const t = setTimeout(r, Math.max(1, end - Date.now()));
                wake = () => (clearTimeout(t), r());
              });
              wake = null;
            }
          },
        });
        return;
      }
      inbox.push(m);
      wake?.();
    });
  });
}

/** Wait for the coordinator to close the connection; terminate it ourselves if it does not. */
export async function settle(c: Conn, s: Stats, ms = 3000): Promise<number> {
  const t = setTimeout(() => c.ws.terminate(), ms);
  const r = await c.closed;
  clearTimeout(t);
  s.closeCodes.set(r.code, (s.closeCodes.get(r.code) ?? 0) + 1);
  return r.code;
}
