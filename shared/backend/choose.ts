/**
 * Choosing the TensorFlow.js backend. tfjs-node (native TensorFlow) would be the fastest but needs
 * a prebuilt libtensorflow that often cannot be installed; `native` (this project's addon, see
 * native-kernels.ts) needs only a C compiler at install; wasm and cpu run everywhere.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import { GanError } from '../wire/errors.js';
import { loadAddon, nativeDetail, nativeThreadsSet, setNativeThreads } from './addon.js';
import { registerNativeBackend } from './native-kernels.js';
import { registerWasmFastMatMul } from './wasm-kernels.js';

export type BackendName = 'auto' | 'tensorflow' | 'native' | 'wasm' | 'cpu';
export const BACKEND_NAMES: readonly BackendName[] = ['auto', 'tensorflow', 'native', 'wasm', 'cpu'];

export interface BackendInfo {
  name: Exclude<BackendName, 'auto'>;
  /** What runs the kernels, e.g. 'built-in GEMM (AVX-512, 14x32), 1 thread'. */
  detail: string;
}

export interface InitOptions {
  /**
   * Compute threads (the addon's matrix products for `native`). Worker processes sharing a host
   * want 1 each, which is the default unless OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS) says otherwise.
   */
  threads?: number;
  /** Where the one-line fallback notice goes; stderr by default. */
  log?: (line: string) => void;
}

let last: { requested: BackendName; info: BackendInfo } | null = null;

function fail(msg: string): never {
  throw new GanError('E_BACKEND', msg);
}

async function initTensorflow(): Promise<BackendInfo> {
  const spec = '@tensorflow/tfjs-node';
  try {
    await import(spec);
  } catch (e) {
    const code = (e as { code?: string }).code;
    fail(code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND' ? 'tfjs-node not installed' : `tfjs-node failed to load: ${(e as Error).message.split('\n')[0]}`);
  }
  // The engine logs a warning itself when a factory throws; a false return is enough here.
  if (!(await tf.setBackend('tensorflow'))) fail('tfjs-node is installed but its backend did not initialise');
  return { name: 'tensorflow', detail: 'libtensorflow via tfjs-node' };
}

async function initNative(threads: number | undefined): Promise<BackendInfo> {
  const s = loadAddon();
  if (!('addon' in s)) fail(s.error);
  // Matrix libraries would otherwise start one spinning thread per core in every process, and this
  // program usually runs several worker processes per host: one thread unless told otherwise.
  const fromEnv = process.env.OPENBLAS_NUM_THREADS ?? process.env.OMP_NUM_THREADS;
  if (threads !== undefined) setNativeThreads(threads);
  else if (!fromEnv && !nativeThreadsSet()) setNativeThreads(1);
  registerNativeBackend(s.addon);
  if (!(await tf.setBackend('native'))) fail('the native backend did not initialise (wasm module failed to load)');
  return { name: 'native', detail: nativeDetail(s.addon) };
}

async function initWasm(): Promise<BackendInfo> {
  // XNNPACK for every matrix product, transposed or not (wasm-kernels.ts): about 10x on training.
  registerWasmFastMatMul('wasm');
  if (!(await tf.setBackend('wasm'))) fail('the wasm backend did not initialise (could not load its .wasm file)');
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  return { name: 'wasm', detail: `XNNPACK${simd ? ' SIMD' : ''}, 1 thread` };
}

async function initCpu(): Promise<BackendInfo> {
  if (!(await tf.setBackend('cpu'))) fail('the cpu backend did not initialise');
  return { name: 'cpu', detail: 'plain JavaScript' };
}

async function initOne(name: Exclude<BackendName, 'auto'>, threads: number | undefined): Promise<BackendInfo> {
  switch (name) {
    case 'tensorflow':
      return initTensorflow();
    case 'native':
      return initNative(threads);
    case 'wasm':
      return initWasm();
    case 'cpu':
      return initCpu();
  }
}

const WHAT: Record<Exclude<BackendName, 'auto'>, string> = {
  tensorflow: 'tensorflow (libtensorflow)',
  native: 'native (C kernels on the wasm heap)',
  wasm: 'wasm',
  cpu: 'cpu (plain JavaScript)',
};

/**
 * Make `requested` the active tfjs backend. 'auto' takes the first that works of tensorflow,
 * native, wasm, cpu and, when that is not tensorflow, logs one line naming it and why the better
 * ones were passed over. An explicit name that cannot be used throws E_BACKEND.
 */
export async function initBackend(requested: BackendName, opts: InitOptions = {}): Promise<BackendInfo> {
  if (!BACKEND_NAMES.includes(requested)) fail(`unknown backend '${String(requested)}' (expected one of ${BACKEND_NAMES.join(', ')})`);
  if (opts.threads !== undefined && (!Number.isInteger(opts.threads) || opts.threads < 1)) {
    fail(`threads must be a positive integer, got ${opts.threads}`);
  }
  if (last && last.requested === requested && tf.getBackend() === last.info.name) {
    if (last.info.name === 'native' && opts.threads !== undefined) {
      setNativeThreads(opts.threads);
      const s = loadAddon();
      if ('addon' in s) last.info = { name: 'native', detail: nativeDetail(s.addon) };
    }
    return last.info;
  }
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  let info: BackendInfo;
  if (requested === 'auto') {
    const reasons: string[] = [];
    let found: BackendInfo | null = null;
    for (const name of ['tensorflow', 'native', 'wasm', 'cpu'] as const) {
      try {
        found = await initOne(name, opts.threads);
        break;
      } catch (e) {
        reasons.push(e instanceof GanError ? e.message : `${name}: ${(e as Error).message}`);
      }
    }
    if (!found) fail(`no TensorFlow.js backend could be initialised: ${reasons.join('; ')}`);
    if (found.name !== 'tensorflow') log(`backend: ${WHAT[found.name]}; ${reasons.join('; ')}`);
    info = found;
  } else {
    info = await initOne(requested, opts.threads);
  }
  last = { requested, info };
  return info;
}
