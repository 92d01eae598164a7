/** An MNIST digit as the project stores it: 28 x 28 grey levels, one byte each, row by row. */
export const DIGIT_SIDE = 28;
export const DIGIT_PIXELS = DIGIT_SIDE * DIGIT_SIDE;

/** The bytes of digit `i` of a set whose images are stored back to back. */
export function digitBytes(images: Uint8Array, i: number): Uint8Array {
  return images.subarray(i * DIGIT_PIXELS, (i + 1) * DIGIT_PIXELS);
}
