/**
 * Three hosts on one machine: Linux network namespaces joined by veth pairs to a bridge in the
 * coordinator's namespace, the links impaired with tc. The coordinator listens on a private
 * address that exists only inside these namespaces (so it needs --token), each worker runs in its
 * own namespace, and the run must finish with every sample used exactly once per epoch.
 *
 * Where the kernel has no sch_netem, latency and loss come from a userspace relay in each worker's
 * namespace instead (test/util-netem.ts): the bytes still cross the veth and the bridge, and the
 * coordinator still sees each worker's own address.
 *
 * Needs root and iproute2; without them the tests are skipped with the reason in their title.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { smallData, tempDir } from './helpers.js';
import { type Proc, TINY_MODEL_FLAGS, epochsOf, haveCommand, metricsOf, requireBuild, spawnCoordinator, spawnWorker, writeIdxDir } from './util-faults.js';
import { type LinkImpairment, type Relay, startRelay } from './util-netem.js';

const tag = `gddp${process.pid}`;
const NS = { coord: `${tag}-c`, w1: `${tag}-w1`, w2: `${tag}-w2` };
const SUBNET = '10.77.0';
const COORD_IP = `${SUBNET}.1`;
const TOKEN = 'netns-test-token-7f3a';

function sh(args: string[]): string {
  return execFileSync(args[0]!, args.slice(1), { stdio: 'pipe', encoding: 'utf8' });
}

function errText(e: unknown): string {
  const x = e as { stderr?: string; message?: string };
  return (x.stderr || x.message || String(e)).trim().split('\n')[0]!;
}

/** Can this process create namespaces, and which qdiscs does the kernel offer? Probed once. */
function probe(): { ns: string | null; netem: string | null; htb: string | null } {
  if (process.platform !== 'linux') return { ns: 'not Linux', netem: 'not Linux', htb: 'not Linux' };
  if (process.getuid?.() !== 0) return { ns: 'needs root', netem: 'needs root', htb: 'needs root' };
  if (!haveCommand('ip') || !haveCommand('tc')) return { ns: 'iproute2 (ip, tc) not installed', netem: 'no tc', htb: 'no tc' };
  const p = `${tag}-probe`;
  try {
    sh(['ip', 'netns', 'add', p]);
  } catch (e) {
    return { ns: `cannot create a network namespace: ${errText(e)}`, netem: 'no namespace', htb: 'no namespace' };
  }
  const qdisc = (spec: string[]): string | null => {
    try {
      sh(['ip', 'netns', 'exec', p, 'tc', 'qdisc', 'replace', 'dev', 'pa', 'root', ...spec]);
      return null;
    } catch (e) {
      return `tc ${spec[0]}: ${errText(e)}`;
    }
  };
  try {
    sh(['ip', '-n', p, 'link', 'add', 'pa', 'type', 'veth', 'peer', 'name', 'pb']);
    sh(['ip', '-n', p, 'link', 'set', 'pa', 'up']);
    return { ns: null, netem: qdisc(['netem', 'delay', '1ms', 'loss', '1%']), htb: qdisc(['htb', 'default', '10']) };
  } catch (e) {
    return { ns: `cannot create a veth pair in a namespace: ${errText(e)}`, netem: 'no veth', htb: 'no veth' };
  } finally {
    try {
      sh(['ip', 'netns', 'del', p]);
    } catch {
      // Already gone.
    }
  }
}

const can = probe();
const skipNote = (why: string | null) => (why ? ` [skipped: ${why}]` : '');

/** Links to impair: both ends of each worker's veth, so delay and loss hit both directions. */
const LINKS: [string, string][] = [[NS.coord, 'a1'], [NS.coord, 'a2'], [NS.w1, 'b1'], [NS.w2, 'b2']];

