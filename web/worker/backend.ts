/**
 * The best TensorFlow.js backend this browser has: WebGPU on a hardware adapter, else WebGL on a
 * hardware GPU, else WebAssembly with SIMD, threads when the page is cross-origin isolated (the
 * coordinator serves it so), and every matrix product on XNNPACK (shared/backend/wasm-kernels.ts).
 * A software GPU (SwiftShader, llvmpipe) is passed over: wasm is faster than it.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-webgl';
import '@tensorflow/tfjs-backend-webgpu';
import { setThreadsCount, setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { registerWasmFastMatMul } from '../../shared/backend/wasm-kernels.js';

export type BrowserBackend = 'webgpu' | 'webgl' | 'wasm';

export interface ChosenBackend {
  name: BrowserBackend;
  /** What runs the kernels, for the page and the coordinator's log. */
  detail: string;
  /** Why better ones were passed over. */
  skipped: string[];
}

async function tryWebGpu(): Promise<string> {
  type Adapter = { isFallbackAdapter?: boolean; info?: { vendor?: string; architecture?: string } };
  const gpu = (navigator as unknown as { gpu?: { requestAdapter(): Promise<Adapter | null> } }).gpu;
  if (!gpu) throw new Error('no WebGPU in this browser');
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error('no WebGPU adapter');
  if (adapter.isFallbackAdapter) throw new Error('WebGPU adapter is a software fallback');
  if (!(await tf.setBackend('webgpu'))) throw new Error('WebGPU backend did not initialise');
  return `WebGPU${adapter.info?.vendor ? ` (${adapter.info.vendor}${adapter.info.architecture ? ` ${adapter.info.architecture}` : ''})` : ''}`;
}

function glRenderer(): string | null {
  const gl = document.createElement('canvas').getContext('webgl2');
  if (!gl) return null;
  const ext = gl.getExtension('WEBGL_debug_renderer_info');
  return ext ? String(gl.getParameter(ext.UNMASKED_RENDERER_WEBGL)) : String(gl.getParameter(gl.RENDERER));
}

async function tryWebGl(): Promise<string> {
  const renderer = glRenderer();
  if (!renderer) throw new Error('no WebGL 2');
  if (/swiftshader|llvmpipe|software|basic render/i.test(renderer)) throw new Error(`WebGL runs in software (${renderer})`);
  if (!(await tf.setBackend('webgl'))) throw new Error('WebGL backend did not initialise');
  return `WebGL (${renderer})`;
}

async function tryWasm(): Promise<string> {
  // The .wasm files are served beside this page.
  setWasmPaths(new URL('./', location.href.replace(/[?#].*$/, '').replace(/\/?$/, '/')).href);
  const threads = globalThis.crossOriginIsolated ? Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 8)) : 1;
  setThreadsCount(threads);
  registerWasmFastMatMul('wasm');
  if (!(await tf.setBackend('wasm'))) throw new Error('wasm backend did not initialise');
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  const multi = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
  return `wasm (XNNPACK${simd ? ' SIMD' : ''}, ${multi && threads > 1 ? `${threads} threads` : '1 thread'})`;
}

const TRIES: Record<BrowserBackend, () => Promise<string>> = { webgpu: tryWebGpu, webgl: tryWebGl, wasm: tryWasm };

/** The first backend that works, in order of speed, or exactly `only` when given (?backend=wasm). */
export async function chooseBackend(only?: BrowserBackend): Promise<ChosenBackend> {
  const skipped: string[] = [];
  for (const name of only ? [only] : (['webgpu', 'webgl', 'wasm'] as const)) {
    try {
      const detail = await TRIES[name]();
      await tf.ready();
      return { name, detail, skipped };
    } catch (e) {
      skipped.push(`${name}: ${(e as Error).message}`);
    }
  }
  throw new Error(`no TensorFlow.js backend works in this browser: ${skipped.join('; ')}`);
}
