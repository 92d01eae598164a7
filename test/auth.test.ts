/** The token proof: WebCrypto where it exists, the plain SHA-256 where a browser hides it; the same bytes. */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkProof, proveToken } from '../shared/wire/auth.js';
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
});
