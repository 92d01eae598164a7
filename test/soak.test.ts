/**
 * The chaos soak (scripts/soak.ts), three minutes of it: every fault kind injected at least once
 * across network namespaces, and every invariant of the failure model held. Needs root and ip.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { repoRoot, requireDist, runNode } from './util-proc.js';
import { netnsMissing } from './util-faults.js';

const why = netnsMissing();

describe('the chaos soak', () => {
  it.skipIf(why !== null)(`survives 3 minutes of faults with every invariant held${why ? ` [skipped: ${why}]` : ''}`, async () => {
    requireDist();
    const r = await runNode(join(repoRoot, 'dist', 'scripts', 'soak.js'), ['--minutes', '3', '--seed', '11'], { timeoutMs: 420_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const rows = r.stdout.split('\n').filter((l) => /^\| [a-z]/.test(l) && !l.startsWith('| fault'));
    expect(rows).toHaveLength(8);
    for (const row of rows) {
      const [, injected, survived] = row.split('|').map((x) => x.trim()).filter(Boolean);
      expect(Number(injected), row).toBeGreaterThan(0);
      expect(survived, row).toBe(injected);
    }
    expect(r.stdout).toMatch(/^soak passed$/m);
  }, 480_000);
});
