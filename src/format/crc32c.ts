/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78) without the final inversion, as EROFS uses
 * for its superblock checksum. Hand-written because it runs over at most one block per image; a
 * native dependency would buy nothing here.
 */
const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
    table[byte] = crc >>> 0;
  }
  return table;
})();

/** Raw CRC32C register update: no final XOR. `crc32cRaw(0xffffffff, data) ^ 0xffffffff` is the standard CRC. */
export function crc32cRaw(seed: number, data: Uint8Array): number {
  let crc = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    crc = (TABLE[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8)) >>> 0;
  }
  return crc >>> 0;
}
