/**
 * The one pixel scale: images are bytes 0..255 on disk and on the wire, and floats in [-1, 1]
 * inside the models (G ends in tanh). Every conversion goes through these two functions.
 */

/** A byte 0..255 as the model sees it, in [-1, 1]. */
export function byteToUnit(b: number): number {
  return b / 127.5 - 1;
}

/** A model value in [-1, 1] (clamped) as a byte 0..255. */
export function unitToByte(v: number): number {
  return Math.max(0, Math.min(255, Math.round((v + 1) * 127.5)));
}

/** Copy `count` bytes from src[srcOff..] into dst[dstOff..] scaled to [-1, 1]. */
export function bytesToUnit(src: Uint8Array, srcOff: number, dst: Float32Array, dstOff: number, count: number): void {
  for (let k = 0; k < count; k++) dst[dstOff + k] = byteToUnit(src[srcOff + k]!);
}
