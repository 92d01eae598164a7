import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { smallData, startCluster, tinyConfig } from './helpers.js';
import { lines, repoRoot, requireDist, run } from './util-proc.js';

const script = join(repoRoot, 'scripts', 'launch-workers.sh');
const root = mkdtempSync(join(tmpdir(), 'gan-ddp-launch-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/**
 * A stand-in for ssh: records its arguments and standard input, then runs the command the way sshd
 * would (one string for the login shell), locally and with an emptied environment, so that only what
 * the launcher sends explicitly reaches the "remote" side.
 */
function fakeSsh(dir: string): { cmd: string; record: string } {
  const record = join(dir, 'record');
  mkdirSync(record, { recursive: true });
  const cmd = join(dir, 'fake-ssh');
  writeFileSync(cmd, `#!/usr/bin/env bash
set -u
id="$(date +%s%N)-$$"
printf '%s\\0' "$@" > ${JSON.stringify(record)}/"$id".args
shift
tee ${JSON.stringify(record)}/"$id".stdin | env -i PATH="$PATH" HOME="$HOME" bash -c "$*"
`);
  chmodSync(cmd, 0o755);
  return { cmd, record };
}

function invocations(record: string): { args: string[]; stdin: string }[] {
  return readdirSync(record)
    .filter((f) => f.endsWith('.args'))
    .sort()
    .map((f) => ({
      args: readFileSync(join(record, f), 'utf8').split('\0').slice(0, -1),
      stdin: readFileSync(join(record, f.replace(/\.args$/, '.stdin')), 'utf8'),
    }));
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return cond();
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} did not finish in ${ms} ms`)), ms).unref())]);
}

beforeAll(() => requireDist());

describe('scripts/launch-workers.sh', () => {
  it('--per-host 1 launches one worker per host over ssh, GAN_DDP_TOKEN sent on stdin; they train a run to completion', async () => {
    const token = "s3cret token with 'quotes'";
    const perRound: number[] = [];
    const cluster = await startCluster(tinyConfig({ workers: 2, batchSize: 10, maxRounds: 4 }), smallData(100), {
      startWorkers: 0, token, hooks: { round: (m) => perRound.push(m.workers) },
    });
    // The "remote" project directory: it must hold dist/, as a real checkout would.
    const dir = join(root, 'remote project');
    mkdirSync(dir);
    symlinkSync(join(repoRoot, 'dist'), join(dir, 'dist'));
    const ssh = fakeSsh(root);
    let trained = false;
    try {
      const r = await run('bash', [script, '--coordinator', cluster.url, '--per-host', '1', '--dir', dir, '--backend', 'wasm', '--connect-timeout', '20', 'host-a', 'host-b'], {
        env: { ...process.env, SSH: ssh.cmd, GAN_DDP_TOKEN: token },
        timeoutMs: 30_000,
      });
      expect(r.code, r.stderr).toBe(0);
      expect(lines(r.stdout)).toEqual([
        `host-a: started worker 0 (log ${dir}/worker-0.log)`,
        `host-b: started worker 1 (log ${dir}/worker-1.log)`,
      ]);
      const coord = await withTimeout(cluster.finish(), 90_000, 'training with the launched workers');
      trained = true;
      expect(coord.round).toBe(4);
      expect(perRound).toEqual([2, 2, 2, 2]);
    } finally {
      if (!trained) await cluster.coord.close('test failed');
    }

    const calls = invocations(ssh.record);
    expect(calls.map((c) => c.args[0])).toEqual(['host-a', 'host-b']);
    calls.forEach((c, k) => {
      // ssh HOST COMMAND: one command string, run by the remote login shell.
      expect(c.args).toHaveLength(2);
      const cmd = c.args[1]!;
      expect(cmd).toContain(`cd '${dir}'`);
      expect(cmd).toMatch(new RegExp(`nohup 'node' dist/cli/worker\\.js --connect '${cluster.url}' --backend 'wasm' --connect-timeout '20' > worker-${k}\\.log 2>&1 < /dev/null &`));
      expect(cmd).not.toContain('s3cret');
      expect(c.stdin).toBe(`${token}\n`);
    });

    // The workers logged to DIR/worker-K.log, got work, and exited when the run ended.
    for (const k of [0, 1]) {
      const log = join(dir, `worker-${k}.log`);
      expect(await waitFor(() => existsSync(log) && /done after \d+ tasks/.test(readFileSync(log, 'utf8')), 15_000), `worker-${k}.log`).toBe(true);
      const tasks = Number(/done after (\d+) tasks/.exec(readFileSync(log, 'utf8'))![1]);
      expect(tasks).toBe(8);
    }
  }, 150_000);

  it('--per-host 2 runs one ssh per host that starts two workers, numbered across hosts; --token-env picks the variable', async () => {
    const dir = join(root, 'per-host');
    mkdirSync(dir);
    const ssh = fakeSsh(join(root, 'ssh-per-host'));
    // `node` here is a stand-in too: it only records that it was started, and with what.
    const fakeNode = join(root, 'fake-node');
    writeFileSync(fakeNode, '#!/usr/bin/env bash\necho "started $*" "token=${GAN_DDP_TOKEN:-none}"\n');
    chmodSync(fakeNode, 0o755);
    const r = await run('bash', [script, '--coordinator', 'ws://10.0.0.1:8765', '--per-host', '2', '--dir', dir, '--node', fakeNode, '--token-env', 'LAUNCH_TOKEN', 'h1', 'h2'], {
      env: { ...process.env, SSH: ssh.cmd, GAN_DDP_TOKEN: 'not-this-one', LAUNCH_TOKEN: 'this-one' },
    });
    expect(r.code, r.stderr).toBe(0);
    expect(lines(r.stdout).map((l) => l.replace(/ \(log .*\)/, ''))).toEqual([
      'h1: started worker 0', 'h1: started worker 1', 'h2: started worker 2', 'h2: started worker 3',
    ]);
    const calls = invocations(ssh.record);
    expect(calls.map((c) => c.args[0])).toEqual(['h1', 'h2']);
    expect(calls[0]!.args[1]).toMatch(/worker-0\.log.*worker-1\.log/);
    expect(calls[1]!.args[1]).toMatch(/worker-2\.log.*worker-3\.log/);
    for (const c of calls) expect(c.stdin).toBe('this-one\n');
    for (const k of [0, 1, 2, 3]) {
      const log = join(dir, `worker-${k}.log`);
      expect(await waitFor(() => existsSync(log) && readFileSync(log, 'utf8').includes('started'), 5000)).toBe(true);
      expect(readFileSync(log, 'utf8').trim()).toBe('started dist/cli/worker.js --connect ws://10.0.0.1:8765 token=this-one');
    }
  });

  it('by default each host runs one worker on every core with the native addon, and one wasm worker per core without it, saying so', async () => {
    const ssh = fakeSsh(join(root, 'ssh-auto'));
    const fakeNode = join(root, 'fake-node-auto');
    writeFileSync(fakeNode, '#!/usr/bin/env bash\necho "started $*"\n');
    chmodSync(fakeNode, 0o755);
    const cores = Number((await run('nproc', [])).stdout.trim());
    const bare = join(root, 'auto-bare');
    const built = join(root, 'auto-built');
    mkdirSync(bare);
    mkdirSync(join(built, 'native', 'build', 'Release'), { recursive: true });
    writeFileSync(join(built, 'native', 'build', 'Release', 'gan_native.node'), '');
    for (const [dir, n, threads] of [[bare, cores, 1], [built, 1, cores]] as const) {
      const r = await run('bash', [script, '--coordinator', 'ws://10.0.0.1:8765', '--dir', dir, '--node', fakeNode, 'h1'], { env: { ...process.env, SSH: ssh.cmd } });
      expect(r.code, r.stderr).toBe(0);
      expect(lines(r.stdout)).toEqual([`h1: started its workers (logs ${dir}/worker-0-*.log)`]);
      if (dir === bare) expect(r.stderr).toMatch(new RegExp(`no native addon here: one wasm worker per core \\(${cores}\\)`));
      else expect(r.stderr).toBe('');
      for (let j = 0; j < n; j++) {
        const log = join(dir, `worker-0-${j}.log`);
        expect(await waitFor(() => existsSync(log) && readFileSync(log, 'utf8').includes('started'), 5000), log).toBe(true);
        expect(readFileSync(log, 'utf8').trim()).toBe(`started dist/cli/worker.js --connect ws://10.0.0.1:8765 --threads ${threads}`);
      }
      expect(existsSync(join(dir, `worker-0-${n}.log`))).toBe(false);
    }
  });

  it('without a token nothing goes to ssh\'s stdin and the workers get none', async () => {
    const dir = join(root, 'no-token');
    mkdirSync(dir);
    const ssh = fakeSsh(join(root, 'ssh-no-token'));
    const fakeNode = join(root, 'fake-node-2');
    writeFileSync(fakeNode, '#!/usr/bin/env bash\necho "token=${GAN_DDP_TOKEN:-none}"\n');
    chmodSync(fakeNode, 0o755);
    const env: NodeJS.ProcessEnv = { ...process.env, SSH: ssh.cmd };
    delete env.GAN_DDP_TOKEN;
    const r = await run('bash', [script, '--coordinator', 'ws://127.0.0.1:9', '--per-host', '1', '--dir', dir, '--node', fakeNode, 'h1'], { env });
    expect(r.code, r.stderr).toBe(0);
    const calls = invocations(ssh.record);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.stdin).toBe('');
    expect(calls[0]!.args[1]).not.toContain('read');
    const log = join(dir, 'worker-0.log');
    expect(await waitFor(() => existsSync(log) && readFileSync(log, 'utf8').includes('token='), 5000)).toBe(true);
    expect(readFileSync(log, 'utf8').trim()).toBe('token=none');
  });

  it('reports a host whose ssh fails, still starts the others, and exits non-zero', async () => {
    const ssh = join(root, 'half-ssh');
    writeFileSync(ssh, '#!/usr/bin/env bash\n[ "$1" = bad ] && { echo "ssh: connect to host bad: Connection refused" >&2; exit 255; }\nexit 0\n');
    chmodSync(ssh, 0o755);
    const r = await run('bash', [script, '--coordinator', 'ws://127.0.0.1:9', '--per-host', '1', 'bad', 'good'], { env: { ...process.env, SSH: ssh } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/bad: ssh failed with status 255; workers 0 not started/);
    expect(r.stdout).toMatch(/good: started worker 1/);
    const auto = await run('bash', [script, '--coordinator', 'ws://127.0.0.1:9', 'bad', 'good'], { env: { ...process.env, SSH: ssh } });
    expect(auto.code).toBe(1);
    expect(auto.stderr).toMatch(/bad: ssh failed with status 255; workers 0-\* not started/);
    expect(auto.stdout).toMatch(/good: started its workers/);
  });

  it('rejects bad usage with one clear line and runs no ssh', async () => {
    const ssh = fakeSsh(join(root, 'ssh-usage'));
    const env = { ...process.env, SSH: ssh.cmd };
    const cases: [string[], RegExp, NodeJS.ProcessEnv?][] = [
      [['h1'], /--coordinator ws:\/\/HOST:PORT is required/],
      [['--coordinator', 'http://x:1', 'h1'], /expected ws:\/\/HOST:PORT/],
      [['--coordinator', 'ws://x:1'], /no hosts given/],
      [['--coordinator', 'ws://x:1', '--per-host', '0', 'h1'], /--per-host 0/],
      [['--coordinator', 'ws://x:1', '--bogus', 'h1'], /unknown option --bogus/],
      [['--coordinator', 'ws://x:1', '--token-env', 'NO_SUCH_TOKEN_VAR', 'h1'], /NO_SUCH_TOKEN_VAR is not set/],
      [['--coordinator', 'ws://x:1', '--token-env', 'a-b', 'h1'], /expected an environment variable name/],
    ];
    for (const [args, pattern, e] of cases) {
      const r = await run('bash', [script, ...args], { env: e ?? env });
      expect(r.code, args.join(' ')).toBe(2);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toMatch(pattern);
    }
    expect(readdirSync(ssh.record)).toEqual([]);
  });

  it('--help documents every option and how the token travels', async () => {
    const r = await run('bash', [script, '--help']);
    expect(r.code).toBe(0);
    for (const f of ['--coordinator', '--token-env', '--per-host', '--dir', '--node', '--backend', '--threads', '--connect-timeout', 'SSH', 'GAN_DDP_TOKEN']) {
      expect(r.stdout).toContain(f);
    }
    expect(r.stdout).toMatch(/standard input/);
  });
});
