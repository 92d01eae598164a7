/** The token proof: WebCrypto where it exists, the plain SHA-256 where a browser hides it; the same bytes. */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { TICKET_MS, TICKET_PARAM, admissionTicket, checkProof, proveToken, ticketNonce, withTicket } from '../shared/wire/auth.js';
import { hmacSha256, sha256 } from '../shared/wire/sha256.js';

describe('token proof', () => {
  it('the plain SHA-256 and HMAC match Node\'s crypto on random messages and keys of every length', () => {
    for (let n = 0; n < 300; n++) {
      const msg = randomBytes(n * 3);
      const key = randomBytes(n % 97);
      expect(Buffer.from(sha256(msg)).toString('hex')).toBe(createHash('sha256').update(msg).digest('hex'));
      expect(Buffer.from(hmacSha256(key, msg)).toString('hex')).toBe(createHmac('sha256', key).update(msg).digest('hex'));
    }
  });

  it('proves and checks a token over a nonce; a wrong token or a tampered proof fails', async () => {
    const nonce = randomBytes(32);
    const proof = await proveToken('secret', nonce);
    expect(Buffer.from(proof).toString('hex')).toBe(createHmac('sha256', 'secret').update(nonce).digest('hex'));
    expect(await checkProof('secret', nonce, proof)).toBe(true);
    expect(await checkProof('other', nonce, proof)).toBe(false);
    expect(await checkProof('secret', nonce, proof.map((b, i) => (i === 5 ? b ^ 1 : b)))).toBe(false);
    expect(await checkProof('secret', nonce, undefined)).toBe(false);
    expect(await checkProof('secret', nonce, proof.subarray(0, 31))).toBe(false);
  });

  it('an admission ticket names its nonce for the token it was made with, within TICKET_MS of its moment, and for nothing else', async () => {
    const now = Date.now();
    const ticket = await admissionTicket('secret', now);
    const nonce = await ticketNonce('secret', ticket, now + 1000);
    expect(nonce).toMatch(/^[0-9a-f]{32}$/);
    expect(await admissionTicket('secret', now)).not.toBe(ticket);
    expect(await ticketNonce('other', ticket, now)).toBeNull();
    expect(await ticketNonce('secret', ticket, now + TICKET_MS + 1)).toBeNull();
    expect(await ticketNonce('secret', ticket, now - TICKET_MS - 1)).toBeNull();
    // Another moment or nonce under the same proof, or a proof cut short, is not a ticket.
    const [at, n, proof] = ticket.split('.') as [string, string, string];
    expect(await ticketNonce('secret', `${Number(at) + 1}.${n}.${proof}`, now)).toBeNull();
    expect(await ticketNonce('secret', `${at}.${n.replace(/^./, n[0] === '0' ? '1' : '0')}.${proof}`, now)).toBeNull();
    expect(await ticketNonce('secret', `${at}.${n}.${proof.slice(2)}`, now)).toBeNull();
    expect(await ticketNonce('secret', 'garbage', now)).toBeNull();
  });

  it('a worker dials with a ticket in its query when it has a token, and the URL unchanged without one', async () => {
    const url = await withTicket('ws://10.0.0.1:7000/path?x=1', 'secret');
    const u = new URL(url);
    expect(u.host).toBe('10.0.0.1:7000');
    expect(u.pathname).toBe('/path');
    expect(u.searchParams.get('x')).toBe('1');
    expect(await ticketNonce('secret', u.searchParams.get(TICKET_PARAM)!)).not.toBeNull();
    expect(await withTicket('ws://10.0.0.1:7000', undefined)).toBe('ws://10.0.0.1:7000');
  });
});
