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

/**
 * Admission tickets: a proof of the token that a worker puts in the URL it dials (`?admit=...`),
 * so a listener flooded by strangers, even from the worker's own address, can tell it apart from
 * them by its request alone, before the handshake (shared/wire/admission.ts). The ticket binds a
 * moment and a fresh nonce; the listener takes each nonce once and only within TICKET_MS of its
 * moment, so a ticket seen on the wire is worth nothing later. It opens nothing by itself: the
 * connection still answers the handshake's challenge.
 */
export const TICKET_PARAM = 'admit';
export const TICKET_MS = 10 * 60_000;

const ticketBytes = (at: number, nonce: string) => new TextEncoder().encode(`gan-ddp admission ${at} ${nonce}`);
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

/** A fresh ticket for `token`. */
export async function admissionTicket(token: string, now = Date.now()): Promise<string> {
  const nonce = hex(randomNonce(16));
  return `${now}.${nonce}.${hex(await proveToken(token, ticketBytes(now, nonce)))}`;
}

/** `url` with a fresh ticket for `token` in its query (unchanged without a token). */
export async function withTicket(url: string, token: string | undefined): Promise<string> {
  if (!token) return url;
  const u = new URL(url);
  u.searchParams.set(TICKET_PARAM, await admissionTicket(token));
  return u.toString();
}

/** The nonce of a ticket for `token` whose moment is within TICKET_MS of `now`, or null. */
export async function ticketNonce(token: string, ticket: string, now = Date.now()): Promise<string | null> {
  const m = /^(\d{1,15})\.([0-9a-f]{32})\.([0-9a-f]{64})$/.exec(ticket);
  if (!m) return null;
  const at = Number(m[1]);
  if (Math.abs(now - at) > TICKET_MS) return null;
  const proof = Uint8Array.from(m[3]!.match(/../g)!, (x) => parseInt(x, 16));
  return (await checkProof(token, ticketBytes(at, m[2]!), proof)) ? m[2]! : null;
}
