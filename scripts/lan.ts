/**
 * The LAN that `npm run bench:hosts` measures on: Linux network namespaces on one bridge (the
 * switch), each host behind its own veth pair with htb on both ends; the kernel's byte counters
 * of each host's link; and processes started inside a host's namespace. See bench-hosts.ts.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';

export const PREFIX = 'gbh-';
export const SW = `${PREFIX}sw`;
export const COORD = `${PREFIX}c`;
export const workerNs = (i: number) => `${PREFIX}w${i}`;
const SUBNET = '10.77.0';
export const COORD_IP = `${SUBNET}.1`;
export const workerIp = (i: number) => `${SUBNET}.${10 + i}`;
export const DEV = 'eth0';
const children = new Set<ChildProcess>();
/** The processes parked in the namespaces (live for the whole run, see park()). */
const parked = new Set<ChildProcess>();

export function track(p: ChildProcess): void {
  children.add(p);
  p.on('exit', () => children.delete(p));
}

function sh(cmd: string[]): string {
  return execFileSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function nsList(): string[] {
  return sh(['ip', 'netns', 'list']).split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(PREFIX));
}

/** Kills what the current configuration started (and, with `everything`, the parked processes too). */
export function killAll(everything = false): void {
  for (const p of children) if (everything || !parked.has(p)) p.kill('SIGKILL');
}

export function removeNamespaces(): void {
  for (const ns of nsList()) {
    try {
      sh(['ip', 'netns', 'del', ns]);
    } catch {
      // Gone meanwhile.
    }
  }
}

/** A process parked in `ns`: /proc/PID/net/dev shows that namespace's interface counters. */
async function park(ns: string): Promise<number> {
  const p = spawn('ip', ['netns', 'exec', ns, 'sleep', 'infinity'], { stdio: 'ignore' });
  track(p);
  parked.add(p);
  const pid = p.pid;
  if (pid === undefined) throw new Error(`could not start a process in ${ns}`);
  const want = statSync(`/run/netns/${ns}`).ino;
  for (let i = 0; i < 500; i++) {
    try {
      if (statSync(`/proc/${pid}/ns/net`).ino === want && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep') return pid;
    } catch {
      // Not there yet.
    }
    await sleep(10);
  }
  throw new Error(`the process parked in ${ns} never entered it`);
}

/** rx and tx bytes of `dev` in the namespace of `pid`. */
function counters(pid: number, dev: string): { rx: number; tx: number } {
  for (const line of readFileSync(`/proc/${pid}/net/dev`, 'utf8').split('\n')) {
    const [name, rest] = line.split(':');
    if (name?.trim() !== dev || rest === undefined) continue;
    const f = rest.trim().split(/\s+/).map(Number);
    return { rx: f[0]!, tx: f[8]! };
  }
  throw new Error(`no ${dev} in /proc/${pid}/net/dev`);
}

export interface Net {
  /** Parked process per host: the coordinator's, then worker 1..max. */
  coordPid: number;
  workerPids: number[];
}

export async function buildNet(maxWorkers: number): Promise<Net> {
  const hosts = [COORD, ...Array.from({ length: maxWorkers }, (_, i) => workerNs(i + 1))];
  for (const ns of [SW, ...hosts]) {
    sh(['ip', 'netns', 'add', ns]);
    sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    // IPv4 only: no IPv6 neighbour discovery chatter in the link counters.
    sh(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  }
  sh(['ip', '-n', SW, 'link', 'add', 'br0', 'type', 'bridge']);
  sh(['ip', '-n', SW, 'link', 'set', 'br0', 'up']);
  hosts.forEach((ns, i) => {
    const port = portOf(ns);
    sh(['ip', '-n', SW, 'link', 'add', port, 'type', 'veth', 'peer', 'name', DEV, 'netns', ns]);
    sh(['ip', '-n', SW, 'link', 'set', port, 'master', 'br0']);
    sh(['ip', '-n', SW, 'link', 'set', port, 'up']);
    sh(['ip', '-n', ns, 'addr', 'add', `${i === 0 ? COORD_IP : workerIp(i)}/24`, 'dev', DEV]);
    sh(['ip', '-n', ns, 'link', 'set', DEV, 'up']);
  });
  const coordPid = await park(COORD);
  const workerPids: number[] = [];
  for (let i = 1; i <= maxWorkers; i++) workerPids.push(await park(workerNs(i)));
  return { coordPid, workerPids };
}

const portOf = (ns: string) => `p-${ns.slice(PREFIX.length)}`;

/** Limits both ends of every link (each direction) to `rate`. */
export function shape(maxWorkers: number, rate: string): void {
  const hosts = [COORD, ...Array.from({ length: maxWorkers }, (_, i) => workerNs(i + 1))];
  const ends = hosts.flatMap((ns) => [[ns, DEV], [SW, portOf(ns)]] as const);
  for (const [ns, dev] of ends) {
    try {
      sh(['tc', '-n', ns, 'qdisc', 'del', 'dev', dev, 'root']);
    } catch {
      // None yet.
    }
    sh(['tc', '-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '10']);
    sh(['tc', '-n', ns, 'class', 'add', 'dev', dev, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', rate, 'ceil', rate]);
  }
}

export interface Snapshot {
  round: number;
  coord: { rx: number; tx: number };
  workers: { rx: number; tx: number }[];
}

export function snapshot(net: Net, w: number, round: number): Snapshot {
  return { round, coord: counters(net.coordPid, DEV), workers: net.workerPids.slice(0, w).map((pid) => counters(pid, DEV)) };
}

export interface Spawned {
  proc: ChildProcess;
  output: () => string;
  exit: Promise<number | null>;
}

export function spawnIn(ns: string, cmd: string[]): Spawned {
  const proc = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
  track(proc);
  let out = '';
  const keep = (b: Buffer) => {
    out = (out + b.toString()).slice(-6000);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const exit = new Promise<number | null>((res) => proc.on('exit', (code) => res(code)));
  return { proc, output: () => out, exit };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Stops every process started here, parked ones too, and removes the namespaces. */
export function cleanup(): void {
  killAll(true);
  try {
    removeNamespaces();
  } catch {
    // ip itself failed: nothing more to do.
  }
}
