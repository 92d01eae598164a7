/**
 * A Node worker's side of the same-host path (shared/wire/same-host.ts): mapping the weights region
 * (read only) and its own gradient slot that the coordinator's Welcome named. Mapping fails on
 * another host (no such file) or as another user (no access): the worker then says why and keeps
 * exchanging tensors in frames.
 */
import { fileMapper } from '../shared/backend/addon.js';
import { GradientSlot, type RegionSizes, WeightsRegion, slotBytes, weightsRegionBytes } from '../shared/wire/same-host.js';

export interface SharedRegions {
  region: WeightsRegion;
  slot: GradientSlot;
}

/** How a worker maps the regions it is offered; absent where it cannot (a browser, no addon). */
export type SameHostMapper = (region: string, slot: string, sizes: RegionSizes) => SharedRegions;

/** The addon's mapper, or undefined when the addon is not built. */
export function nodeSameHost(): SameHostMapper | undefined {
  const map = fileMapper();
  if (!map) return undefined;
  return (regionPath, slotPath, sizes) => {
    const region = new WeightsRegion(map(regionPath, weightsRegionBytes(sizes), 2), sizes);
    if (!region.valid) throw Object.assign(new Error(`${regionPath} is not a weights region`), { code: 'E_REGION' });
    return { region, slot: new GradientSlot(map(slotPath, slotBytes(sizes), 1), sizes) };
  };
}
