/** Small pieces every command-line entry point shares: argument parsers, the error exit, the main guard. */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError } from 'commander';
import { GanError } from '../shared/wire/errors.js';

/** Exit status of a process stopped to be resumed or restarted (a scheduler's preemption): EX_TEMPFAIL, "try again". */
export const EXIT_RESUMABLE = 75;

export function intArg(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected a whole number from ${min}${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ' up'}.`);
    }
    return n;
  };
}

export function floatArg(min: number, max: number, { exclusiveMin = false } = {}) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max || (exclusiveMin && n === min)) {
      throw new InvalidArgumentError(`expected a number in ${exclusiveMin ? '(' : '['}${min}, ${max}].`);
    }
    return n;
  };
}

export function listArg(v: string): number[] {
  const parts = v.split(',').map((s) => s.trim());
  const out = parts.map(Number);
  if (parts.some((p) => !/^\d+$/.test(p)) || out.some((n) => n < 1 || n > 65536)) {
    throw new InvalidArgumentError('expected comma-separated layer widths, e.g. 256,512,1024.');
  }
  return out;
}

/**
 * Print one clear line and exit non-zero. A GanError prints its code; anything else is a bug and
 * prints E_INTERNAL with its stack, which is what a maintainer will need.
 */
export function die(prog: string, e: unknown): never {
  if (e instanceof GanError) {
    process.stderr.write(`${prog}: error [${e.code}]: ${e.message}\n`);
  } else {
    const err = e as { stack?: string; message?: string };
    process.stderr.write(`${prog}: error [E_INTERNAL]: ${err?.message ?? String(e)}\n${err?.stack ?? ''}\n`);
  }
  process.exit(1);
}

/** Whether the module at `url` is the script node was started with (directly or through a bin link). */
export function isMain(url: string): boolean {
  const argv1 = process.argv[1];
  if (!argv1) return false;
  try {
    return realpathSync(argv1) === realpathSync(fileURLToPath(url));
  } catch {
    return false;
  }
}
