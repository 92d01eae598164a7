/**
 * The process's limit on open file descriptors: every socket and open file takes one, and a
 * process that runs out cannot accept workers or write its run directory. Node itself raises the
 * soft limit to the hard one at start (on POSIX systems); this reads what is in force, from /proc
 * where the system has it, for the log and for the admission limits (shared/wire/admission.ts).
 */
import { readFileSync } from 'node:fs';

export interface DescriptorLimit {
  /** The soft limit in force (null: unknown; -1: unlimited). */
  soft: number | null;
  hard: number | null;
}

export function descriptorLimit(): DescriptorLimit {
  try {
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    const n = (x: string | undefined) => (x === undefined ? null : x === 'unlimited' ? -1 : Number(x));
    return { soft: n(m?.[1]), hard: n(m?.[2]) };
  } catch {
    return { soft: null, hard: null };
  }
}

/** One line for the log. */
export function describeDescriptors(d: DescriptorLimit): string {
  const fmt = (x: number | null) => (x === null ? 'unknown' : x < 0 ? 'unlimited' : String(x));
  return `descriptors: limit ${fmt(d.soft)} (hard ${fmt(d.hard)})`;
}
