/**
 * Every error code the program prints or sends, in one registry, and the one error type that
 * carries them. A code is stable: users and scripts match on it, never on message text. Codes
 * that can end a WebSocket connection carry the close status they map to; the others end a
 * process (one line on stderr, non-zero exit) and close a connection, if ever, with 4000.
 */
export const ErrorCodes = {
  // ---- Wire protocol: sent as the close status and the "CODE: message" close reason.
  /** A frame that is not valid msgpack or not a message of this protocol. */
  E_MALFORMED: 1007,
  /** A message kind this side does not know or does not accept in this state. */
  E_UNEXPECTED: 1008,
  /** A frame larger than the limit. */
  E_TOO_BIG: 1009,
  /** Protocol version differs. */
  E_VERSION: 4001,
  /** Model signature differs. */
  E_MODEL: 4002,
  /** Missing or wrong token proof. */
  E_AUTH: 4003,
  /** Payload size or shape does not match the model. */
  E_SHAPE: 4004,
  /** NaN or Inf in a gradient. */
  E_NONFINITE: 4005,
  /** Gradient for a round/phase that is not open, or sent twice. */
  E_STALE: 4006,
  /** The coordinator is full (already has --workers). */
  E_FULL: 4007,
  /** No answer within --round-timeout, or no pong. */
  E_TIMEOUT: 4008,
  /** The run ended normally. */
  E_DONE: 4009,
  /** The worker's compute failed. */
  E_COMPUTE: 4010,
  /** A gradient out of bounds: beyond the overflow limit, or far larger than its peers'. */
  E_BOUNDS: 4011,
  /** Dropped for timeouts too often: come back later (the wait grows with each drop). */
  E_BACKOFF: 4012,

  // ---- Process level: printed as "PROGRAM: error [CODE]: message".
  /** A wrong or inconsistent command-line flag. */
  E_ARGS: 4000,
  /** MNIST files missing, unreadable or corrupt. */
  E_DATA: 4000,
  /** A checkpoint missing, corrupt, or from another model or seed. */
  E_CHECKPOINT: 4000,
  /** The run directory already holds a run (and --resume was not given). */
  E_EXISTS: 4000,
  /** The listen port is taken. */
  E_PORT: 4000,
  /** Listening failed for another reason. */
  E_LISTEN: 4000,
  /** Listening beyond loopback without a token or --insecure. */
  E_INSECURE: 4000,
  /** Fewer than --min-workers workers for longer than --round-timeout. */
  E_WORKERS: 4000,
  /** A worker could not reach (or lost for good) its coordinator. */
  E_CONNECT: 4000,
  /** A TLS certificate or key could not be read or was not trusted. */
  E_TLS: 4000,
  /** The requested compute backend cannot run here. */
  E_BACKEND: 4000,
  /** The native addon was called with arguments it refuses. */
  E_NATIVE: 4000,
  /** An MNIST download failed or did not match its checksum. */
  E_DOWNLOAD: 4000,
  /** The run directory's disk is full (or the quota reached). */
  E_DISK: 4000,
  /** A bug: something the program did not expect. */
  E_INTERNAL: 4000,
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === 'string' && Object.hasOwn(ErrorCodes, s);
}

/** The program's one error type: a stable code, a message, and the close status it maps to. */
export class GanError extends Error {
  readonly closeCode: number;
  /** How long the other side should wait before trying again (E_BACKOFF), sent as a field of Refused. */
  readonly retryAfterMs?: number;
  constructor(readonly code: ErrorCode, message: string, options?: { cause?: unknown; retryAfterMs?: number }) {
    super(message, options);
    this.name = 'GanError';
    this.closeCode = ErrorCodes[code];
    if (options?.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
  }
}

/** Anything thrown, as a GanError: one of ours passes through, anything else becomes `fallback` with its message. */
export function asGanError(e: unknown, fallback: ErrorCode): GanError {
  return e instanceof GanError ? e : new GanError(fallback, e instanceof Error ? e.message : String(e), { cause: e });
}

/** WebSocket close reasons are limited to 123 bytes. */
export function closeReason(e: { code?: string; message: string }): string {
  const s = `${e.code ? `${e.code}: ` : ''}${e.message}`;
  const b = new TextEncoder().encode(s);
  if (b.length <= 123) return s;
  return new TextDecoder().decode(b.subarray(0, 120)).replace(/\uFFFD+$/, '') + '...';
}
