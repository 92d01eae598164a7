/**
 * The room strangers share (shared/wire/admission.ts): however their connections are counted
 * (pending under the per-address and total caps, or refused and held unread), a listener never
 * holds more than `pending + probing` of them.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createServer } from 'node:http';
import { type Socket, connect } from 'node:net';
import { Admission, type Listening } from '../shared/wire/admission.js';

const open: Socket[] = [];
let listening: Listening | null = null;
afterEach(async () => {
  for (const s of open.splice(0)) s.destroy();
  await listening?.close();
  listening = null;
});

/** A connection from 127.0.0.`host`; resolves once connected. */
function dial(port: number, host: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', localAddress: `127.0.0.${host}` }, () => resolve(s));
    s.on('error', () => {});
    s.once('error', reject);
    open.push(s);
  });
}

describe('the strangers\' room', () => {
  it('bounds pending and held connections together: held ones from one address leave no room for pending ones from others', async () => {
    const limits = { pending: 4, perAddress: 2, reserved: 0, ratePerS: 1000, burst: 1000, penalty: 0, probing: 4 };
    const admission = new Admission(limits, () => {});
    // An HTTP server that never answers: what it is handed stays open.
    const server = createServer(() => {});
    listening = await admission.listen(server, '127.0.0.1', 0);
    const port = listening.port;
    // Two pending from 127.0.0.2, six more from it refused and held: the room of 8 is full.
    for (let i = 0; i < 8; i++) await dial(port, 2);
    // Then others, from addresses with no pending connection yet.
    for (const host of [3, 4, 5]) for (let i = 0; i < 2; i++) await dial(port, host);
    await new Promise((r) => setTimeout(r, 300));
    const alive = open.filter((s) => !s.destroyed && s.readyState === 'open').length;
    expect(alive).toBe(limits.pending + limits.probing);
    server.close();
  });
});
