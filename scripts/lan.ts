/**
 * The LAN that `npm run bench:hosts` measures on and `npm run soak` injects faults into: Linux network namespaces on one bridge (the
 * switch), each host behind its own veth pair with htb on both ends; the kernel's byte counters
 * of each host's link; and processes started inside a host's namespace. See bench-hosts.ts.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';

/** The host's interface in every namespace. */
export const DEV = 'eth0';

function sh(cmd: string[]): string {
  return execFileSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
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

export interface Snapshot {
  round: number;
  coord: { rx: number; tx: number };
  workers: { rx: number; tx: number }[];
}

export interface Spawned {
  proc: ChildProcess;
  output: () => string;
  exit: Promise<number | null>;
}

/**
 * One LAN: namespaces named PREFIX* (PREFIXsw the switch, PREFIXc the coordinator at SUBNET.1,
 * PREFIXw1.. the workers at SUBNET.11..), so that two LANs (the benchmark's, the soak's) never meet.
 */
export class Lan {
  readonly sw: string;
  readonly coord: string;
  readonly coordIp: string;
  private readonly children = new Set<ChildProcess>();
  /** The processes parked in the namespaces (live for the whole run, see park()). */
  private readonly parked = new Set<ChildProcess>();

  constructor(readonly prefix: string, private readonly subnet: string) {
    this.sw = `${prefix}sw`;
    this.coord = `${prefix}c`;
    this.coordIp = `${subnet}.1`;
  }

  workerNs(i: number): string {
    return `${this.prefix}w${i}`;
  }

  workerIp(i: number): string {
    return `${this.subnet}.${10 + i}`;
  }

  track(p: ChildProcess): void {
    this.children.add(p);
    p.on('exit', () => this.children.delete(p));
  }

  nsList(): string[] {
    return sh(['ip', 'netns', 'list']).split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(this.prefix));
  }

  /** Kills what the current configuration started (and, with `everything`, the parked processes too). */
  killAll(everything = false): void {
    for (const p of this.children) if (everything || !this.parked.has(p)) p.kill('SIGKILL');
  }

  removeNamespaces(): void {
    for (const ns of this.nsList()) {
      try {
        sh(['ip', 'netns', 'del', ns]);
      } catch {
        // Gone meanwhile.
      }
    }
  }

  private hosts(maxWorkers: number): string[] {
    return [this.coord, ...Array.from({ length: maxWorkers }, (_, i) => this.workerNs(i + 1))];
  }

  private portOf(ns: string): string {
    return `p-${ns.slice(this.prefix.length)}`;
  }

  /** A process parked in `ns`: /proc/PID/net/dev shows that namespace's interface counters. */
  private async park(ns: string): Promise<number> {
    const p = spawn('ip', ['netns', 'exec', ns, 'sleep', 'infinity'], { stdio: 'ignore' });
    this.track(p);
    this.parked.add(p);
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

  async buildNet(maxWorkers: number): Promise<Net> {
    const hosts = this.hosts(maxWorkers);
    for (const ns of [this.sw, ...hosts]) {
      sh(['ip', 'netns', 'add', ns]);
      sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      // IPv4 only: no IPv6 neighbour discovery chatter in the link counters.
      sh(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    }
    sh(['ip', '-n', this.sw, 'link', 'add', 'br0', 'type', 'bridge']);
    sh(['ip', '-n', this.sw, 'link', 'set', 'br0', 'up']);
    hosts.forEach((ns, i) => {
      const port = this.portOf(ns);
      sh(['ip', '-n', this.sw, 'link', 'add', port, 'type', 'veth', 'peer', 'name', DEV, 'netns', ns]);
      sh(['ip', '-n', this.sw, 'link', 'set', port, 'master', 'br0']);
      sh(['ip', '-n', this.sw, 'link', 'set', port, 'up']);
      sh(['ip', '-n', ns, 'addr', 'add', `${i === 0 ? this.coordIp : this.workerIp(i)}/24`, 'dev', DEV]);
      sh(['ip', '-n', ns, 'link', 'set', DEV, 'up']);
    });
    const coordPid = await this.park(this.coord);
    const workerPids: number[] = [];
    for (let i = 1; i <= maxWorkers; i++) workerPids.push(await this.park(this.workerNs(i)));
    return { coordPid, workerPids };
  }

  /** Limits both ends of every link (each direction) to `rate`. */
  shape(maxWorkers: number, rate: string): void {
    const ends = this.hosts(maxWorkers).flatMap((ns) => [[ns, DEV], [this.sw, this.portOf(ns)]] as const);
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

  /** Take a host's link to the switch down (its cable pulled) or bring it back up. */
  setLink(ns: string, up: boolean): void {
    sh(['ip', '-n', this.sw, 'link', 'set', this.portOf(ns), up ? 'up' : 'down']);
  }

  snapshot(net: Net, w: number, round: number): Snapshot {
    return { round, coord: counters(net.coordPid, DEV), workers: net.workerPids.slice(0, w).map((pid) => counters(pid, DEV)) };
  }

  /**
   * Start `cmd` in host `ns`. With `privateShm` it gets a /dev/shm of its own (an empty tmpfs in the
   * mount namespace `ip netns exec` makes for it), as a process on another machine would.
   */
  spawnIn(ns: string, cmd: string[], o: { privateShm?: boolean } = {}): Spawned {
    const run = o.privateShm ? ['sh', '-c', 'mount -t tmpfs -o size=1g,mode=1777 tmpfs /dev/shm && exec "$0" "$@"', ...cmd] : cmd;
    const proc = spawn('ip', ['netns', 'exec', ns, ...run], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.track(proc);
    let out = '';
    const keep = (b: Buffer) => {
      out = (out + b.toString()).slice(-6000);
    };
    proc.stdout!.on('data', keep);
    proc.stderr!.on('data', keep);
    proc.stdout!.on('error', () => {});
    proc.stderr!.on('error', () => {});
    const exit = new Promise<number | null>((res) => proc.on('exit', (code) => res(code)));
    return { proc, output: () => out, exit };
  }

  /** Stops every process started here, parked ones too, and removes the namespaces. */
  cleanup(): void {
    this.killAll(true);
    try {
      this.removeNamespaces();
    } catch {
      // ip itself failed: nothing more to do.
    }
  }
}
