/**
 * The 16- and 8-bit wires (--wire): what the encodings promise, what error feedback keeps, that the
 * workers' view of the weights stays within a block step of the master weights, that compressed
 * runs are deterministic and move the bytes they should, and that malformed 8-bit values are
 * refused with their code while the phase completes.
 */
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { Coordinator } from '../coordinator/coordinator.js';
import { Kind, PROTOCOL_VERSION, type TaskMsg, decode, encode } from '../shared/wire/codec.js';
import { modelSignature } from '../shared/compute/model.js';
import {
  BLOCK, MIN_SCALE, VALUE_LIMIT, type WirePrecision, WireScratch, decodeValues, decodeWeights, dequantize8, encodeValues, encodeWeights, quantize8, quantizeWithFeedback,
} from '../shared/numerics/wire-format.js';
import { type Cluster, smallData, startCluster, tempDir, tinyConfig, tinyModel } from './helpers.js';
import { nativeMath } from '../shared/backend/addon.js';
import { decodeCheckpoint, encodeCheckpoint } from '../coordinator/checkpoint.js';
import { codeOf } from './util-errors.js';

/** Deterministic values of mixed magnitudes (a small LCG). */
function values(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale * (i % 7 === 0 ? 10 : 1);
  }
  return out;
}

describe('the 8-bit encoding', () => {
  it('rounds each value to within half a block step, one scale per block of 256', () => {
    const x = values(1000, 3, 0.01);
    const { q, scales } = quantize8(x);
    expect(scales).toHaveLength(Math.ceil(1000 / BLOCK));
    const y = dequantize8(q, scales);
    for (let i = 0; i < x.length; i++) expect(Math.abs(y[i]! - x[i]!)).toBeLessThanOrEqual(scales[Math.floor(i / BLOCK)]! / 2 * (1 + 1e-6));
    // A block of zeros gets the smallest scale and decodes to zeros.
    const z = quantize8(new Float32Array(300));
    expect([...z.scales]).toEqual([MIN_SCALE, MIN_SCALE]);
    expect(dequantize8(z.q, z.scales).every((v) => v === 0)).toBe(true);
  });

  it('refuses what no encoder writes: NaN, Inf, zero, tiny or huge scales, -128, a wrong count of scales, another precision', () => {
    const good = encodeValues('8', values(600, 5));
    const withScale = (s: number) => {
      const scales = (good.scales as Float32Array).slice();
      scales[1] = s;
      return { ...good, scales };
    };
    expect(codeOf(() => decodeValues('8', good, 'g'))).toBe('accepted');
    expect(codeOf(() => decodeValues('8', withScale(NaN), 'g'))).toBe('E_NONFINITE');
    expect(codeOf(() => decodeValues('8', withScale(Infinity), 'g'))).toBe('E_NONFINITE');
    expect(codeOf(() => decodeValues('8', withScale(0), 'g'))).toBe('E_BOUNDS');
    expect(codeOf(() => decodeValues('8', withScale(-1), 'g'))).toBe('E_BOUNDS');
    expect(codeOf(() => decodeValues('8', withScale(1e-40), 'g'))).toBe('E_BOUNDS');
    expect(codeOf(() => decodeValues('8', withScale(VALUE_LIMIT), 'g'))).toBe('E_BOUNDS');
    const q = (good.data as Int8Array).slice();
    q[17] = -128;
    expect(codeOf(() => decodeValues('8', { ...good, data: q }, 'g'))).toBe('E_BOUNDS');
    expect(codeOf(() => decodeValues('8', { ...good, scales: (good.scales as Float32Array).subarray(1) }, 'g'))).toBe('E_SHAPE');
    expect(codeOf(() => decodeValues('16', good, 'g'))).toBe('E_SHAPE');
    expect(codeOf(() => decodeValues('8', encodeValues('fp32', values(10, 1)), 'g'))).toBe('E_SHAPE');
  });

  it('does not let a NaN or Inf pass as a number: its block gets a scale the receiver refuses (E_NONFINITE)', () => {
    for (const bad of [NaN, Infinity]) {
      const x = values(600, 8);
      x[300] = bad;
      const residual = new Float32Array(600);
      for (const e of [encodeValues('8', x), { fp16: false, ...quantizeWithFeedback(x, residual, 600) }]) {
        const sent = 'q' in e ? { fp16: false, data: e.q, scales: e.scales } : e;
        expect(codeOf(() => decodeValues('8', sent, 'g'))).toBe('E_NONFINITE');
      }
    }
  });
});

