import { access, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { ErofsImage, PathNotFoundError } from '../read/index.js';
import { TraceFileError } from './errors.js';

/**
 * Static sharing analysis: for images started in order, how much of each later image's file data
 * the earlier ones already hold, and how much of that the page cache actually shares.
 *
 * Blobs are content-addressed, so a chunk of blob X is the same bytes in every image that has X as
 * a device: a file's data is *held* by earlier images when every chunk it maps lies in a blob an
 * earlier image also has. Being held is not enough to share page cache: the kernel caches a file
 * in the inode that reads it. It is *shared* when the file reads through an object that an earlier
 * image reads too, which our images arrange with an overlay metacopy redirect to the object of its
 * content in a blob's object index (that is the RFC's rule: the whole file in one blob). So:
 * - eligible: the file redirects to an object that the object index of a blob both this image and
 *   an earlier one have lists (overlay finds it there, in the layer every such image stacks);
 * - held, not eligible: the bytes are in shared blobs but the file reads through its own inode
 *   (data spanning several blobs, data inline in the metadata image, or no redirect);
 * - new: data that only this image has (or, with --trace, nothing to compare).
 */

export interface ByteCount {
  files: number;
  bytes: number;
}

export interface ImageSharingReport {
  image: string;
  /** 1-based position in the start order. */
  position: number;
  /** Regular files with data (distinct inodes; hard links count once). */
  total: ByteCount;
  held: ByteCount;
  eligible: ByteCount;
  heldNotEligible: ByteCount & { reasons: Record<string, ByteCount> };
  new: ByteCount;
  /** eligible bytes / total bytes, in percent (100 when there is nothing to count). */
  sharedPercent: number;
  /** --trace paths this image does not have (or that are not regular files). */
  traceMissing: string[];
}

export interface SharingAnalysis {
  images: ImageSharingReport[];
  /** The smallest sharedPercent of the later images (what --min-shared compares); null with one image. */
  minSharedPercent: number | null;
  trace: string | null;
}

export interface AnalyzeOptions {
  /** Only these paths (a startup workload's access list). */
  tracePaths?: readonly string[];
  tracePath?: string;
  /** Store with `blobs/sha256/` and `objects/`; default: each image's directory. */
  store?: string;
}

/** Reads a trace file: one absolute or image-relative path per line; blank lines and `#` comments ignored. */
export async function readTraceFile(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new TraceFileError(path, (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message);
  }
  const paths = text.split('\n').map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('#'));
  if (paths.length === 0) throw new TraceFileError(path, 'lists no paths (one path per line)');
  return paths;
}

const MAX_SYMLINK_HOPS = 40;

/**
 * nid of `path` inside the image, following symlinks in every component like the kernel would in a
 * chroot of it (absolute targets restart at the image root, `..` never leaves it). Undefined when the
 * path does not exist.
 */
export async function resolveInImage(image: ErofsImage, path: string): Promise<number | undefined> {
  let pending = path.split('/').filter((c) => c !== '' && c !== '.');
  const done: string[] = [];
  let hops = 0;
  while (pending.length > 0) {
    const component = pending.shift()!;
    if (component === '..') {
      done.pop();
      continue;
    }
    let nid: number;
    try {
      nid = await image.lookup([...done, component].join('/'));
    } catch (error) {
      if (error instanceof PathNotFoundError) return undefined;
      throw error;
    }
    const stat = await image.stat(nid);
    if (stat.kind !== 'lnk') {
      done.push(component);
      continue;
    }
    if (++hops > MAX_SYMLINK_HOPS) return undefined;
    const target = (await image.readlink(nid)).toString('utf8');
    if (target.startsWith('/')) done.length = 0;
    pending = [...target.split('/').filter((c) => c !== '' && c !== '.'), ...pending];
  }
  return image.lookup(done.join('/'));
}

const REDIRECT_XATTR = 'trusted.overlay.redirect';

/** The objects a blob's object index lists (`/<2 hex>/<sha256>` names), read through our reader; empty without an index. */
async function objectsOfBlob(indexPath: string): Promise<Set<string>> {
  const found = await access(indexPath).then(() => true, () => false);
  if (!found) return new Set();
  const index = await ErofsImage.open(indexPath, { blobDirs: [] });
  try {
    const objects = new Set<string>();
    for await (const entry of index.walk()) if (entry.stat.kind === 'reg') objects.add(`/${entry.path}`);
    return objects;
  } finally {
    await index.close();
  }
}

function add(count: ByteCount, bytes: number): void {
  count.files++;
  count.bytes += bytes;
}

interface FileVerdict {
  bytes: number;
  held: boolean;
  /** Why a held file's page cache is not shared; undefined when it is. */
  notShared?: string;
}

