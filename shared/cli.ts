/** Small pieces every command-line entry point shares: argument parsers and the error exit. */
import { InvalidArgumentError } from 'commander';

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

/** Print one clear line and exit non-zero. */
export function die(prog: string, e: unknown): never {
  const err = e as { code?: string; message?: string };
  const code = typeof err.code === 'string' && err.code.startsWith('E_') ? ` [${err.code}]` : '';
  process.stderr.write(`${prog}: error${code}: ${err.message ?? String(e)}\n`);
  process.exit(1);
}
