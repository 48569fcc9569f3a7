import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { DeviceSlot } from '../format/index.js';
import { DeviceUnavailableError } from './errors.js';
import { FileSource, type ByteSource } from './source.js';

/** How the reader reaches an extra device. */
export type DeviceBacking =
  /** A separate file (given explicitly or found by its tag). */
  | 'file'
  /** Inside the primary image at block `uniaddr` ("flat" mode: meta and blobs concatenated). */
  | 'flat'
  /** Nowhere: reading its chunks fails with DeviceUnavailableError. */
  | 'unavailable';

/** One device-table slot and where its bytes come from. */
export interface DeviceInfo {
  /** 1-based: the chunk index device id that selects this slot. */
  deviceId: number;
  tag: string;
  blocks: number;
  uniaddr: number;
  backing: DeviceBacking;
  /** The file read for this device (for 'flat', the primary image). */
  path?: string;
  /** Size of that file in bytes ('file' only). */
  fileSizeBytes?: number;
  /** Why the device is unavailable. */
  reason?: string;
}

/**
 * A tag we may use as a file name: the conventional sha256 hex digest (a slot holds 64 bytes, so no
 * "sha256:" prefix fits). Anything with a '/' or only dots could escape the blob directory, and the
 * tag is untrusted.
 */
export function tagFileNames(tag: string): string[] {
  if (!/^[\w.:+=@-]{1,64}$/.test(tag) || /^\.+$/.test(tag)) return [];
  return [tag];
}

async function isRegularFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

export interface ResolvedDevice {
  info: DeviceInfo;
  /** The separate file for 'file' devices. */
  source?: ByteSource;
}

/**
 * Decides, slot by slot, where each extra device's bytes are: the explicit list (device-table order,
 * the count must match like `mount -o device=` requires), else a file named by the tag in one of
 * `blobDirs`, else flat addressing inside the primary image when it is large enough to hold the
 * slot's range, else unavailable. Explicit devices may be paths or already open sources (tests use
 * in-memory ones); either way the image owns and closes them.
 */
export async function resolveDevices(
  imageName: string,
  slots: readonly DeviceSlot[],
  primary: ByteSource,
  blockSizeBytes: number,
  options: { devices?: readonly (string | ByteSource)[]; blobDirs?: readonly string[] },
): Promise<ResolvedDevice[]> {
  const explicit = options.devices;
  if (explicit !== undefined && explicit.length > 0 && explicit.length !== slots.length) {
    throw new DeviceUnavailableError(
      `${explicit.length} device(s) given but the image's device table has ${slots.length} slot(s); pass one per slot, in table order`,
      imageName,
    );
  }
  const opened: ResolvedDevice[] = [];
  try {
    for (const [index, slot] of slots.entries()) {
      const info: DeviceInfo = { deviceId: index + 1, tag: slot.tag, blocks: slot.blocks, uniaddr: slot.uniaddr, backing: 'unavailable' };
      const given = explicit?.[index];
      if (given !== undefined) {
        const source = typeof given === 'string' ? await FileSource.open(given) : given;
        opened.push({ info: { ...info, backing: 'file', path: source.name, fileSizeBytes: source.sizeBytes }, source });
        continue;
      }
      let foundPath: string | undefined;
      for (const dir of options.blobDirs ?? []) {
        for (const name of tagFileNames(slot.tag)) {
          const candidate = join(dir, name);
          if (await isRegularFile(candidate)) {
            foundPath = candidate;
            break;
          }
        }
        if (foundPath !== undefined) break;
      }
      if (foundPath !== undefined) {
        const source = await FileSource.open(foundPath);
        opened.push({ info: { ...info, backing: 'file', path: foundPath, fileSizeBytes: source.sizeBytes }, source });
        continue;
      }
      // Flat mode needs a real range: erofs-utils 1.5 writes all-zero slots, which would alias block 0.
      const flatEndBytes = (slot.uniaddr + slot.blocks) * blockSizeBytes;
      if (slot.blocks > 0 && slot.uniaddr > 0 && flatEndBytes <= primary.sizeBytes) {
        opened.push({ info: { ...info, backing: 'flat', path: primary.name } });
        continue;
      }
      const why: string[] = ['no device file was given'];
      if (slot.tag === '' && slot.blocks === 0) {
        why.push('the slot is empty (no tag, 0 blocks; erofs-utils 1.5 writes such slots), so only an explicit device can serve it');
      } else {
        if (tagFileNames(slot.tag).length === 0) why.push('the tag is not usable as a file name');
        else if ((options.blobDirs ?? []).length > 0) why.push(`no file named by the tag in ${(options.blobDirs ?? []).join(', ')}`);
        why.push(
          slot.blocks > 0 && slot.uniaddr > 0
            ? `the primary image (${primary.sizeBytes} bytes) is too small to hold it flat at block ${slot.uniaddr} (needs ${flatEndBytes} bytes)`
            : 'the slot has no unified address range for flat addressing',
        );
      }
      opened.push({ info: { ...info, reason: why.join('; ') } });
    }
  } catch (err) {
    // Do not leak descriptors of the devices opened before the failure (the image owns them all).
    for (const device of opened) await device.source?.close();
    throw err;
  }
  return opened;
}
