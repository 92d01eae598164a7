/**
 * The pages the coordinator's HTTP(S) port serves beside the WebSocket: the dashboard (/) and the
 * browser worker (/worker), static files built into dist/web by `npm run build`. They hold no
 * secret: the token stays in the URL fragment, which browsers never send, and the page proves it
 * over the WebSocket like any worker.
 *
 * Every response is cross-origin isolated (COOP/COEP), so a browser worker may use wasm threads,
 * and limited to this origin by its content security policy.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, sep } from 'node:path';
import { packageRoot } from '../../shared/paths.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.json': 'application/json',
};

const HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-cache',
  // wasm-unsafe-eval: the browser worker compiles TensorFlow.js's WebAssembly.
  'Content-Security-Policy': "default-src 'self'; img-src 'self' blob: data:; connect-src 'self' ws: wss:; script-src 'self' blob: 'wasm-unsafe-eval'; worker-src 'self' blob:; style-src 'self' 'unsafe-inline'",
};

/** dist/web, where the build puts the pages. */
export function webRoot(): string {
  return join(packageRoot() ?? process.cwd(), 'dist', 'web');
}

/**
 * The file a path names: / is the dashboard and /NAME one of its files; /worker is the browser
 * worker and /worker/NAME one of its files. Nothing outside dist/web is ever named.
 */
function resolvePath(url: string): string | null {
  const path = decodeURIComponent(url.split(/[?#]/)[0]!);
  if (path === '/' || path === '/index.html') return join('dashboard', 'index.html');
  if (path === '/worker' || path === '/worker/') return join('worker', 'index.html');
  const parts = path.split('/').filter(Boolean);
  if (parts.length === 0 || parts.some((p) => p === '..' || p === '.' || p.includes('\\'))) return null;
  return parts[0] === 'worker' ? join(...parts) : join('dashboard', ...parts);
}

/** Answer a plain HTTP request (not a WebSocket upgrade) with a page or one of its files. */
export function serveWeb(req: IncomingMessage, res: ServerResponse): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { ...HEADERS, Allow: 'GET, HEAD', 'Content-Type': 'text/plain' });
    res.end('method not allowed\n');
    return;
  }
  let rel: string | null;
  try {
    rel = resolvePath(req.url ?? '/');
  } catch {
    rel = null;
  }
  const root = webRoot();
  const file = rel ? join(root, rel) : null;
  if (!file || !file.startsWith(root + sep) || !existsSync(file) || !statSync(file).isFile()) {
    const built = existsSync(join(root, 'dashboard', 'index.html'));
    res.writeHead(404, { ...HEADERS, 'Content-Type': 'text/plain; charset=utf-8' });
    res.end(built ? 'not found\n' : 'the pages are not built: run "npm run build"\n');
    return;
  }
  const body = readFileSync(file);
  res.writeHead(200, { ...HEADERS, 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream', 'Content-Length': body.length });
  res.end(req.method === 'HEAD' ? undefined : body);
}
