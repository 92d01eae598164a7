/** Minimal PNG writer (8-bit grayscale) and the sample-grid layout used for every image we write. */
import { deflateSync } from 'node:zlib';
import { unitToByte } from './pixels.js';

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** Encode a width x height 8-bit grayscale image. */
export function encodePng(width: number, height: number, pixels: Uint8Array): Buffer {
  if (pixels.length !== width * height) throw new Error(`png: ${pixels.length} pixels for ${width}x${height}`);
  const raw = Buffer.alloc((width + 1) * height);
  for (let y = 0; y < height; y++) raw.set(pixels.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // grayscale
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', new Uint8Array(0)),
  ]);
}

/**
 * Lay out n images of side x side pixels (values in [-1, 1], as G outputs) in a grid with `cols`
 * columns and a 2-pixel dark border, and encode it as PNG.
 */
export function gridPng(images: Float32Array, n: number, cols: number, side = 28): Buffer {
  const rows = Math.ceil(n / cols);
  const pad = 2;
  const W = cols * (side + pad) + pad;
  const H = rows * (side + pad) + pad;
  const px = new Uint8Array(W * H);
  for (let i = 0; i < n; i++) {
    const ox = pad + (i % cols) * (side + pad);
    const oy = pad + Math.floor(i / cols) * (side + pad);
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) {
        const v = images[i * side * side + y * side + x]!;
        px[(oy + y) * W + ox + x] = unitToByte(v);
      }
    }
  }
  return encodePng(W, H, px);
}
