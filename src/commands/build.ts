import { Args, Command, Flags } from '@oclif/core';
import ora from 'ora';
import { BuildInterruptedError } from '../build/errors.js';
import { buildImage, DEFAULT_BLOCK_SIZE_BYTES, DEFAULT_CHUNK_SIZE_BYTES, type BuildResult } from '../build/build.js';
import { parseByteSize } from '../cli/sizes.js';
import { reportError } from '../cli/errors.js';

export default class Build extends Command {
  static override summary = 'Convert a directory into an EROFS metadata image plus a chunk blob.';
  static override description = `File data is cut into chunks (deduplicated by BLAKE3) stored in one blob under OUTDIR/blobs/sha256/; the metadata image OUTDIR/NAME.erofs references them through its device table. Mount both with the kernel, as the printed command shows.`;
  static override examples = [
    '<%= config.bin %> build ./rootfs -o out',
    '<%= config.bin %> build ./rootfs -o out --chunk-size 4M --json',
  ];
  static override enableJsonFlag = true;
  static override args = {
    source: Args.string({ description: 'source directory', required: true }),
  };
  static override flags = {
    output: Flags.string({ char: 'o', description: 'output directory (created if missing)', required: true }),
    name: Flags.string({ description: 'metadata image name (NAME.erofs); default: the source directory name' }),
    'chunk-size': Flags.string({ description: 'chunk size: a power of two from the block size up, with K/M/G suffixes', default: String(DEFAULT_CHUNK_SIZE_BYTES) }),
    policy: Flags.string({
      description: 'per-file chunk size: tune = a file with nothing to deduplicate becomes one chunk (contiguous in one blob, so sharing-eligible); fixed = always --chunk-size',
      options: ['tune', 'fixed'],
      default: 'tune',
    }),
    store: Flags.string({ description: 'content-addressed store for blobs and the chunk dictionary, shared between builds (default: the output directory)' }),
    fingerprints: Flags.boolean({
      description: 'give regular files the erofs.fingerprint.v1 xattr (sha256 of content) that Linux 7.0+ inode_share uses; --no-fingerprints omits it (then even erofs-utils 1.5 fsck.erofs reads the image)',
      default: true,
      allowNo: true,
    }),
    'block-size': Flags.string({ description: 'filesystem block size (4096 = page size, needed for page cache sharing)', default: String(DEFAULT_BLOCK_SIZE_BYTES) }),
  };

  async run(): Promise<BuildResult> {
    const { args, flags } = await this.parse(Build);
    const interactive = !this.jsonEnabled() && process.stderr.isTTY === true;
    const spinner = interactive ? ora({ text: 'Converting', stream: process.stderr }).start() : undefined;
    // Ctrl-C or a kill stops the build between files and removes what it wrote.
    const abort = new AbortController();
    const onSignal = (signal: NodeJS.Signals) => abort.abort(new BuildInterruptedError(signal));
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      const result = await buildImage(
        { kind: 'directory', path: args.source },
        {
          outputDir: flags.output,
          name: flags.name,
          chunkSizeBytes: parseByteSize(flags['chunk-size'], '--chunk-size'),
          blockSizeBytes: parseByteSize(flags['block-size'], '--block-size'),
          signal: abort.signal,
          fingerprints: flags.fingerprints,
          policy: flags.policy as 'tune' | 'fixed',
          storeDir: flags.store,
          onProgress: spinner === undefined ? undefined : ({ files, bytes }) => (spinner.text = `Converting: ${files} files, ${(bytes / 2 ** 20).toFixed(1)} MiB`),
        },
      );
      spinner?.succeed(`Built ${result.name}`);
      if (!this.jsonEnabled()) this.printReport(result);
      return result;
    } catch (error) {
      spinner?.fail('Build failed');
      return reportError(this, error);
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }

  private printReport(result: BuildResult): void {
    const c = result.counts;
    this.log(`metadata image: ${result.metadataImage} (${result.metadataImageBytes} bytes)`);
    for (const [i, blob] of result.blobs.entries()) this.log(`blob ${i + 1}:          ${blob}`);
    this.log(
      `content:        ${c.regularFiles} files (${c.regularBytes} bytes), ${c.directories} directories, ${c.symlinks} symlinks, ` +
        `${c.devices} devices, ${c.fifos} fifos, ${c.sockets} sockets, ${c.hardlinks} extra hardlinks`,
    );
    const s = result.chunks;
    this.log(
      `chunks (${result.chunkSizeBytes} bytes): ${s.chunksWritten} written (${s.bytesWritten} bytes), ${s.chunksReused} reused (${s.bytesReused} bytes), ` +
        `${s.holeChunks} holes; dedup ratio ${s.dedupRatio.toFixed(2)}`,
    );
    this.log(`single-chunk files (tune policy): ${result.singleChunkFiles}`);
    for (const [sizeClass, entry] of Object.entries(result.sharing)) {
      const reasons = Object.entries(entry.ineligible).map(([reason, r]) => `${r.files} ${reason}`);
      this.log(`  sharing-eligible ${sizeClass}: ${entry.eligibleFiles}/${entry.files} files, ${entry.eligibleBytes}/${entry.bytes} bytes${reasons.length ? ` (not: ${reasons.join(', ')})` : ''}`);
    }
    this.log(`mount (as root): ${result.mountCommand}`);
  }
}
