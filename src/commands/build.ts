import { Args, Command, Flags } from '@oclif/core';
import { BuildInterruptedError } from '../build/errors.js';
import { build, DEFAULT_BLOCK_SIZE_BYTES, DEFAULT_CHUNK_SIZE_BYTES, type BuildReport, type BuildResult } from '../build/build.js';
import { parseByteSize } from '../cli/sizes.js';
import { reportError } from '../cli/errors.js';
import { pushBuildResult, pushFlags, pushSummary } from '../cli/push.js';
import type { PushResult } from '../oci/registry/index.js';

export default class Build extends Command {
  static override summary = 'Convert container images or directories into EROFS metadata images plus chunk blobs.';
  static override description = `SOURCE is a directory, an OCI image layout (DIR for every image in it, DIR:TAG for one), an OCI archive, a docker-save archive, a single layer tarball (.tar, .tar.gz, .tar.zst), or an image in a registry (docker://HOST[:PORT]/REPO[:TAG][@DIGEST], layers streamed into the conversion; credentials from the docker config file; plain HTTP for loopback hosts and those listed in EROFS_INSECURE_REGISTRIES). Layers are merged with OCI whiteout rules; each layer's new file data goes, in deduplicated chunks, into a blob of its own under STORE/blobs/sha256/; each image's metadata image OUTDIR/NAME.erofs references them through its device table. OUTDIR is also an OCI layout holding the results as images. Mount with the kernel as the printed command shows.`;
  static override examples = [
    '<%= config.bin %> build ./rootfs -o out',
    '<%= config.bin %> build ./oci-layout:v1 -o out --chunk-size 4M --json',
    '<%= config.bin %> build base.tar derived.tar -o out --store /var/lib/erofs-store',
    '<%= config.bin %> build docker://registry.example.com/app:1.0 -o out --push docker://registry.example.com/app-erofs:1.0',
  ];
  static override enableJsonFlag = true;
  static override strict = false;
  static override args = {
    source: Args.string({ description: 'image or directory to convert (several may follow)', required: true }),
  };
  static override flags = {
    output: Flags.string({ char: 'o', description: 'output directory (created if missing)', required: true }),
    name: Flags.string({ description: 'metadata image name (NAME.erofs), at most 200 bytes; default: from the source (its file name or tag; one over 192 characters is cut and ends with a digest of the whole)' }),
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
    ...pushFlags,
  };

  async run(): Promise<BuildReport & Partial<BuildResult> & { push?: PushResult }> {
    const { argv, flags } = await this.parse(Build);
    // A terminal that reports no width (a pty nobody sized, as `script` makes) would hang ora's
    // line wrapping: no spinner there.
    const interactive = !this.jsonEnabled() && process.stderr.isTTY === true && (process.stderr.columns ?? 0) > 0;
    // ora is loaded only for a terminal: it costs startup time that scripts need not pay.
    const spinner = interactive ? (await import('ora')).default({ text: 'Converting', stream: process.stderr }).start() : undefined;
    // Ctrl-C or a kill stops the build between files and removes what it wrote.
    const abort = new AbortController();
    const onSignal = (signal: NodeJS.Signals) => abort.abort(new BuildInterruptedError(signal));
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      const report = await build(
        argv as string[],
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
      spinner?.succeed(`Built ${report.images.map((i) => i.name).join(', ')}`);
      if (!this.jsonEnabled()) {
        for (const note of report.notes) this.log(`note: ${note}`);
        for (const image of report.images) this.printReport(image);
      }
      const push = await pushBuildResult(flags, argv as string[], flags.output, report.images.map((image) => image.name), abort.signal);
      if (push !== undefined && !this.jsonEnabled()) this.log(pushSummary(push));
      // With one image, its fields also stand at the top level (what scripts of a directory build read).
      const result = report.images.length === 1 ? { ...report.images[0]!, ...report } : report;
      return push === undefined ? result : { ...result, push };
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
    this.log(`image ${result.name}`);
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
    this.log(`OCI layout:     ${result.ociLayout.path} (tag ${result.ociLayout.reference}, manifest ${result.ociLayout.manifestDigest})`);
    this.log(`mount (as root): ${result.mountCommand}`);
  }
}
