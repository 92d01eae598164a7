/** Authentication and TLS of a real training run: who gets in, and what crosses the wire. */
import { describe, expect, it } from 'vitest';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { Coordinator } from '../coordinator/coordinator.js';
import { Kind, PROTOCOL_VERSION, type Message, decode, encode } from '../shared/wire/codec.js';
import { modelSignature } from '../shared/compute/model.js';
import { nodeWorker } from '../worker/node.js';
import { smallData, startCluster, tempDir, tinyConfig, tinyModel } from './helpers.js';
import { expectEveryEpochExact, requireBuild, selfSignedCert, spawnCoordinator, spawnWorker } from './util-faults.js';
import { faultHarness } from './util-fault-cluster.js';

const { cluster, procs } = faultHarness();

describe('authentication', () => {
  const token = 's3cret-token-for-tests-0123456789';

  /** Do the handshake by hand; resolves with the close code and reason. */
  function handshake(url: string, proof: (nonce: Uint8Array) => Uint8Array | undefined): Promise<{ code: number; reason: string; challenge: Message | null }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      let challenge: Message | null = null;
      ws.on('message', (d) => {
        const m = decode(d as Buffer);
        if (m.k !== Kind.Challenge) return;
        challenge = m;
        ws.send(encode({ k: Kind.Hello, v: PROTOCOL_VERSION, signature: modelSignature(tinyModel), backend: 'test', host: 'test', pid: 1, proof: proof(m.nonce) }));
      });
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString(), challenge }));
      ws.on('error', reject);
    });
  }

  it('(g) wrong or missing proof is refused with E_AUTH, the right token trains, and the token never crosses the wire', async () => {
    // Every frame either side sends in this process passes through WebSocket.prototype.send.
    const frames: Buffer[] = [];
    const origSend = WebSocket.prototype.send;
    WebSocket.prototype.send = function (this: WebSocket, data: unknown, ...rest: unknown[]) {
      if (Buffer.isBuffer(data) || data instanceof Uint8Array) frames.push(Buffer.from(data));
      return (origSend as (...a: unknown[]) => void).call(this, data, ...rest);
    } as typeof origSend;
    try {
      const c = await startCluster(tinyConfig({ workers: 2, maxRounds: 4 }), smallData(100), { token, startWorkers: 0 });
      // Raw handshakes: no proof, a proof under another token, a short proof.
      const none = await handshake(c.url, () => undefined);
      const wrong = await handshake(c.url, (n) => createHmac('sha256', 'not-the-token').update(n).digest());
      const short = await handshake(c.url, (n) => createHmac('sha256', token).update(n).digest().subarray(0, 16));
      for (const r of [none, wrong, short]) {
        expect(r.code).toBe(4003);
        expect(r.reason).toMatch(/^E_AUTH: /);
        expect(r.challenge).toMatchObject({ auth: true });
      }
      // A worker process with the wrong token gives up at once (no reconnect loop) with E_AUTH.
      const bad = spawnWorker(c.url, 'wrong-token', { token: 'not-the-token' });
      procs.push(bad);
      expect((await bad.waitExit(20_000)).code).toBe(1);
      expect(bad.output).toMatch(/worker: error \[E_AUTH\]: coordinator refused this worker: E_AUTH: token proof missing or wrong/);
      const noToken = spawnWorker(c.url, 'no-token');
      procs.push(noToken);
      expect((await noToken.waitExit(20_000)).code).toBe(1);
      expect(noToken.output).toMatch(/E_AUTH/);
      // A WorkerClient without a token refuses itself rather than send an empty proof.
      await expect(nodeWorker({ url: c.url, backend: 'wasm', connectTimeoutMs: 2000 }).run()).rejects.toMatchObject({ code: 'E_AUTH' });

      c.addWorker({ token });
      c.addWorker({ token });
      const coord = await c.finish();
      expect(coord.round).toBe(4);

      const needle = Buffer.from(token);
      expect(frames.length).toBeGreaterThan(20);
      for (const f of frames) expect(f.includes(needle)).toBe(false);
      const hellos = frames.map((f) => {
        try {
          return decode(f);
        } catch {
          return null;
        }
      }).filter((m): m is Extract<Message, { k: Kind.Hello }> => m?.k === Kind.Hello);
      // Three raw Hellos, one from the in-process client that refused itself (none), two real workers.
      expect(hellos.length).toBe(5);
      for (const m of hellos.slice(3)) {
        expect(m.proof).toBeInstanceOf(Uint8Array);
        expect(m.proof!.length).toBe(32);
        expect(Object.keys(m).sort()).toEqual(['backend', 'host', 'k', 'peerPort', 'pid', 'proof', 'signature', 'v']);
      }
    } finally {
      WebSocket.prototype.send = origSend;
    }
  }, 60_000);

  it('(g) listening on 0.0.0.0 needs --token unless --insecure', async () => {
    const mk = (o: { token?: string; insecure?: boolean }) => new Coordinator({ config: tinyConfig(), host: '0.0.0.0', port: 0, out: tempDir(), dataset: smallData(50), ...o });
    await expect(mk({}).start()).rejects.toMatchObject({ code: 'E_INSECURE' });
    for (const o of [{ insecure: true }, { token }]) {
      const c = mk(o);
      expect(await c.start()).toBeGreaterThan(0);
      await c.close();
    }
    requireBuild();
    const p = spawnCoordinator(['--host', '0.0.0.0', '--port', '0', '--out', join(tempDir(), 'run')], 'insecure-cli');
    procs.push(p);
    expect((await p.waitExit(30_000)).code).toBe(1);
    expect(p.output).toMatch(/^coordinator: error \[E_INSECURE\]: refusing to listen on 0\.0\.0\.0 without --token \(pass --insecure to allow it\)$/m);
  }, 60_000);
});

const tls = selfSignedCert();

describe('TLS', () => {
  it.skipIf('error' in tls)(`(h) trains over wss:// with --ca${'error' in tls ? ` [skipped: ${tls.error}]` : ''}`, async () => {
    if ('error' in tls) return;
    const n = 100;
    const h = await cluster(tinyConfig({ workers: 2, batchSize: 10, epochs: 1 }), smallData(n), {
      scheme: 'wss',
      // Short: a worker that misses the Stop would otherwise retry for 30 s before failing.
      worker: { ca: tls.cert, connectTimeoutS: 3 },
      coordinator: { tls: { cert: readFileSync(tls.cert), key: readFileSync(tls.key) } },
    });
    expect(h.url).toMatch(/^wss:\/\//);
    // A worker that does not trust the certificate never gets in.
    const untrusting = nodeWorker({ url: h.url, backend: 'wasm', connectTimeoutMs: 1500 });
    const refused = untrusting.run().then(() => null, (e: Error) => e);
    await h.train();
    // An untrusted certificate is final: the worker says so at once instead of retrying.
    expect(await refused).toMatchObject({ code: 'E_TLS', message: expect.stringMatching(/self.signed certificate.*--ca/i) });
    expectEveryEpochExact(h.epochs(), n, 1);
    // The run's end reaches the workers over TLS too: Stop, then a clean close, then exit 0.
    for (const p of h.procs) {
      const r = await p.waitExit(15_000);
      expect(p.output, `${p.name} should have been told to stop, not lost its connection`).not.toMatch(/connection lost/);
      expect(r.code).toBe(0);
    }
    expect(h.metrics().every((m) => m.workers === 2)).toBe(true);
  }, 60_000);
});
