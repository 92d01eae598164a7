import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { emaDecayAt, emaUpdate } from '../coordinator/optimizer.js';
import { Coordinator } from '../coordinator/coordinator.js';
import { decodeCheckpoint, encodeCheckpoint, generatorWeights } from '../coordinator/checkpoint.js';
import { loadCheckpoint } from '../coordinator/run-dir.js';
import { smallData, startCluster, tempDir, tinyConfig } from './helpers.js';

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
    // Small enough that the ramp (2/11, 3/12, 4/13, ...) reaches the cap within the run.
    const emaDecay = 0.3;
    const seen: Float32Array[] = [];
    const cluster = await startCluster(tinyConfig({ maxRounds: 6, epochs: 2, emaDecay }), smallData(100), {
      hooks: { round: (_m, c) => seen.push(c.model.weights.G.slice()) },
    });
    const initial = cluster.coord.model.emaG!.slice();
    const coord = await cluster.finish();
    // Recompute the average by hand from the weights after each round (one G step per round).
    expect(seen).toHaveLength(6);
    const expected = Float64Array.from(initial);
    seen.forEach((w, i) => {
      const t = i + 1;
      const d = Math.min(emaDecay, (1 + t) / (10 + t));
      for (let k = 0; k < expected.length; k++) expected[k] = Math.fround(d * expected[k]! + (1 - d) * w[k]!);
    });
    expect(Buffer.from(coord.model.emaG!.buffer).equals(Buffer.from(Float32Array.from(expected).buffer))).toBe(true);
    expect(Buffer.from(coord.model.emaG!.buffer).equals(Buffer.from(coord.model.weights.G.buffer))).toBe(false);
    expect(coord.sampleWeights()).toBe(coord.model.emaG);

    const s = loadCheckpoint(coord.runDir.path);
    expect(Buffer.from(s.emaG!.buffer).equals(Buffer.from(coord.model.emaG!.buffer))).toBe(true);
    expect(generatorWeights(s)).toBe(s.emaG);
    expect(generatorWeights(s, true)).toBe(s.weights.G);

    // generate samples the average by default and the latest weights with --raw.
    const gen = join(process.cwd(), 'dist', 'cli', 'generate.js');
    const png = (extra: string[]) => {
      const out = join(coord.runDir.path, `g${extra.length}.png`);
      execFileSync(process.execPath, [gen, '--checkpoint', coord.runDir.path, '--count', '4', '--out', out, '--backend', 'wasm', ...extra]);
      return readFileSync(out);
    };
    expect(png([]).equals(png(['--raw']))).toBe(false);

    // A checkpoint written without an average (as before averages existed, or with --ema 0)
    // loads with emaDecay 0 and samples the latest weights.
    const { emaG: _drop, ...rest } = s;
    const plain = { ...rest, config: { ...s.config } as Partial<typeof s.config> };
    delete plain.config.emaDecay;
    const file = join(coord.runDir.path, 'plain.bin');
    writeFileSync(file, encodeCheckpoint(plain as typeof s));
    const back = decodeCheckpoint(readFileSync(file), file);
    expect(back.emaG).toBeUndefined();
    expect(back.config.emaDecay).toBe(0);
    expect(generatorWeights(back)).toBe(back.weights.G);
    // A checkpoint that claims an average it does not hold is never written.
    expect(() => encodeCheckpoint({ ...rest, config: s.config } as typeof s)).toThrow(/emaDecay 0.3 without a moving average/);

    // Resuming such a checkpoint with --ema starts the average from the current weights.
    const dir = tempDir();
    writeFileSync(join(dir, 'checkpoint.bin'), readFileSync(file));
    const lines: string[] = [];
    const resumed = new Coordinator({ config: { ...back.config, emaDecay: 0.5 }, host: '127.0.0.1', port: 0, out: dir, resume: true, dataset: smallData(100), log: (l) => lines.push(l) });
    await resumed.start();
    await resumed.close();
    expect(Buffer.from(resumed.model.emaG!.buffer).equals(Buffer.from(back.weights.G.buffer))).toBe(true);
    expect(lines.some((l) => /kept no moving average of G: starting one \(decay 0.5\)/.test(l))).toBe(true);
  }, 60_000);

  it('--ema 0 keeps no average', async () => {
    const coord = await (await startCluster(tinyConfig({ maxRounds: 2, emaDecay: 0 }), smallData(40))).finish();
    expect(coord.model.emaG).toBeNull();
    expect(coord.sampleWeights()).toBe(coord.model.weights.G);
    expect(loadCheckpoint(coord.runDir.path).emaG).toBeUndefined();
  }, 60_000);
});
