import { DEVICE_SLOT_SIZE_BYTES } from './constants.js';
import { CorruptImageError, FormatLimitError } from './errors.js';

/** One device-table slot (struct erofs_deviceslot), describing extra device `index + 1`. */
export interface DeviceSlot {
  /** Identifier, conventionally the blob's sha256 hex digest (up to 64 bytes, NUL padded). */
  tag: string;
  blocks: number;
  /** First block of this device in the unified address space (meta, then blobs in order). */
  uniaddr: number;
}

const OFF = { tag: 0x00, blocksLo: 0x40, uniaddrLo: 0x44, blocksHi: 0x48, uniaddrHi: 0x4a } as const;
const TAG_SIZE_BYTES = 64;

export function encodeDeviceSlot(slot: DeviceSlot): Buffer {
  const tag = Buffer.from(slot.tag, 'utf8');
  if (tag.length > TAG_SIZE_BYTES) throw new FormatLimitError(`device tag "${slot.tag}" is longer than ${TAG_SIZE_BYTES} bytes`);
  if (slot.blocks > 0xffffffff || slot.uniaddr > 0xffffffff) throw new FormatLimitError('device size needs 48-bit addressing');
  const buf = Buffer.alloc(DEVICE_SLOT_SIZE_BYTES);
  tag.copy(buf, OFF.tag);
  buf.writeUInt32LE(slot.blocks, OFF.blocksLo);
  buf.writeUInt32LE(slot.uniaddr, OFF.uniaddrLo);
  return buf;
}

export function decodeDeviceSlot(bytes: Uint8Array, offsetBytes: number): DeviceSlot {
  if (bytes.length < DEVICE_SLOT_SIZE_BYTES) {
    throw new CorruptImageError('device slot truncated', { structure: 'device slot', offsetBytes });
  }
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, DEVICE_SLOT_SIZE_BYTES);
  const tagBytes = buf.subarray(OFF.tag, OFF.tag + TAG_SIZE_BYTES);
  const nul = tagBytes.indexOf(0);
  return {
    tag: tagBytes.subarray(0, nul < 0 ? TAG_SIZE_BYTES : nul).toString('utf8'),
    blocks: buf.readUInt32LE(OFF.blocksLo),
    uniaddr: buf.readUInt32LE(OFF.uniaddrLo),
  };
}
