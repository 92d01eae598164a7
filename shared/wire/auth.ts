/**
 * The token proof, with WebCrypto so that Node and browser workers share it: a peer proves it
 * knows the token by answering HMAC-SHA256(token, nonce) over a fresh random nonce; the token itself
 * never crosses the wire. Where a browser hides WebCrypto (plain http beyond localhost) the same
 * HMAC comes from sha256.ts.
 */
import { hmacSha256 } from './sha256.js';

const keys = new Map<string, Promise<CryptoKey>>();

function keyOf(token: string): Promise<CryptoKey> {
  let k = keys.get(token);
  if (!k) {
    k = crypto.subtle.importKey('raw', new TextEncoder().encode(token), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    keys.set(token, k);
  }
  return k;
}

/** HMAC-SHA256(token, nonce). */
export async function proveToken(token: string, nonce: Uint8Array): Promise<Uint8Array> {
  if (!globalThis.crypto?.subtle) return hmacSha256(new TextEncoder().encode(token), nonce);
  return new Uint8Array(await crypto.subtle.sign('HMAC', await keyOf(token), nonce as Uint8Array<ArrayBuffer>));
}

/** Whether `proof` is HMAC-SHA256(token, nonce), compared in constant time. */
export async function checkProof(token: string, nonce: Uint8Array, proof: Uint8Array | undefined): Promise<boolean> {
  const want = await proveToken(token, nonce);
  if (!proof || proof.length !== want.length) return false;
  let diff = 0;
  for (let i = 0; i < want.length; i++) diff |= want[i]! ^ proof[i]!;
  return diff === 0;
}

/** A fresh random nonce. */
export function randomNonce(bytes = 32): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(bytes));
}
