import { defineConfig } from 'vitest/config';

/**
 * Two tiers. `npm test` runs the fast one: unit tests and small integration runs (the real seed
 * model among them), a few minutes on 2 cores. `npm run test:all` (GAN_TEST_ALL=1, what CI runs)
 * adds the files below: they need root, network namespaces, Chromium or a SLURM cluster, or they
 * run whole processes for minutes (the soak, floods of strangers, faults injected into real
 * processes).
 */
const FULL_TIER_ONLY = [
  'browser-worker', 'dashboard', // Chromium
  'netns', 'slurm', 'cluster-launch', // network namespaces, a SLURM cluster, launch under each
  'soak', 'strangers', 'hostile', 'faults', 'fuzz', // minutes of real processes under attack or faults
  'cluster-k8s', 'eval-beside',
].map((name) => `test/${name}.test.ts`);

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: process.env.GAN_TEST_ALL ? [] : FULL_TIER_ONLY,
    // Worker processes and TensorFlow.js backends are per process: keep test files in separate forks.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