describe.skipIf(!nativeMath())('the addon\'s 8-bit loops', () => {
  const same = (a: ArrayBufferView, b: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
  /** Values of every kind an encoder meets: ordinary, zero blocks, tiny (denormal) and huge ones, ties, NaN and Inf. */
  function awkward(n: number, seed: number): Float32Array {
    const x = values(n, seed, 1e-3);
    x.fill(0, 256, 512);
    for (let i = 600; i < 700; i++) x[i] = 1e-42 * (i % 3);
    x[800] = 3e30;
    x[900] = 0.5;
    x[901] = 1.5 / 127;
    x[n - 3] = NaN;
    x[n - 300] = -Infinity;
    return x;
  }
  it.each([1, 255, 256, 1000, 65536 + 77])('equal the JavaScript reference bit for bit (%i values)', (n) => {
    const math = nativeMath()!;
    const x = n >= 1000 ? awkward(n, n) : values(n, n, 0.3);
    const js = quantize8(x, undefined, undefined, null);
    const c = quantize8(x, undefined, undefined, math);
    expect(same(c.q, js.q) && same(c.scales, js.scales)).toBe(true);
    const base = values(n, 7, 0.1);
    expect(same(dequantize8(js.q, js.scales, undefined, undefined, math), dequantize8(js.q, js.scales, undefined, undefined, null))).toBe(true);
    expect(same(dequantize8(js.q, js.scales, undefined, base, math), dequantize8(js.q, js.scales, undefined, base, null))).toBe(true);
    const r1 = values(n, 11, 1e-5);
    const r2 = r1.slice();
    const f1 = quantizeWithFeedback(x, r1, 1000, math);
    const f2 = quantizeWithFeedback(x, r2, 1000, null);
    expect(same(f1.q, f2.q) && same(f1.scales, f2.scales) && same(f1.decoded, f2.decoded) && same(r1, r2)).toBe(true);
    const v1 = new Float32Array(n);
    const v2 = new Float32Array(n);
    const e1 = encodeWeights('8', x, base, v1, undefined, math);
    const e2 = encodeWeights('8', x, base, v2, new WireScratch(), null);
    expect(same(e1.data, e2.data) && same(e1.scales!, e2.scales!) && same(v1, v2)).toBe(true);
  });
});

describe('error feedback', () => {
  it('what was sent over many rounds adds up to what was computed, short by less than one block step', () => {
    const n = 3000;
    const chunk = 1024;
    const residual = new Float32Array(n);
    const computed = new Float64Array(n);
    const sent = new Float64Array(n);
    let lastScale = 0;
    for (let t = 0; t < 200; t++) {
      const g = values(n, 100 + t, 1e-3);
      const { decoded, scales } = quantizeWithFeedback(g, residual, chunk);
      for (let i = 0; i < n; i++) {
        computed[i]! += g[i]!;
        sent[i]! += decoded[i]!;
      }
      lastScale = Math.max(...scales);
    }
    // sum(sent) = sum(computed) - residual: nothing is lost for good, only delayed.
    for (let i = 0; i < n; i++) {
      expect(Math.abs(computed[i]! - sent[i]! - residual[i]!)).toBeLessThan(1e-6);
      expect(Math.abs(residual[i]!)).toBeLessThanOrEqual(lastScale);
    }
  });
});

describe("the workers' view of the weights", () => {
  // The coordinator encodes each step against the view; a worker decodes it the same way. Over 500
  // Adam-sized steps (up to 3x the learning rate per value) the worker holds the coordinator's
  // view bit for bit, and the view is never further than half a block step (max step / 127) from
  // the master weights: what one difference loses goes into the next.
  it.each(['16', '8'] as const)('on the %s-bit wire: the same bits on both sides, within tolerance of the master weights over 500 rounds', (wire: WirePrecision) => {
    const n = 5000;
    const lr = 2e-4;
    const master = values(n, 9, 0.05);
    const coordView = wire === '8' ? master.slice() : new Float32Array(n);
    if (wire === '16') encodeWeights('16', master, coordView, coordView);
    let workerView = coordView.slice();
    /** Largest |master - view|, absolute (8-bit) or relative to |master| (16-bit, a floating format). */
    let worst = 0;
    for (let t = 0; t < 500; t++) {
      const step = values(n, 1000 + t, 3 * lr);
      for (let i = 0; i < n; i++) master[i] = master[i]! + step[i]!;
      const next = new Float32Array(n);
      const x = encodeWeights(wire, master, coordView, next);
      coordView.set(next);
      const got = new Float32Array(n);
      decodeWeights(wire, decode(encode({ k: Kind.WeightsChunk, net: 'D', version: t + 1, attempt: 0, offset: 0, ...x })) as never, workerView, got, 'weights');
      workerView = got;
      expect(Buffer.from(workerView.buffer).equals(Buffer.from(coordView.buffer))).toBe(true);
      for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(master[i]! - workerView[i]!) / (wire === '16' ? Math.max(Math.abs(master[i]!), 2 ** -14) : 1));
    }
    // 16-bit: half an ulp of a half, 2^-11 of |w|; 8-bit: half a block step of a difference no
    // larger than the largest step (10 * 3 * lr) plus the last error, well under 30 * 3 * lr / 127.
    expect(worst).toBeLessThanOrEqual(wire === '16' ? 2 ** -11 : (30 * 3 * lr) / 127);
  });
});

