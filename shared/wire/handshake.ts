/**
 * The one handshake every connection opens with: coordinator and worker, coordinator and
 * dashboard page, and the two ends of a peer link. The side that is dialed challenges, the side
 * that dials answers.
 *
 *   challenger -> Challenge { v, nonce, auth, model }
 *   answerer   -> Hello | Observe | PeerHello { v, [signature], proof = HMAC-SHA256(token, nonce) }
 *   (peer links only: the dialer sends a nonce of its own, answered by PeerWelcome's proof)
 *
 * Invariants:
 * - A connection that has not answered within HANDSHAKE_TIMEOUT_MS is refused with E_TIMEOUT.
 * - The answer is checked in one order, each failure with its code: the kind expected
 *   (E_UNEXPECTED), the protocol version (E_VERSION), the model signature (E_MODEL), the token
 *   proof compared in constant time (E_AUTH). The token itself never crosses the wire.
 * - A refusal is one path: a Refused frame naming the code, the reason and, where waiting helps,
 *   how long to wait (a field, never prose); then a close with the code's status; a peer that
 *   ignores the close is cut off CLOSE_GRACE_MS later.
 *
 * Runs in Node and in a browser (WebCrypto, or the plain SHA-256 where a page has none).
 */
import type { ModelConfig, ModelKind } from '../compute/model.js';
import { checkProof, proveToken, randomNonce } from './auth.js';
import { encode } from './codec.js';
import { GanError, closeReason, isErrorCode } from './errors.js';
import { type ChallengeMsg, Kind, type Message, type ObserveMsg, PROTOCOL_VERSION, type PeerHelloMsg, type HelloMsg, type RefusedMsg } from './protocol.js';

/** How long the answering side has to answer the Challenge (and a dialer to finish a peer handshake). */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** A peer that does not close its side after a refusal's close frame is cut off after this long. */
export const CLOSE_GRACE_MS = 2000;

/** What a refusal needs of a connection: `ws` on Node, a Link, or a browser WebSocket (which cannot terminate). */
export interface Refusable {
  send(frame: Uint8Array): void;
  close(code: number, reason: string): void;
  terminate?(): void;
}

/** Close a connection; a peer that ignores the close is cut off CLOSE_GRACE_MS later. */
export function closeLink(link: Refusable, code: number, reason: string): void {
  try {
    link.close(code, reason);
  } catch {
    link.terminate?.();
  }
  if (link.terminate) setTimeout(() => link.terminate!(), CLOSE_GRACE_MS).unref?.();
}

/** Refuse a connection: a Refused frame with the error's code, reason and wait, then the close. */
export function refuse(link: Refusable, e: GanError): void {
  const msg: RefusedMsg = { k: Kind.Refused, code: e.code, reason: e.message.slice(0, 1000), retryAfterMs: e.retryAfterMs };
  try {
    link.send(encode(msg));
  } catch {
    // A socket that cannot take the frame gets the close alone.
  }
  closeLink(link, e.closeCode, closeReason(e));
}

/** What the other side's Refused frame says, as the error it stands for. */
export function refusedError(m: RefusedMsg): GanError {
  return new GanError(isErrorCode(m.code) ? m.code : 'E_CONNECT', m.reason, { retryAfterMs: m.retryAfterMs });
}

/** The answers a challenger may expect, by kind. */
type Answer = { [Kind.Hello]: HelloMsg; [Kind.Observe]: ObserveMsg; [Kind.PeerHello]: PeerHelloMsg };

/**
 * The challenging side of one connection: its nonce, the Challenge to send, and the check of the
 * answer. `signature` is the model signature an answer must carry (observers carry none).
 */
export class Challenger {
  readonly nonce = randomNonce();
  constructor(private readonly o: { token?: string; model: ModelConfig }) {}

  get challenge(): ChallengeMsg {
    return { k: Kind.Challenge, v: PROTOCOL_VERSION, nonce: this.nonce, auth: !!this.o.token, model: this.o.model };
  }

  /** Check an answer; resolves to it, or throws the GanError that refuses the connection. */
  async verify<K extends keyof Answer>(m: Message, expect: K, signature?: string): Promise<Answer[K]> {
    if (m.k !== expect) throw new GanError('E_UNEXPECTED', `expected ${Kind[expect]}, got ${Kind[m.k] ?? m.k}`);
    const a = m as Answer[K];
    if (a.v !== PROTOCOL_VERSION) throw new GanError('E_VERSION', `protocol version ${a.v}, this side speaks ${PROTOCOL_VERSION}`);
    if (signature !== undefined && (a as { signature?: string }).signature !== signature) {
      throw new GanError('E_MODEL', `model signature differs from this side's (${this.o.model.kind})`);
    }
    await verifyProof(this.o.token, this.nonce, a.proof, 'token proof missing or wrong');
    return a;
  }
}

/** When the run has a token: `proof` must be HMAC-SHA256(token, nonce), else E_AUTH with `what`. */
export async function verifyProof(token: string | undefined, nonce: Uint8Array, proof: Uint8Array | undefined, what: string): Promise<void> {
  if (token && !(await checkProof(token, nonce, proof))) throw new GanError('E_AUTH', what);
}

/**
 * The answering side: check a Challenge (its kind, version, the model kind when one is expected,
 * that a token is at hand when one is asked for) and prove the token over its nonce. Throws
 * E_UNEXPECTED, E_VERSION, E_MODEL or E_AUTH; `tokenHint` says where a missing token comes from.
 */
export async function answerChallenge(
  m: Message,
  o: { token?: string | null; expectKind?: ModelKind; tokenHint?: string },
): Promise<{ challenge: ChallengeMsg; proof?: Uint8Array }> {
  if (m.k !== Kind.Challenge) throw new GanError('E_UNEXPECTED', `expected a Challenge first, got ${Kind[m.k] ?? m.k}`);
  if (m.v !== PROTOCOL_VERSION) throw new GanError('E_VERSION', `the other side speaks protocol ${m.v}, this one ${PROTOCOL_VERSION}`);
  if (o.expectKind && m.model.kind !== o.expectKind) throw new GanError('E_MODEL', `the coordinator trains ${m.model.kind}, this side was started for ${o.expectKind}`);
  if (!m.auth) return { challenge: m };
  if (!o.token) throw new GanError('E_AUTH', `this run requires its token${o.tokenHint ? ` (${o.tokenHint})` : ''}`);
  return { challenge: m, proof: await proveToken(o.token, m.nonce) };
}

/**
 * A deadline for a handshake: `onExpire` is told E_TIMEOUT after HANDSHAKE_TIMEOUT_MS unless
 * cleared. `what` names what did not arrive.
 */
export function handshakeDeadline(what: string, onExpire: (e: GanError) => void, ms = HANDSHAKE_TIMEOUT_MS): { clear(): void } {
  const t = setTimeout(() => onExpire(new GanError('E_TIMEOUT', `no ${what} within ${Math.round(ms / 1000)} s`)), ms);
  (t as { unref?: () => void }).unref?.();
  return { clear: () => clearTimeout(t) };
}
