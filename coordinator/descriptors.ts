/**
 * The process's limit on open file descriptors: every socket and open file takes one, and a
 * process that runs out cannot accept workers or write its run directory. At start the soft limit
 * is raised to the hard one where the addon can (getrlimit/setrlimit; Linux and macOS), and read
 * from /proc where it cannot.
 */
import { readFileSync } from 'node:fs';
import { loadAddon } from '../shared/backend/addon.js';

export interface DescriptorLimit {
  /** The soft limit now in force (null: unknown; -1: unlimited). */
  soft: number | null;
  hard: number | null;
  /** The soft limit before it was raised (null: not raised). */
  raisedFrom: number | null;
}

/** Raise the soft limit to the hard one where possible; what the limit is now. */
export function raiseDescriptorLimit(): DescriptorLimit {
  const s = loadAddon();
  if ('addon' in s && typeof s.addon.descriptorLimit === 'function') {
    const [before] = s.addon.descriptorLimit(false);
    const [soft, hard] = s.addon.descriptorLimit(true);
    return { soft, hard, raisedFrom: soft !== before ? before : null };
  }
  return { ...fromProc(), raisedFrom: null };
}

/** The limits as Linux reports them, without the addon. */
function fromProc(): { soft: number | null; hard: number | null } {
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
  if (d.raisedFrom !== null) return `descriptors: soft limit raised from ${fmt(d.raisedFrom)} to ${fmt(d.soft)} (the hard limit)`;
  return `descriptors: limit ${fmt(d.soft)} (hard ${fmt(d.hard)})`;
}
