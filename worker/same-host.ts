/**
 * A Node worker's side of the same-host path (shared/wire/same-host.ts): mapping the weights region
 * (read only) and its own gradient slot that the coordinator's Welcome named, through the addon's
 * files, or, in a worker thread the coordinator started, through the coordinator's thread
 * (shared/wire/thread-regions.ts). Mapping fails on another host (no such file) or as another user
 * (no access): the worker then says why and keeps exchanging tensors in frames.
 */
import { type MessagePort, isMainThread, workerData } from 'node:worker_threads';
import { fileMapper } from '../shared/backend/addon.js';
import { GradientSlot, type RegionSizes, WeightsRegion, slotBytes, weightsRegionBytes } from '../shared/wire/same-host.js';
import { type RegionMapper, type WorkerThreadData, isThreadRegion, threadMapper } from '../shared/wire/thread-regions.js';


export interface SharedRegions {
  region: WeightsRegion;
  slot: GradientSlot;
}

/** How a worker maps the regions it is offered; absent where it cannot (a browser, no addon). */
export type SameHostMapper = (region: string, slot: string, sizes: RegionSizes) => SharedRegions;

/** This thread's regions port, when the coordinator started it as a worker thread. */
function regionsPort(): MessagePort | null {
  const port = isMainThread ? null : (workerData as Partial<WorkerThreadData> | null)?.regions;
  return port && typeof port.postMessage === 'function' ? port : null;
}

/** The addon's mapper and, in a coordinator's worker thread, the thread's; undefined when neither is here. */
export function nodeSameHost(): SameHostMapper | undefined {
  const files = fileMapper();
  const port = regionsPort();
  const thread = port ? threadMapper(port) : null;
  if (!files && !thread) return undefined;
  const map: RegionMapper = (path, bytes, mode) => {
    const m = isThreadRegion(path) ? thread : files;
    if (!m) throw Object.assign(new Error(`${path}: ${isThreadRegion(path) ? "a coordinator's thread region, and this worker is not its thread" : 'the native addon, which maps files, is not built'}`), { code: 'ENOENT' });
    return m(path, bytes, mode);
  };
  return (regionPath, slotPath, sizes) => {
    const region = new WeightsRegion(map(regionPath, weightsRegionBytes(sizes), 2), sizes);
    if (!region.valid) throw Object.assign(new Error(`${regionPath} is not a weights region`), { code: 'E_REGION' });
    return { region, slot: new GradientSlot(map(slotPath, slotBytes(sizes), 1), sizes) };
  };
}
