/** Running `launch` as a job's task would: a process with exactly the environment the scheduler gives it. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Env } from '../cli/cluster-env.js';
import { tempDir } from './helpers.js';
import { Proc, ROOT, TINY_MODEL_FLAGS } from './util-faults.js';

export const LAUNCH_MAIN = join(ROOT, 'dist', 'cli', 'launch.js');

/** What every task of the tests' jobs runs: the tiny model on the wasm backend. */
export const TINY_LAUNCH_FLAGS = [...TINY_MODEL_FLAGS, '--backend', 'wasm', '--batch-size', '10', '--seed', '3'];

/** A token file as a mounted Secret would be. */
export function tokenFile(token = 'cluster-test-token-5e1d'): { file: string; token: string } {
  const file = join(tempDir('gan-ddp-secret-'), 'token');
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return { file, token };
}

/**
 * `launch ARGS` with `env` as its whole environment (plus PATH, as any container has), optionally
 * inside a network namespace (`wrap`, e.g. ['ip', 'netns', 'exec', NS]).
 */
export function spawnLaunch(name: string, env: Env, args: string[], wrap: string[] = []): Proc {
  const vars = Object.entries({ PATH: process.env.PATH, ...env }).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`);
  const cmd = [...wrap, 'env', '-i', ...vars, process.execPath, LAUNCH_MAIN, ...args];
  return new Proc(name, cmd[0]!, cmd.slice(1));
}