const clusters: Cluster[] = [];
afterEach(async () => {
  for (const c of clusters.splice(0)) await c.coord.close().catch(() => {});
});

function fingerprint(c: Coordinator): string {
  const h = createHash('sha256');
  for (const a of [c.model.weights.D, c.model.weights.G, c.model.adam.D.m, c.model.adam.D.v, c.model.adam.G.m, c.model.adam.G.v, c.model.view.D, c.model.view.G]) h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  return h.digest('hex');
}

async function run(wire: WirePrecision, n = 200): Promise<Coordinator> {
  const c = await startCluster(tinyConfig({ workers: 2, batchSize: 10, epochs: 2, wire }), smallData(n));
  clusters.push(c);
  return c.finish();
}

describe('compressed runs', () => {
  it('are deterministic, use every sample once, move half (16, less for its weights) and about a quarter (8) of the fp32 bytes, and keep the view near the master weights', async () => {
    const fp32 = await run('fp32');
    const perRound = (c: Coordinator) => ({ in: c.pool.bytes.in / c.round, out: c.pool.bytes.out / c.round });
    // fp32 gradients come in as float32; its weights go out as XOR deltas, exact and smaller.
    const full = { in: perRound(fp32).in, out: perRound(fp32).in };
    const exactOut = perRound(fp32).out / full.out;
    expect(exactOut).toBeGreaterThan(0.4);
    expect(exactOut).toBeLessThan(0.85);
    for (const wire of ['16', '8'] as const) {
      const a = await run(wire);
      const b = await run(wire);
      expect(fingerprint(a)).toBe(fingerprint(b));
      expect(a.round).toBe(fp32.round);
      for (const e of a.epochLog) expect(e).toMatchObject({ usedOnce: 200, missing: 0, duplicated: 0 });
      // Tasks, reports and shards are a small part of a round: the tensors decide.
      const ratio = { in: perRound(a).in / full.in, out: perRound(a).out / full.out };
      const want = wire === '16' ? 0.5 : 0.26;
      expect(Math.abs(ratio.in - want), JSON.stringify(ratio)).toBeLessThan(0.06);
      // 16-bit weights go as XOR deltas of the halves the workers hold: fewer bytes than halves.
      if (wire === '16') expect(ratio.out, JSON.stringify(ratio)).toBeGreaterThan(0.15);
      expect(ratio.out, JSON.stringify(ratio)).toBeLessThan(want + 0.06);
      for (const net of ['D', 'G'] as const) {
        let worst = 0;
        for (let i = 0; i < a.model.view[net].length; i++) worst = Math.max(worst, Math.abs(a.model.view[net][i]! - a.model.weights[net][i]!));
        expect(worst).toBeLessThan(wire === '16' ? 2 ** -10 : 1e-4);
      }
    }
  }, 120_000);
});

describe('the view in a real run', () => {
  // Each round's weights difference is one Adam step plus what the last one lost, and rounding it
  // loses at most half a block step (1/254 of its largest value): the view of both nets stays
  // within a tenth of a learning rate of the master weights, round after round.
  it('on the 8-bit wire stays within lr / 10 of the master weights over 500 rounds', async () => {
    let worst = 0;
    let rounds = 0;
    const c = await startCluster(tinyConfig({ workers: 2, batchSize: 10, epochs: 1000, maxRounds: 500, wire: '8' }), smallData(100), {
      hooks: {
        round: (_m, coord) => {
          rounds++;
          for (const net of ['D', 'G'] as const) {
            const w = coord.model.weights[net];
            const v = coord.model.view[net];
            for (let i = 0; i < w.length; i++) worst = Math.max(worst, Math.abs(w[i]! - v[i]!));
          }
        },
      },
    });
    clusters.push(c);
    const coord = await c.finish();
    expect(rounds).toBe(500);
    expect(worst).toBeGreaterThan(0);
    expect(worst).toBeLessThanOrEqual(Math.min(coord.cfg.lrD, coord.cfg.lrG) / 10);
  }, 180_000);
});

