/**
 * Writes a non-negative safe integer as a little-endian u64 at `at` of `buf`, as two 32-bit halves:
 * `writeBigUInt64LE` would need a BigInt per value, and the image writer writes one per inode and
 * per directory entry.
 */
export function writeSafeUInt64LE(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32LE(value % 0x100000000, at);
  buf.writeUInt32LE(Math.floor(value / 0x100000000), at + 4);
}
