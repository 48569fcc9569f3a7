import type * as isal from '@mkfs-erofs-ts/isal-gunzip';
import { InvalidSettingError } from './errors.js';
import { optionalAddon } from '../util/addon.js';

export type IsalGunzip = typeof isal;

/** Which library inflates gzip layers. */
export type GunzipDecoder = 'isal' | 'zlib';

/** Set to `zlib` to inflate gzip layers with Node's zlib even where the ISA-L addon is built. */
export const GUNZIP_ENV = 'MKFS_EROFS_TS_GUNZIP';

/**
 * The ISA-L addon (native/isal-gunzip), or null when it is not built (it needs Debian's
 * libisal-dev, which scripts/setup.sh installs).
 */
export const isalGunzip = optionalAddon<IsalGunzip>('@mkfs-erofs-ts/isal-gunzip');

/**
 * The decoder gzip layers go through: ISA-L's igzip when its addon is built, as it inflates in about
 * two thirds of zlib's CPU time (BENCHMARKS.md), unless {@link GUNZIP_ENV} asks for zlib; zlib
 * otherwise. Both refuse the same streams: corrupt data, wrong checksums or lengths, truncation,
 * and anything after a member but another member or zero padding.
 */
export function gunzipDecoder(): GunzipDecoder {
  const wanted = process.env[GUNZIP_ENV];
  if (wanted === 'zlib') return 'zlib';
  if (wanted !== undefined && wanted !== '' && wanted !== 'isal') throw new InvalidSettingError(GUNZIP_ENV, `must be isal or zlib, not ${JSON.stringify(wanted)}`);
  if (isalGunzip() !== null) return 'isal';
  if (wanted === 'isal') throw new InvalidSettingError(GUNZIP_ENV, 'isal, but the ISA-L addon (native/isal-gunzip) is not built: install libisal-dev, then run npm install');
  return 'zlib';
}
