import { FEATURE_COMPAT, FEATURE_INCOMPAT, filterKeyOf, longPrefixFullName, xattrFilterBit, type FileKind } from '../format/index.js';
import { addToSharingClasses, fileSharing, type FileSharing, type SharingClass } from './sharing.js';
import type { DeviceInfo } from './devices.js';
import type { ChunkMapEntry, DataLayoutName, ErofsImage } from './image.js';

/** Feature names as erofs-utils prints them (dump.erofs), by bit. */
const COMPAT_NAMES: Record<number, string> = {
  [FEATURE_COMPAT.SB_CHKSUM]: 'sb_csum',
  [FEATURE_COMPAT.MTIME]: 'mtime',
  [FEATURE_COMPAT.XATTR_FILTER]: 'xattr_filter',
  [FEATURE_COMPAT.SHARED_EA_IN_METABOX]: 'shared_ea_in_metabox',
  [FEATURE_COMPAT.PLAIN_XATTR_PFX]: 'plain_xattr_pfx',
  [FEATURE_COMPAT.ISHARE_XATTRS]: 'ishare_xattrs',
};
const INCOMPAT_NAMES: Record<number, string> = {
  [FEATURE_INCOMPAT.ZERO_PADDING]: '0padding',
  [FEATURE_INCOMPAT.COMPR_CFGS]: 'compr_cfgs',
  [FEATURE_INCOMPAT.CHUNKED_FILE]: 'chunked_file',
  [FEATURE_INCOMPAT.DEVICE_TABLE]: 'device_table',
  [FEATURE_INCOMPAT.ZTAILPACKING]: 'ztailpacking',
  [FEATURE_INCOMPAT.FRAGMENTS]: 'fragments',
  [FEATURE_INCOMPAT.XATTR_PREFIXES]: 'xattr_prefixes',
  [FEATURE_INCOMPAT.BIT48]: '48bit',
  [FEATURE_INCOMPAT.METABOX]: 'metabox',
};

export function featureNames(bits: number, names: Record<number, string>): string[] {
  const out: string[] = [];
  for (let bit = 1; bit !== 0 && bit <= bits; bit = (bit << 1) >>> 0) {
    if ((bits & bit) === 0) continue;
    out.push(names[bit] ?? `unknown_0x${bit.toString(16)}`);
  }
  return out;
}

