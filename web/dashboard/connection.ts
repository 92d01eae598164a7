/**
 * The observer's WebSocket: same origin, path /observe. Handshake: the server's Challenge, our
 * Observe (with HMAC-SHA256(token, nonce) when the run has a token), then Update and Grid frames
 * until the connection ends. We send nothing after Observe.
 *
 * A close with E_AUTH (4003) or E_VERSION (4001) is final: retrying cannot help, so the page says
 * why and stops. E_DONE (the run finished; the coordinator exits) ends the connection quietly. Any
 * other close is "disconnected" and we reconnect with backoff (500 ms doubling to 10 s), unless the
 * page has decided that nothing more will come (a finished-run dashboard).
 */
import { decode, encode, Kind, PROTOCOL_VERSION } from '../../shared/wire/codec.js';
import { ErrorCodes, GanError } from '../../shared/wire/errors.js';
import { answerChallenge } from '../../shared/wire/handshake.js';
import type { ObserverUpdate } from '../../shared/wire/observe.js';

export type ConnState = 'connecting' | 'open' | 'disconnected' | 'closed' | 'ended' | 'refused';

export interface ConnectionHandlers {
  /** A new socket is opening (before its snapshot). */
  onConnecting(): void;
  onUpdate(u: ObserverUpdate): void;
  onGrid(run: number, name: string, png: Uint8Array): void;
  onState(state: ConnState, detail: string): void;
  /** Retrying cannot help (wrong token, other protocol version): say why, stop. */
  onFatal(message: string): void;
  /** Whether to reconnect after a close that is not fatal. */
  shouldReconnect(): boolean;
}

const { E_AUTH, E_VERSION, E_DONE } = ErrorCodes;

/** The token from the URL fragment: http://HOST:PORT/#token=SECRET (never sent to the server). */
export function tokenFromHash(hash: string = location.hash): string | null {
  const params = new URLSearchParams(hash.replace(/^#/, ''));
  const t = params.get('token');
  return t ? t : null;
}

export function observeUrl(loc: Location = location): string {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/observe`;
}

export class Connection {
  private ws: WebSocket | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private backoffMs = 500;
  private stopped = false;
  /** The current socket has delivered a snapshot (a later close resets the backoff). */
  private gotSnapshot = false;

  constructor(private readonly h: ConnectionHandlers, private readonly url = observeUrl()) {}

  start(): void {
    this.stopped = false;
    this.open();
  }

  /** Close for good (no reconnect). */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'page closed');
  }

  /** Drop the current socket, if any, and connect again now (a new token was entered). */
  restart(): void {
    this.stop();
    this.backoffMs = 500;
    this.start();
  }

  private open(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.gotSnapshot = false;
    this.h.onConnecting();
    this.h.onState('connecting', '');
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.h.onFatal(`cannot open ${this.url}: ${(e as Error).message}`);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let greeted = false;
    let fatal = false;

    const fail = (message: string, reason: string) => {
      fatal = true;
      this.h.onFatal(message);
      this.h.onState('refused', reason);
      ws.close(1000, reason);
    };

    ws.onmessage = (ev: MessageEvent) => {
      if (this.ws !== ws || !(ev.data instanceof ArrayBuffer)) return;
      let msg;
      try {
        msg = decode(new Uint8Array(ev.data));
      } catch (e) {
        console.warn('observer: bad frame', e);
        return;
      }
      if (!greeted) {
        greeted = true;
        const challenge = msg;
        void (async () => {
          let proof: Uint8Array | undefined;
          try {
            ({ proof } = await answerChallenge(challenge, { token: tokenFromHash() }));
          } catch (e) {
            const code = e instanceof GanError ? e.code : 'E_AUTH';
            if (code === 'E_VERSION') fail(`E_VERSION: the server speaks protocol ${challenge.k === Kind.Challenge ? challenge.v : '?'}, this page ${PROTOCOL_VERSION}; reload the page`, 'E_VERSION');
            else if (code === 'E_UNEXPECTED') ws.close(1000, 'expected a challenge');
            else if (!tokenFromHash()) fail('E_AUTH: this run needs its token: open the page as …/#token=YOUR_TOKEN', 'E_AUTH: no token');
            else fail(`E_AUTH: could not compute the token proof (${(e as Error).message})`, 'E_AUTH: no proof');
            return;
          }
          if (this.ws === ws && ws.readyState === WebSocket.OPEN) ws.send(encode({ k: Kind.Observe, v: PROTOCOL_VERSION, proof }));
        })();
        return;
      }
      if (msg.k === Kind.Update) {
        let update: ObserverUpdate;
        try {
          update = JSON.parse(new TextDecoder().decode(msg.body)) as ObserverUpdate;
        } catch (e) {
          console.warn('observer: update is not JSON', e);
          return;
        }
        if (update.type === 'snapshot') {
          this.gotSnapshot = true;
          this.h.onState('open', '');
        }
        this.h.onUpdate(update);
      } else if (msg.k === Kind.Grid) {
        this.h.onGrid(msg.run, msg.name, msg.png);
      }
    };

    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (fatal) return;
      const why = `${ev.code}${ev.reason ? ` ${ev.reason}` : ''}`;
      if (ev.code === E_AUTH || ev.reason.startsWith('E_AUTH')) {
        const said = ev.reason.startsWith('E_AUTH') ? ev.reason : 'E_AUTH: the token was refused (wrong or missing)';
        this.h.onFatal(`${said}; open the page as …/#token=YOUR_TOKEN`);
        this.h.onState('refused', why);
        return;
      }
      if (ev.code === E_VERSION) {
        this.h.onFatal(`${ev.reason || 'E_VERSION'}: this page and the server speak different protocol versions; reload the page`);
        this.h.onState('refused', why);
        return;
      }
      // The run is over (the coordinator closes observers with "E_DONE: run finished" and exits).
      if (ev.code === E_DONE || ev.reason.startsWith('E_DONE')) {
        this.h.onState('ended', why);
        return;
      }
      if (this.stopped || !this.h.shouldReconnect()) {
        this.h.onState('closed', why);
        return;
      }
      if (this.gotSnapshot) this.backoffMs = 500;
      const wait = this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, 10_000);
      this.h.onState('disconnected', `${why}; reconnecting in ${Math.round(wait / 100) / 10} s`);
      this.timer = setTimeout(() => this.open(), wait);
    };
  }
}
