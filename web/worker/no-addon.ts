/**
 * What shared/backend/addon.ts is in the browser bundle (scripts/build-web.mjs swaps it in): no
 * native addon, so the fold and the 16-bit conversions run their JavaScript loops, which give the
 * same bits.
 */
export type NativeMath = never;

export function nativeMath(): null {
  return null;
}
