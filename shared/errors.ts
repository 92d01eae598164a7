/**
 * One error type for everything that crosses a process boundary. Each has a stable `code` a user
 * can match on, and the WebSocket close status it maps to when it ends a connection.
 */
export const ErrorCodes = {
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
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export class GanError extends Error {
  readonly closeCode: number;
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
    this.name = 'GanError';
    this.closeCode = ErrorCodes[code];
  }
}

/** WebSocket close reasons are limited to 123 bytes. */
export function closeReason(e: { code?: string; message: string }): string {
  const s = `${e.code ? `${e.code}: ` : ''}${e.message}`;
  const b = Buffer.from(s);
  return b.length <= 123 ? s : b.subarray(0, 120).toString().replace(/\uFFFD+$/, '') + '...';
}
