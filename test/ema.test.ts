import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { emaDecayAt, emaUpdate } from '../coordinator/adam.js';
import { decodeCheckpoint, encodeCheckpoint, generatorWeights, loadCheckpoint } from '../coordinator/checkpoint.js';
import { smallData, startCluster, tinyConfig } from './helpers.js';

describe('moving average of G', () => {
  it('ramps its decay up as min(decay, (1 + t) / (10 + t))', () => {
    expect(emaDecayAt(0.999, 1)).toBeCloseTo(2 / 11, 12);
    expect(emaDecayAt(0.999, 90)).toBeCloseTo(91 / 100, 12);
    expect(emaDecayAt(0.999, 1e6)).toBe(0.999);
    const avg = new Float32Array([0, 10]);
    emaUpdate(avg, new Float32Array([1, 0]), 0.5, 100);
    expect([...avg]).toEqual([0.5, 5]);
    expect(() => emaUpdate(avg, new Float32Array(3), 0.5, 1)).toThrow(/differ in size/);
  });

  it('the coordinator averages G after every G step, checkpoints the average and samples from it', async () => {
    const emaDecay = 0.9;
    const seen: Float32Array[] = [];
    const cluster = await startCluster(tinyConfig({ maxRounds: 6, emaDecay }), smallData(100), {
      onRound: (_m, c) => seen.push(c.weights.G.slice()),
    });
    const initial = cluster.coord.emaG!.slice();
    const coord = await cluster.finish();
    // Recompute the average from the weights after each round (one G step per round).
    const expected = initial;
    seen.forEach((w, i) => emaUpdate(expected, w, emaDecay, i + 1));
    expect(Buffer.from(coord.emaG!.buffer).equals(Buffer.from(expected.buffer))).toBe(true);
    expect(Buffer.from(coord.emaG!.buffer).equals(Buffer.from(coord.weights.G.buffer))).toBe(false);
    expect(coord.sampleWeights()).toBe(coord.emaG);

    const s = loadCheckpoint(coord.runDir);
    expect(Buffer.from(s.emaG!.buffer).equals(Buffer.from(coord.emaG!.buffer))).toBe(true);
    expect(generatorWeights(s)).toBe(s.emaG);
    expect(generatorWeights(s, true)).toBe(s.weights.G);

    // generate samples the average by default and the latest weights with --raw.
    const gen = join(process.cwd(), 'dist', 'coordinator', 'generate-main.js');
    const png = (extra: string[]) => {
      const out = join(coord.runDir, `g${extra.length}.png`);
      execFileSync(process.execPath, [gen, '--checkpoint', coord.runDir, '--count', '4', '--out', out, '--backend', 'wasm', ...extra]);
      return readFileSync(out);
    };
    expect(png([]).equals(png(['--raw']))).toBe(false);

    // A checkpoint written without an average (as before averages existed, or with --ema 0)
    // loads with emaDecay 0 and samples the latest weights.
    const { emaG: _drop, ...rest } = s;
    const plain = { ...rest, config: { ...s.config } as Partial<typeof s.config> };
    delete plain.config.emaDecay;
    const file = join(coord.runDir, 'plain.bin');
    writeFileSync(file, encodeCheckpoint(plain as typeof s));
    const back = decodeCheckpoint(readFileSync(file), file);
    expect(back.emaG).toBeUndefined();
    expect(back.config.emaDecay).toBe(0);
    expect(generatorWeights(back)).toBe(back.weights.G);
  }, 60_000);

  it('--ema 0 keeps no average', async () => {
    const coord = await (await startCluster(tinyConfig({ maxRounds: 2, emaDecay: 0 }), smallData(40))).finish();
    expect(coord.emaG).toBeNull();
    expect(coord.sampleWeights()).toBe(coord.weights.G);
    expect(loadCheckpoint(coord.runDir).emaG).toBeUndefined();
  }, 60_000);
});