/** A member that speaks the protocol and sends 8-bit gradients, changed by `tamper` in round 1's D phase; resolves with how it was closed. */
function member8(url: string, sizes: { D: number; G: number }, tamper: (x: { q: Int8Array; scales: Float32Array }) => void): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    let task: TaskMsg | null = null;
    ws.on('message', (d) => {
      const m = decode(d as Buffer);
      if (m.k === Kind.Challenge) ws.send(encode({ k: Kind.Hello, v: PROTOCOL_VERSION, signature: modelSignature(tinyModel), backend: 'rogue', host: 'rogue', pid: 9 }));
      else if (m.k === Kind.Task) task = m;
      else if (m.k === Kind.Reduce && task) {
        ws.send(encode({ k: Kind.Report, round: m.round, phase: m.phase, count: task.ids.length, loss: 0.7, dReal: m.phase === 'D' ? 0.5 : NaN, dFake: 0.5, computeMs: 1 }));
        const total = sizes[m.phase];
        for (let off = 0; off < total; off += m.chunk) {
          const x = quantize8(values(Math.min(m.chunk, total - off), off + 1, 1e-3));
          if (m.round === 1 && m.phase === 'D' && off === 0) tamper(x);
          ws.send(encode({ k: Kind.Chunk, round: m.round, phase: m.phase, attempt: m.attempt, offset: off, partial: false, fp16: false, scales: x.scales, data: x.q }));
        }
      }
    });
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
    ws.on('error', () => {});
  });
}

describe('a malformed 8-bit gradient', () => {
  it.each([
    ['a NaN scale', (x: { scales: Float32Array }) => void (x.scales[0] = NaN), 'E_NONFINITE'],
    ['an Inf scale', (x: { scales: Float32Array }) => void (x.scales[0] = Infinity), 'E_NONFINITE'],
    ['a zero scale', (x: { scales: Float32Array }) => void (x.scales[0] = 0), 'E_BOUNDS'],
    ['a scale out of bounds (1e20)', (x: { scales: Float32Array }) => void (x.scales[0] = 1e20), 'E_BOUNDS'],
    ['a block holding -128', (x: { q: Int8Array }) => void (x.q[3] = -128), 'E_BOUNDS'],
  ] as const)('with %s is refused with its code; the phase completes and every sample is used once', async (_name, tamper, code) => {
    const n = 60;
    const c = await startCluster(tinyConfig({ workers: 3, minWorkers: 1, batchSize: 10, epochs: 2, wire: '8' }), smallData(n), { startWorkers: 2 });
    clusters.push(c);
    const closed = member8(c.url, { D: c.coord.layouts.D.total, G: c.coord.layouts.G.total }, tamper as (x: { q: Int8Array; scales: Float32Array }) => void);
    const coord = await c.finish();
    const r = await closed;
    expect(r.reason).toMatch(new RegExp(`^${code}: `));
    expect(coord.runDir.metrics().find((m) => m.round === 1)!.dropped).toHaveLength(1);
    expect(coord.epochLog.map((e) => e.usedOnce)).toEqual([n, n]);
    for (const a of [coord.model.weights.D, coord.model.weights.G, coord.model.view.D]) expect(a.every((v) => Number.isFinite(v))).toBe(true);
  }, 60_000);
});

describe('checkpoints and the wire', () => {
  it('a checkpoint of a build before --wire resumes on the wire it used (fp16: the 16-bit wire); a wire this build does not know is refused', async () => {
    const c = await startCluster(tinyConfig({ workers: 1, batchSize: 10, maxRounds: 2, wire: '16' }), smallData(20));
    clusters.push(c);
    const coord = await c.finish();
    const state = coord.state();
    expect(decodeCheckpoint(encodeCheckpoint(state), 'x').config.wire).toBe('16');
    const { wire: _wire, ...older } = state.config;
    for (const [fp16, wire] of [[true, '16'], [false, 'fp32'], [undefined, 'fp32']] as const) {
      const old = { ...state, config: { ...older, fp16 } as unknown as typeof state.config };
      const back = decodeCheckpoint(encodeCheckpoint(old), 'x').config;
      expect(back.wire).toBe(wire);
      expect('fp16' in back).toBe(false);
    }
    const odd = { ...state, config: { ...state.config, wire: '4' } as unknown as typeof state.config };
    expect(() => decodeCheckpoint(encodeCheckpoint(odd), 'x')).toThrow(/wire precision "4"/);
  }, 60_000);

  // The view of a 16-bit run is the master weights rounded to half, so it is rebuilt exactly.
  it('a 16-bit run stopped at a checkpoint and resumed ends with the bits of one that ran through', async () => {
    const over = { workers: 2, batchSize: 10, epochs: 2, wire: '16' as const };
    const through = await run('16', 80);
    const dir = tempDir();
    const first = await startCluster(tinyConfig({ ...over, maxRounds: 3 }), smallData(80), { out: dir });
    clusters.push(first);
    await first.finish();
    await first.coord.close();
    const second = await startCluster(tinyConfig(over), smallData(80), { out: dir, resume: true });
    clusters.push(second);
    const resumed = await second.finish();
    expect(resumed.round).toBe(through.round);
    expect(fingerprint(resumed)).toBe(fingerprint(through));
  }, 60_000);
});