function setQdisc(spec: string[] | null): void {
  for (const [ns, dev] of LINKS) {
    if (spec) {
      sh(['ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'replace', 'dev', dev, 'root', 'handle', '1:', ...spec]);
      if (spec[0] === 'htb') sh(['ip', 'netns', 'exec', ns, 'tc', 'class', 'add', 'dev', dev, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', '50mbit']);
    } else {
      try {
        sh(['ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'del', 'dev', dev, 'root']);
      } catch {
        // No qdisc to remove.
      }
    }
  }
}

describe('training across network namespaces', () => {
  const procs: Proc[] = [];
  let built = false;

  beforeAll(() => {
    if (can.ns) return;
    requireBuild();
    for (const ns of Object.values(NS)) sh(['ip', 'netns', 'add', ns]);
    built = true;
    for (const ns of Object.values(NS)) sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    sh(['ip', '-n', NS.coord, 'link', 'add', 'br0', 'type', 'bridge']);
    sh(['ip', '-n', NS.coord, 'addr', 'add', `${COORD_IP}/24`, 'dev', 'br0']);
    sh(['ip', '-n', NS.coord, 'link', 'set', 'br0', 'up']);
    for (const [i, ns] of [[1, NS.w1], [2, NS.w2]] as const) {
      sh(['ip', '-n', NS.coord, 'link', 'add', `a${i}`, 'type', 'veth', 'peer', 'name', `b${i}`, 'netns', ns]);
      sh(['ip', '-n', NS.coord, 'link', 'set', `a${i}`, 'master', 'br0']);
      sh(['ip', '-n', NS.coord, 'link', 'set', `a${i}`, 'up']);
      sh(['ip', '-n', ns, 'addr', 'add', `${SUBNET}.${10 + i}/24`, 'dev', `b${i}`]);
      sh(['ip', '-n', ns, 'link', 'set', `b${i}`, 'up']);
    }
  });

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill('SIGKILL')));
    if (!built) return;
    for (const ns of Object.values(NS)) {
      try {
        sh(['ip', 'netns', 'del', ns]);
      } catch {
        // Never created, or already gone.
      }
    }
  });

  /**
   * `via` may put something between a worker and the coordinator: given the worker's namespace and
   * the coordinator's "host:port", it returns the URL that worker should connect to.
   */
  async function run(minRoundMs: number, via?: (ns: string, i: number, target: string) => Promise<string>): Promise<ReturnType<typeof metricsOf>> {
    const n = 200;
    const data = writeIdxDir(smallData(n));
    const out = join(tempDir(), 'run');
    const coord = spawnCoordinator([
      // The namespaces share this machine's memory: as hosts of their own, the workers use frames over the links.
      ...TINY_MODEL_FLAGS, '--shm', 'off', '--host', COORD_IP, '--port', '0', '--token', TOKEN, '--data', data, '--workers', '2',
      '--batch-size', '10', '--epochs', '2', '--round-timeout', '30', '--heartbeat', '5', '--out', out,
    ], 'netns-coordinator', ['ip', 'netns', 'exec', NS.coord]);
    procs.push(coord);
    const port = await coord.port;
    const workers = await Promise.all([NS.w1, NS.w2].map(async (ns, i) => {
      const url = via ? await via(ns, i, `${COORD_IP}:${port}`) : `ws://${COORD_IP}:${port}`;
      const w = spawnWorker(url, `netns-worker-${i + 1}`, { token: TOKEN, wrap: ['ip', 'netns', 'exec', ns], connectTimeoutS: 30 });
      procs.push(w);
      return w;
    }));
    const done = await coord.waitExit(90_000);
    expect(done.code, coord.output.slice(-2000)).toBe(0);
    for (const w of workers) expect((await w.waitExit(15_000)).code, w.output).toBe(0);
    // The workers really came from their own namespaces' addresses.
    expect(coord.output).toMatch(new RegExp(`connected from (::ffff:)?${SUBNET.replace(/\./g, '\\.')}\\.11:`));
    expect(coord.output).toMatch(new RegExp(`connected from (::ffff:)?${SUBNET.replace(/\./g, '\\.')}\\.12:`));
    const epochs = epochsOf(out);
    expect(epochs).toHaveLength(2);
    for (const e of epochs) expect(e).toMatchObject({ samples: n, usedOnce: n, missing: 0, duplicated: 0, rounds: 10 });
    const ms = metricsOf(out);
    expect(ms).toHaveLength(20);
    for (const m of ms) expect(m).toMatchObject({ workers: 2, dropped: [] });
    // The impairment was in effect: a round crosses each link several times.
    const sorted = ms.map((m) => m.round_ms).sort((a, b) => a - b);
    expect(sorted[Math.floor(sorted.length / 2)]).toBeGreaterThan(minRoundMs);
    return ms;
  }

  it.skipIf(!!can.ns || !!can.netem)(`3 namespaces, netem delay 20ms loss 1% on every link: completes, each sample once per epoch${skipNote(can.ns ?? can.netem)}`, async () => {
    setQdisc(['netem', 'delay', '20ms', 'loss', '1%']);
    try {
      // Each phase is at least a task out and a gradient back, 20 ms each way: 80 ms a round.
      await run(75);
    } finally {
      setQdisc(null);
    }
  }, 120_000);

  const RELAY: LinkImpairment = { delayMs: 20, loss: 0.01, rtoMs: 200, seed: 20_240_601 };

  it.skipIf(!!can.ns)(`3 namespaces, a relay in each worker's namespace adds ${RELAY.delayMs} ms each way and ${RELAY.loss * 100}% loss as ${RELAY.rtoMs} ms retransmission stalls: completes, each sample once per epoch${skipNote(can.ns)}`, async () => {
    const relays: Relay[] = [];
    try {
      // The relay holds every byte for the delay and only ever adds to it, and each phase is a task
      // out and a gradient back (the weights ride ahead of the next task): a round is at least
      // four one-way delays on top of its compute, whatever the loss does.
      const ms = await run(4 * RELAY.delayMs, async (ns, i, target) => {
        const r = await startRelay({ ...RELAY, seed: RELAY.seed + i, target, wrap: ['ip', 'netns', 'exec', ns], name: `netns-relay-${i + 1}` });
        relays.push(r);
        procs.push(r.proc);
        return `ws://${r.host}:${r.port}`;
      });
      const stats = await Promise.all(relays.map((r) => r.stop()));
      // Each worker kept its one connection, and all of the coordinator's traffic went through a relay.
      for (const st of stats) expect(st.connections).toBe(1);
      const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
      expect(sum(stats.map((st) => st.down.bytes))).toBeGreaterThanOrEqual(sum(ms.map((m) => m.bytes_out)));
      expect(sum(stats.map((st) => st.up.bytes))).toBeGreaterThanOrEqual(sum(ms.map((m) => m.bytes_in)));
      // Loss did happen in both directions, and a round that met it paid the retransmission wait.
      for (const dir of ['up', 'down'] as const) {
        expect(sum(stats.map((st) => st[dir].lost))).toBeGreaterThan(0);
        expect(Math.max(...stats.map((st) => st[dir].maxHoldMs))).toBeGreaterThanOrEqual(RELAY.delayMs + RELAY.rtoMs);
      }
      expect(Math.max(...ms.map((m) => m.round_ms))).toBeGreaterThanOrEqual(4 * RELAY.delayMs + RELAY.rtoMs);
    } finally {
      await Promise.all(relays.map((r) => r.proc.kill('SIGKILL')));
    }
  }, 120_000);

  it.skipIf(!!can.ns || !!can.htb)(`3 namespaces, every link limited to 50 mbit/s (htb): completes, each sample once per epoch${skipNote(can.ns ?? can.htb)}`, async () => {
    setQdisc(['htb', 'default', '10']);
    try {
      // D and G weights (~50k floats each) cross the coordinator's link to each worker every round.
      await run(40);
    } finally {
      setQdisc(null);
    }
  }, 120_000);
  it.skipIf(!!can.ns || !haveCommand('unshare'))(`3 namespaces, one worker sharing the coordinator's memory and one that cannot see it (its own /dev/shm, as on another machine): completes with each sample once per epoch${skipNote(can.ns ?? (haveCommand('unshare') ? null : 'no unshare'))}`, async () => {
    const n = 200;
    const data = writeIdxDir(smallData(n));
    const out = join(tempDir(), 'run');
    const coord = spawnCoordinator([
      ...TINY_MODEL_FLAGS, '--host', COORD_IP, '--port', '0', '--token', TOKEN, '--data', data, '--workers', '2',
      '--batch-size', '10', '--epochs', '2', '--round-timeout', '30', '--out', out,
    ], 'netns-mixed-coordinator', ['ip', 'netns', 'exec', NS.coord]);
    procs.push(coord);
    const url = `ws://${COORD_IP}:${await coord.port}`;
    const local = spawnWorker(url, 'netns-mixed-local', { token: TOKEN, wrap: ['ip', 'netns', 'exec', NS.w1], connectTimeoutS: 30 });
    // A mount namespace with an empty /dev/shm: the region's path names nothing there.
    const remote = spawnWorker(url, 'netns-mixed-remote', {
      token: TOKEN, connectTimeoutS: 30,
      wrap: ['ip', 'netns', 'exec', NS.w2, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs tmpfs /dev/shm && exec "$@"', 'sh'],
    });
    procs.push(local, remote);
    const done = await coord.waitExit(90_000);
    expect(done.code, coord.output.slice(-2000)).toBe(0);
    for (const w of [local, remote]) expect((await w.waitExit(15_000)).code, w.output).toBe(0);
    expect(coord.output).toMatch(/worker \d \(.*\) shares this host: tensors through shared memory/);
    expect(coord.output).toMatch(/worker \d \(.*\) uses frames \(ENOENT/);
    const epochs = epochsOf(out);
    expect(epochs).toHaveLength(2);
    for (const e of epochs) expect(e).toMatchObject({ samples: n, usedOnce: n, missing: 0, duplicated: 0, rounds: 10 });
    for (const m of metricsOf(out)) expect(m).toMatchObject({ workers: 2, dropped: [] });
  }, 120_000);
});