export async function analyzeSharing(images: readonly string[], options: AnalyzeOptions = {}): Promise<SharingAnalysis> {
  const reports: ImageSharingReport[] = [];
  /** Blob digests of the earlier images. */
  const earlierBlobs = new Set<string>();
  const objectCache = new Map<string, Set<string>>();
  for (const [index, imagePath] of images.entries()) {
    const path = resolve(imagePath);
    const store = options.store ?? dirname(path);
    const image = await ErofsImage.open(path, { blobDirs: [] });
    try {
      const tags = image.devices.map((d) => d.tag);
      // Object indexes that this image stacks and an earlier image stacked too.
      const sharedObjects = new Set<string>();
      for (const tag of tags) {
        if (!earlierBlobs.has(tag)) continue;
        let objects = objectCache.get(tag);
        if (objects === undefined) {
          objects = await objectsOfBlob(join(store, 'objects', `${tag}.erofs`));
          objectCache.set(tag, objects);
        }
        for (const o of objects) sharedObjects.add(o);
      }
      const verdictOf = async (nid: number): Promise<FileVerdict | undefined> => {
        const stat = await image.stat(nid);
        if (stat.kind !== 'reg' || stat.sizeBytes === 0) return undefined;
        const map = await image.chunkMap(nid);
        const devices = new Set(map.filter((c) => c.blkaddr !== null).map((c) => c.deviceId));
        const held = devices.size > 0 && [...devices].every((d) => d > 0 && earlierBlobs.has(tags[d - 1] ?? ''));
        const redirect = (await image.listXattrs(nid)).find((x) => x.name.toString('latin1') === REDIRECT_XATTR)?.value.toString('latin1');
        const shared = redirect !== undefined && sharedObjects.has(redirect);
        if (shared) return { bytes: stat.sizeBytes, held: true };
        let notShared: string;
        if (devices.has(0)) notShared = 'data in the metadata image';
        else if (devices.size > 1) notShared = 'data spans several blobs';
        else if (redirect === undefined) notShared = 'no object redirect';
        else notShared = 'object not in an index an earlier image has';
        return { bytes: stat.sizeBytes, held, notShared };
      };

      const report: ImageSharingReport = {
        image: path,
        position: index + 1,
        total: { files: 0, bytes: 0 },
        held: { files: 0, bytes: 0 },
        eligible: { files: 0, bytes: 0 },
        heldNotEligible: { files: 0, bytes: 0, reasons: {} },
        new: { files: 0, bytes: 0 },
        sharedPercent: 100,
        traceMissing: [],
      };
      const count = (verdict: FileVerdict) => {
        add(report.total, verdict.bytes);
        if (verdict.notShared === undefined) {
          add(report.held, verdict.bytes);
          add(report.eligible, verdict.bytes);
        } else if (verdict.held) {
          add(report.held, verdict.bytes);
          add(report.heldNotEligible, verdict.bytes);
          add((report.heldNotEligible.reasons[verdict.notShared] ??= { files: 0, bytes: 0 }), verdict.bytes);
        } else {
          add(report.new, verdict.bytes);
        }
      };
      const seen = new Set<number>();
      if (options.tracePaths !== undefined) {
        for (const tracePath of options.tracePaths) {
          const nid = await resolveInImage(image, tracePath);
          const verdict = nid === undefined ? undefined : await verdictOf(nid);
          if (nid === undefined || (verdict === undefined && (await image.stat(nid)).kind !== 'reg')) {
            report.traceMissing.push(tracePath);
            continue;
          }
          if (seen.has(nid)) continue;
          seen.add(nid);
          if (verdict !== undefined) count(verdict);
        }
      } else {
        for await (const entry of image.walk()) {
          if (entry.stat.kind !== 'reg' || seen.has(entry.nid)) continue;
          seen.add(entry.nid);
          const verdict = await verdictOf(entry.nid);
          if (verdict !== undefined) count(verdict);
        }
      }
      report.sharedPercent = report.total.bytes === 0 ? 100 : (report.eligible.bytes / report.total.bytes) * 100;
      reports.push(report);
      for (const tag of tags) earlierBlobs.add(tag);
    } finally {
      await image.close();
    }
  }
  const later = reports.slice(1).map((r) => r.sharedPercent);
  return { images: reports, minSharedPercent: later.length === 0 ? null : Math.min(...later), trace: options.tracePath ?? null };
}

function size(bytes: number): string {
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  if (bytes >= 2 ** 10) return `${(bytes / 2 ** 10).toFixed(1)} KiB`;
  return `${bytes} B`;
}

function files(count: ByteCount): string {
  return `${count.files} files, ${size(count.bytes)}`;
}

/** Human-readable lines for a static analysis. */
export function formatSharingAnalysis(analysis: SharingAnalysis): string[] {
  const lines: string[] = [];
  if (analysis.trace !== null) lines.push(`restricted to the paths in ${analysis.trace}`);
  for (const r of analysis.images) {
    lines.push(`${r.position}. ${r.image}: ${files(r.total)}${r.traceMissing.length > 0 ? ` (${r.traceMissing.length} traced paths not in it)` : ''}`);
    if (r.position === 1) {
      lines.push('   first image: everything is new');
      continue;
    }
    lines.push(`   held by earlier images' blobs: ${files(r.held)}`);
    lines.push(`     page cache shared (eligible): ${files(r.eligible)} = ${r.sharedPercent.toFixed(1)}% of its bytes`);
    const reasons = Object.entries(r.heldNotEligible.reasons).map(([reason, c]) => `${c.files} ${reason} (${size(c.bytes)})`);
    lines.push(`     held but not shared:          ${files(r.heldNotEligible)}${reasons.length > 0 ? `: ${reasons.join(', ')}` : ''}`);
    lines.push(`   new data:                       ${files(r.new)}`);
  }
  return lines;
}