function formatUuid(uuid: Buffer): string {
  const hex = uuid.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Seconds as a JSON-safe number when exact, else a decimal string. */
function jsonSeconds(sec: bigint): number | string {
  return sec >= BigInt(Number.MIN_SAFE_INTEGER) && sec <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(sec) : sec.toString();
}

function isoTime(sec: bigint, nsec: number): string {
  const ms = Number(sec) * 1000;
  const date = new Date(ms);
  if (Number.isNaN(date.getTime())) return `${sec}s`;
  return `${date.toISOString().slice(0, 19)}.${String(nsec).padStart(9, '0')}Z`;
}

export interface SuperblockSummary {
  blockSizeBytes: number;
  featureCompat: number;
  featureCompatNames: string[];
  featureIncompat: number;
  featureIncompatNames: string[];
  checksum: string;
  checksumVerified: boolean;
  uuid: string;
  volumeName: string;
  /** Base time of compact inodes (older name build_time). */
  epochSec: number | string;
  fixedNsec: number;
  buildTimeSec: number;
  inodeCount: number | string;
  primaryBlocks: number;
  rootNid: number;
  metaBlkaddr: number;
  xattrBlkaddr: number;
  extraDevices: number;
  devtSlotoff: number;
  packedNid: number | string;
  xattrPrefixCount: number;
  xattrPrefixStart: number;
  ishareXattrPrefixId: number;
  xattrFilterReserved: number;
  longXattrPrefixes: { number: number; baseIndex: number; name: string }[];
}

export interface ImageSummary {
  image: string;
  superblock: SuperblockSummary;
  devices: DeviceInfo[];
  /** Paths by file type (hard links counted once per name, like dump.erofs -S), root included. */
  counts: Record<FileKind, number> & { total: number };
  /** Distinct inodes reached. */
  inodes: number;
  /** Sum of i_size over regular-file paths (a hard-linked file counts once per name, like dump.erofs -S). */
  regularFileBytes: number;
  /** Sum of i_size over distinct regular-file inodes. */
  regularFileBytesDistinct: number;
  /** Page cache sharing eligibility of distinct regular inodes per size class (as the build report). */
  sharing: Record<string, SharingClass>;
}

export async function summarizeImage(image: ErofsImage): Promise<ImageSummary> {
  const sb = image.superblock;
  const counts = { reg: 0, dir: 0, lnk: 0, chr: 0, blk: 0, fifo: 0, sock: 0, total: 0 };
  const seen = new Set<number>();
  let regularFileBytes = 0;
  let regularFileBytesDistinct = 0;
  const sharing: Record<string, SharingClass> = {};
  for await (const entry of image.walk()) {
    counts[entry.stat.kind]++;
    counts.total++;
    if (entry.stat.kind === 'reg') regularFileBytes += entry.stat.sizeBytes;
    if (!seen.has(entry.nid)) {
      seen.add(entry.nid);
      if (entry.stat.kind === 'reg') {
        regularFileBytesDistinct += entry.stat.sizeBytes;
        addToSharingClasses(sharing, entry.stat.sizeBytes, await fileSharing(image, entry.nid, entry.stat));
      }
    }
  }
  return {
    image: image.path,
    superblock: {
      blockSizeBytes: image.blockSizeBytes,
      featureCompat: sb.featureCompat,
      featureCompatNames: featureNames(sb.featureCompat, COMPAT_NAMES),
      featureIncompat: sb.featureIncompat,
      featureIncompatNames: featureNames(sb.featureIncompat, INCOMPAT_NAMES),
      checksum: `0x${sb.checksum.toString(16).padStart(8, '0')}`,
      checksumVerified: image.checksumVerified,
      uuid: formatUuid(sb.uuid),
      volumeName: sb.volumeName.subarray(0, sb.volumeName.indexOf(0) < 0 ? 16 : sb.volumeName.indexOf(0)).toString('utf8'),
      epochSec: jsonSeconds(sb.epochSec),
      fixedNsec: sb.fixedNsec,
      buildTimeSec: sb.buildTimeSec,
      inodeCount: sb.inos <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(sb.inos) : sb.inos.toString(),
      primaryBlocks: sb.blocks,
      rootNid: image.rootNid,
      metaBlkaddr: sb.metaBlkaddr,
      xattrBlkaddr: sb.xattrBlkaddr,
      extraDevices: sb.extraDevices,
      devtSlotoff: sb.devtSlotoff,
      packedNid: sb.packedNid <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(sb.packedNid) : sb.packedNid.toString(),
      xattrPrefixCount: sb.xattrPrefixCount,
      xattrPrefixStart: sb.xattrPrefixStart,
      ishareXattrPrefixId: sb.ishareXattrPrefixId,
      xattrFilterReserved: sb.xattrFilterReserved,
      longXattrPrefixes: image.longXattrPrefixes.map((prefix, number) => ({ number, baseIndex: prefix.baseIndex, name: longPrefixFullName(prefix).toString('utf8') })),
    },
    devices: image.devices.map((d) => ({ ...d })),
    counts,
    inodes: seen.size,
    regularFileBytes,
    regularFileBytesDistinct,
    sharing,
  };
}

/** Consecutive chunks merged when they continue each other on one device (or are all holes). */
export interface ChunkRange extends ChunkMapEntry {
  chunks: number;
}

export function mergeChunkMap(map: readonly ChunkMapEntry[], blockSizeBytes: number): ChunkRange[] {
  const out: ChunkRange[] = [];
  for (const entry of map) {
    const last = out[out.length - 1];
    const continues =
      last !== undefined &&
      last.fileOffsetBytes + last.lengthBytes === entry.fileOffsetBytes &&
      last.deviceId === entry.deviceId &&
      (last.blkaddr === null
        ? entry.blkaddr === null
        : entry.blkaddr !== null && last.lengthBytes % blockSizeBytes === 0 && last.blkaddr + last.lengthBytes / blockSizeBytes === entry.blkaddr);
    if (continues && last !== undefined) {
      last.lengthBytes += entry.lengthBytes;
      last.chunks++;
    } else {
      out.push({ ...entry, chunks: 1 });
    }
  }
  return out;
}

export interface XattrSummary {
  name: string;
  /** The value as text when it is printable UTF-8, else as hex. */
  value: string;
  encoding: 'text' | 'hex';
  sizeBytes: number;
  shared: boolean;
  /** Not listed by the kernel (e.g. the erofs.fingerprint.v1 page cache fingerprint). */
  hidden: boolean;
}

export interface PathReport {
  image: string;
  path: string;
  nid: number;
  kind: FileKind;
  inodeForm: 'compact' | 'extended';
  inodeOffsetBytes: number;
  dataLayout: DataLayoutName;
  /** st_mode in octal, e.g. "100644". */
  mode: string;
  uid: number;
  gid: number;
  mtimeSec: number | string;
  mtimeNsec: number;
  mtime: string;
  nlink: number;
  sizeBytes: number;
  rdev?: string;
  symlinkTarget?: string;
  /** Directories: entries without "." and "..". */
  directoryEntries?: number;
  startBlkaddr: number | null;
  inlineTailBytes: number;
  chunkSizeBytes: number | null;
  chunkBits: number | null;
  chunkIndexes: 'indexes' | 'block map' | null;
  /** Every chunk (flat files: their extents), for machines. */
  chunkMap: ChunkMapEntry[];
  /** The same, consecutive chunks merged, for people. */
  chunkRanges: ChunkRange[];
  /** Devices holding the file's data (0 = primary image). */
  devicesUsed: number[];
  xattrs: XattrSummary[];
  /** Regular files: page cache sharing eligibility, the object it is redirected to, its fingerprint. */
  sharing?: FileSharing;
  /** The inline xattr header's bloom filter; `hides` lists xattrs whose bit is set (getxattr would miss them). */
  xattrFilter: { value: string; active: boolean; hides: string[] } | null;
}

function describeValue(value: Buffer): { value: string; encoding: 'text' | 'hex' } {
  const text = value.toString('utf8');
  // Printable: round-trips as UTF-8 and has no control characters.
  if (Buffer.from(text, 'utf8').equals(value) && !/[\u0000-\u001f\u007f-\u009f]/.test(text)) return { value: text, encoding: 'text' };
  return { value: value.toString('hex'), encoding: 'hex' };
}

export async function describePath(image: ErofsImage, path: string): Promise<PathReport> {
  const nid = await image.lookup(path);
  const stat = await image.stat(nid);
  const chunkMap = await image.chunkMap(nid);
  const records = await image.listXattrs(nid);
  const layout = await image.xattrLayout(nid);
  const sb = image.superblock;
  let xattrFilter: PathReport['xattrFilter'] = null;
  if (layout !== null) {
    const active = (sb.featureCompat & FEATURE_COMPAT.XATTR_FILTER) !== 0 && sb.xattrFilterReserved === 0;
    const hides = records
      .filter((record) => {
        const key = filterKeyOf(record, image.longXattrPrefixes);
        return ((layout.nameFilter >>> xattrFilterBit(key.baseIndex, key.name)) & 1) === 1;
      })
      .map((record) => record.name.toString('utf8'));
    xattrFilter = { value: `0x${layout.nameFilter.toString(16).padStart(8, '0')}`, active, hides };
  }
  const report: PathReport = {
    image: image.path,
    path,
    nid,
    kind: stat.kind,
    inodeForm: stat.inodeForm,
    inodeOffsetBytes: stat.inodeOffsetBytes,
    dataLayout: stat.dataLayout,
    mode: stat.mode.toString(8).padStart(6, '0'),
    uid: stat.uid,
    gid: stat.gid,
    mtimeSec: jsonSeconds(stat.mtimeSec),
    mtimeNsec: stat.mtimeNsec,
    mtime: isoTime(stat.mtimeSec, stat.mtimeNsec),
    nlink: stat.nlink,
    sizeBytes: stat.sizeBytes,
    startBlkaddr: stat.startBlkaddr,
    inlineTailBytes: stat.inlineTailBytes,
    chunkSizeBytes: stat.chunk?.chunkSizeBytes ?? null,
    chunkBits: stat.chunk?.chunkBits ?? null,
    chunkIndexes: stat.chunk === null ? null : stat.chunk.hasIndexes ? 'indexes' : 'block map',
    chunkMap,
    chunkRanges: mergeChunkMap(chunkMap, image.blockSizeBytes),
    devicesUsed: [...new Set(chunkMap.filter((c) => c.blkaddr !== null).map((c) => c.deviceId))].sort((a, b) => a - b),
    xattrs: records.map((r) => ({ name: r.name.toString('utf8'), ...describeValue(r.value), sizeBytes: r.value.length, shared: r.shared, hidden: r.hidden })),
    xattrFilter,
  };
  if (stat.rdev !== null) report.rdev = `${stat.rdev.major}:${stat.rdev.minor}`;
  if (stat.kind === 'lnk') report.symlinkTarget = (await image.readlink(nid)).toString('utf8');
  if (stat.kind === 'dir') report.directoryEntries = (await image.readdir(nid)).length;
  if (stat.kind === 'reg') report.sharing = await fileSharing(image, nid, stat, chunkMap);
  return report;
}

const KIND_NAMES: Record<FileKind, string> = { reg: 'regular files', dir: 'directories', lnk: 'symlinks', chr: 'character devices', blk: 'block devices', fifo: 'fifos', sock: 'sockets' };

/** Human-readable lines for an image summary. */
export function formatImageSummary(summary: ImageSummary): string[] {
  const sb = summary.superblock;
  const lines = [
    `image:            ${summary.image}`,
    `block size:       ${sb.blockSizeBytes} bytes`,
    `features:         compat ${sb.featureCompatNames.join(' ') || '-'} (0x${sb.featureCompat.toString(16)}); incompat ${sb.featureIncompatNames.join(' ') || '-'} (0x${sb.featureIncompat.toString(16)})`,
    `checksum:         ${sb.checksum}${sb.checksumVerified ? ' (verified)' : ''}`,
    `uuid:             ${sb.uuid}`,
    `volume name:      ${sb.volumeName || '-'}`,
    `epoch:            ${sb.epochSec} s + ${sb.fixedNsec} ns`,
    `inodes:           ${sb.inodeCount} (superblock), ${summary.inodes} reached`,
    `primary blocks:   ${sb.primaryBlocks}`,
    `root nid:         ${sb.rootNid}`,
    `meta/xattr blk:   ${sb.metaBlkaddr} / ${sb.xattrBlkaddr}`,
  ];
  if (sb.longXattrPrefixes.length > 0) {
    lines.push(`xattr prefixes:   ${sb.longXattrPrefixes.map((p) => `#${p.number} "${p.name}" (base ${p.baseIndex})`).join(', ')} at byte ${sb.xattrPrefixStart * 4}; ishare prefix id ${sb.ishareXattrPrefixId}`);
  }
  lines.push(`devices:          ${summary.devices.length === 0 ? 'none' : ''}`);
  for (const d of summary.devices) {
    const where = d.backing === 'unavailable' ? `unavailable: ${d.reason ?? ''}` : `${d.backing} ${d.path ?? ''}`;
    lines.push(`  #${d.deviceId} tag ${d.tag === '' ? '(empty)' : d.tag}, ${d.blocks} blocks, uniaddr ${d.uniaddr}: ${where}`);
  }
  const c = summary.counts;
  lines.push(`entries:          ${c.total} (${(Object.keys(KIND_NAMES) as FileKind[]).filter((k) => c[k] > 0).map((k) => `${c[k]} ${KIND_NAMES[k]}`).join(', ')})`);
  lines.push(`regular bytes:    ${summary.regularFileBytes} (${summary.regularFileBytesDistinct} in distinct inodes)`);
  for (const [sizeClass, c] of Object.entries(summary.sharing)) {
    const reasons = Object.entries(c.ineligible).map(([reason, r]) => `${r.files} ${reason}`);
    lines.push(`sharing ${sizeClass}: ${c.eligibleFiles}/${c.files} files, ${c.eligibleBytes}/${c.bytes} bytes eligible${reasons.length > 0 ? ` (not: ${reasons.join(', ')})` : ''}`);
  }
  return lines;
}

const MAX_RANGES_SHOWN = 16;

/** Human-readable lines for one path. */
export function formatPathReport(report: PathReport): string[] {
  const lines = [
    `path:        ${report.path}`,
    `nid:         ${report.nid} (${report.inodeForm} inode at byte ${report.inodeOffsetBytes})`,
    `type:        ${report.kind}, layout ${report.dataLayout}`,
    `mode:        ${report.mode}  uid ${report.uid}  gid ${report.gid}  nlink ${report.nlink}`,
    `mtime:       ${report.mtime} (${report.mtimeSec}.${String(report.mtimeNsec).padStart(9, '0')})`,
    `size:        ${report.sizeBytes} bytes`,
  ];
  if (report.rdev !== undefined) lines.push(`rdev:        ${report.rdev}`);
  if (report.symlinkTarget !== undefined) lines.push(`target:      ${report.symlinkTarget}`);
  if (report.directoryEntries !== undefined) lines.push(`entries:     ${report.directoryEntries}`);
  if (report.chunkSizeBytes !== null) lines.push(`chunks:      ${report.chunkMap.length} of ${report.chunkSizeBytes} bytes (${report.chunkIndexes})`);
  else if (report.dataLayout === 'flat-inline' || report.dataLayout === 'flat-plain') lines.push(`data:        start block ${report.startBlkaddr ?? '-'}, inline tail ${report.inlineTailBytes} bytes`);
  if (report.chunkRanges.length > 0) {
    lines.push('map:         file bytes -> device:block');
    for (const r of report.chunkRanges.slice(0, MAX_RANGES_SHOWN)) {
      const place = r.blkaddr === null ? (report.dataLayout === 'chunk-based' ? 'hole' : 'inline') : `${r.deviceId}:${r.blkaddr}`;
      lines.push(`  ${r.fileOffsetBytes}..${r.fileOffsetBytes + r.lengthBytes} -> ${place}${r.chunks > 1 ? ` (${r.chunks} chunks)` : ''}`);
    }
    if (report.chunkRanges.length > MAX_RANGES_SHOWN) lines.push(`  ... ${report.chunkRanges.length - MAX_RANGES_SHOWN} more ranges (--json lists every chunk)`);
  }
  if (report.sharing !== undefined) {
    const s = report.sharing;
    lines.push(`sharing:     ${s.eligible ? `eligible, object ${s.object} in blob ${s.blobTag ?? `#${s.deviceId}`}` : `not eligible: ${s.reason}`}`);
    if (s.fingerprint !== undefined) lines.push(`fingerprint: ${s.fingerprint}`);
  }
  if (report.xattrs.length > 0) {
    lines.push('xattrs:');
    for (const x of report.xattrs) {
      const flags = [x.shared ? 'shared' : '', x.hidden ? 'hidden' : ''].filter(Boolean).join(', ');
      lines.push(`  ${x.name} = ${x.encoding === 'hex' ? `0x${x.value}` : JSON.stringify(x.value)}${flags ? ` (${flags})` : ''}`);
    }
  }
  if (report.xattrFilter !== null) {
    lines.push(`xattr filter: ${report.xattrFilter.value}${report.xattrFilter.active ? '' : ' (inactive)'}${report.xattrFilter.hides.length > 0 ? `, HIDES ${report.xattrFilter.hides.join(', ')}` : ''}`);
  }
  return lines;
}
