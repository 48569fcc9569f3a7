import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { build, type BuildOptions, type BuildReport } from '../build/build.js';
import { InvalidImageSourceError, firstMemberName, probeImageSource, singleLayerStreamSource, type Platform } from '../oci/index.js';

/** How standard input is named in messages: the spooled copy's temporary path means nothing to the user. */
export const STDIN_NAME = 'standard input';

export interface ConvertStreamOptions extends Omit<BuildOptions, 'outputDir' | 'platform'> {
  /** The OCI layout (and default store) to write; absent: a temporary one, given to `tarOutput`. */
  outputDir?: string;
  /** Where a tar of the resulting OCI layout goes when there is no `outputDir` (`-o -`). */
  tarOutput?: Writable;
  /** Only this platform of a multi-platform index; default: each platform. */
  platform?: Platform;
  /** Where the input is spooled (default `os.tmpdir()`). */
  tempDir?: string;
  /**
   * Runs once the layout is complete and before any tar of it is written (with `-o -` the layout
   * is temporary, so this is the moment it exists): `buildkit --push` pushes it here. A failure
   * fails the conversion.
   */
  afterBuild?: (layoutDir: string, report: BuildReport) => Promise<void>;
}

/** Root names of image archives (OCI and docker save); a root filesystem starting with one is a cut-off archive. */
const ARCHIVE_ROOTS = new Set(['blobs', 'oci-layout', 'index.json', 'manifest.json', 'repositories']);
/** docker save (and podman, skopeo docker-archive) members at the root: `<id>/`, `<id>.json`, `<id>.tar`. */
const DOCKER_ARCHIVE_ROOT = /^[0-9a-f]{64}(\.json|\.tar)?$/;
/** How much of the input is looked at to tell a root filesystem tar from an image archive. */
const PEEK_LIMIT_BYTES = 1 << 20;

function isArchiveRoot(memberName: string): boolean {
  const root = memberName.replace(/^(\.\/)+/, '').split('/')[0] ?? '';
  return ARCHIVE_ROOTS.has(root) || DOCKER_ARCHIVE_ROOT.test(root);
}

/** What a stream starts with, and the stream again from its first byte. */
interface Peeked {
  head: Buffer;
  /** The first member's name when the input is an uncompressed tar whose name could be read. */
  firstMember?: string;
  stream: Readable;
}

/** Reads just enough of `input` to know its first tar member (at most {@link PEEK_LIMIT_BYTES}). */
async function peek(input: Readable): Promise<Peeked> {
  const iterator = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const chunks: Buffer[] = [];
  let head = Buffer.alloc(0);
  let ended = false;
  let firstMember: string | 'more' | undefined = 'more';
  while (firstMember === 'more' && !ended && head.length < PEEK_LIMIT_BYTES) {
    const next = await iterator.next();
    if (next.done === true) ended = true;
    else {
      chunks.push(Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value));
      head = Buffer.concat(chunks);
    }
    firstMember = firstMemberName(head);
  }
  async function* replay(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    if (ended) return;
    for (;;) {
      const next = await iterator.next();
      if (next.done === true) return;
      yield next.value;
    }
  }
  return { head, firstMember: firstMember === 'more' ? undefined : firstMember, stream: Readable.from(replay(), { objectMode: false }) };
}

/**
 * Converts what a BuildKit exporter writes to a pipe: an OCI archive (`type=oci,dest=-`, with
 * attestation manifests skipped and every platform of an index converted unless `platform` picks
 * one), a `docker save` stream, or the root filesystem tar of `type=tar,dest=-` (one layer).
 *
 * A root filesystem tar (told by its first member) streams straight into the conversion. An image
 * archive is saved once to a temporary file and removed afterwards: archives are read by member
 * offsets, and both BuildKit's OCI exporter and `docker save` write index.json/manifest.json after
 * the blobs, so which blob is what cannot be known before the stream's end. On failure nothing is
 * left: neither a new output directory nor anything on `tarOutput`.
 */
export async function convertBuildkitStream(input: Readable, options: ConvertStreamOptions): Promise<BuildReport> {
  const { outputDir, tarOutput, tempDir, platform, afterBuild, ...buildOptions } = options;
  if ((outputDir === undefined) === (tarOutput === undefined)) throw new Error('convertBuildkitStream: give exactly one of outputDir and tarOutput');
  // A temporary directory only when something has to go there: an archive's copy, or the layout
  // of `-o -`. A root filesystem converted into an output directory needs none.
  let work: string | undefined;
  const workDir = async (): Promise<string> => (work ??= await mkdtemp(path.join(tempDir ?? tmpdir(), 'mkfs-erofs-ts-buildkit-')));
  let spooled: string | undefined;
  const outputExisted = outputDir === undefined || (await stat(outputDir).then(() => true, () => false));
  try {
    const layoutDir = outputDir ?? path.join(await workDir(), 'layout');
    const peeked = await peek(input);
    if (peeked.head.length === 0) throw new InvalidImageSourceError(STDIN_NAME, 'empty: nothing was piped in (did the build fail?)');
    let report: BuildReport;
    if (peeked.firstMember !== undefined && !isArchiveRoot(peeked.firstMember)) {
      // `--output type=tar`: one layer, converted as it arrives (no copy on disk).
      const source = singleLayerStreamSource(peeked.stream, STDIN_NAME, buildOptions.name ?? 'image');
      report = await build([source], { ...buildOptions, outputDir: layoutDir, name: buildOptions.name ?? 'image' });
    } else {
      spooled = path.join(await workDir(), 'input.tar');
      await pipeline(peeked.stream, createWriteStream(spooled));
      await checkComplete(spooled);
      report = await build([spooled], { ...buildOptions, outputDir: layoutDir, platform: platform ?? 'all', name: buildOptions.name ?? 'image' });
    }
    await afterBuild?.(layoutDir, report);
    if (tarOutput !== undefined) await writeLayoutTar(layoutDir, tarOutput);
    const copy = spooled;
    return copy === undefined ? report : { ...report, notes: report.notes.map((note) => note.replaceAll(copy, STDIN_NAME)) };
  } catch (error) {
    // A directory this conversion created is removed whole; one that existed keeps what it had
    // (the build itself removes the files it wrote before failing).
    if (!outputExisted && outputDir !== undefined) await rm(outputDir, { recursive: true, force: true });
    throw spooled === undefined ? error : renameInput(error, spooled);
  } finally {
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  }
}

/** Errors name the file they read; for the spooled copy, that is standard input. */
function renameInput(error: unknown, spooled: string): unknown {
  if (error instanceof Error && error.message.includes(spooled)) {
    error.message = error.message.replaceAll(spooled, STDIN_NAME);
    if ('source' in error && typeof error.source === 'string') (error as { source: string }).source = error.source.replaceAll(spooled, STDIN_NAME);
  }
  return error;
}

/**
 * A stream cut off before index.json / manifest.json would otherwise pass for a root filesystem
 * (a tar of `blobs/...`) and be converted as one; such a start is refused instead.
 */
async function checkComplete(spooled: string): Promise<void> {
  if ((await stat(spooled)).size === 0) throw new InvalidImageSourceError(STDIN_NAME, 'empty: nothing was piped in (did the build fail?)');
  const probed = await probeImageSource(spooled);
  if (probed.kind !== 'layer-tarball' || probed.compression !== 'none') return;
  const first = await firstMemberOfFile(spooled);
  if (first !== undefined && isArchiveRoot(first)) {
    const root = first.replace(/^(\.\/)+/, '').split('/')[0];
    throw new InvalidImageSourceError(STDIN_NAME, `an image archive (it starts with ${root}) without its index.json or manifest.json: the stream is truncated or incomplete`);
  }
}

/** The name of a tar file's first member (PAX headers applied); undefined for an empty or damaged tar. */
async function firstMemberOfFile(file: string): Promise<string | undefined> {
  const handle = await open(file, 'r');
  try {
    const head = Buffer.alloc(PEEK_LIMIT_BYTES);
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    const name = firstMemberName(head.subarray(0, bytesRead));
    // Damage is reported, with its place, by the conversion that reads the whole tar.
    return name === 'more' ? undefined : name;
  } finally {
    await handle.close();
  }
}

/**
 * Writes the OCI layout as a tar: `oci-layout`, `index.json` and the blobs. The store's own files
 * (chunk dictionary, object indexes) and the loose `NAME.erofs` copies are left out: the layout
 * refers to every artifact by digest under blobs/.
 */
export async function writeLayoutTar(layoutDir: string, output: Writable): Promise<void> {
  const blobsDir = path.join(layoutDir, 'blobs', 'sha256');
  const blobs = (await readdir(blobsDir)).filter((name) => /^[0-9a-f]{64}$/.test(name)).sort();
  const members = ['oci-layout', 'index.json', ...blobs.map((hex) => `blobs/sha256/${hex}`)];
  const pack = tar.pack();
  const written = pipeline(pack, output);
  try {
    for (const dir of ['blobs/', 'blobs/sha256/']) pack.entry({ name: dir, type: 'directory', mode: 0o755, mtime: new Date(0) });
    for (const member of members) {
      const file = path.join(layoutDir, member);
      const sizeBytes = (await stat(file)).size;
      // Fixed mode and mtime: the same layout always gives the same tar.
      const entry = pack.entry({ name: member, size: sizeBytes, mode: 0o644, mtime: new Date(0) });
      await pipeline(createReadStream(file), entry);
    }
    pack.finalize();
  } catch (error) {
    pack.destroy(error as Error);
    throw error;
  } finally {
    await written.catch(() => undefined);
  }
  await written;
}
