import { Command, Flags } from '@oclif/core';
import { DEFAULT_BLOCK_SIZE_BYTES, DEFAULT_CHUNK_SIZE_BYTES, type BuildReport } from '../build/build.js';
import { BuildInterruptedError, InvalidOptionError } from '../build/errors.js';
import { convertBuildkitStream } from '../buildkit/convert.js';
import { parsePlatform } from '../buildkit/platform.js';
import { reportError } from '../cli/errors.js';
import { parseByteSize } from '../cli/sizes.js';
import { pushBuildResult, pushFlags, pushSummary } from '../cli/push.js';
import type { PushResult } from '../oci/registry/index.js';

export default class Buildkit extends Command {
  static override summary = 'Convert what a BuildKit build writes to a pipe (OCI tarball, docker save stream, or root filesystem tar) into EROFS artifacts.';
  static override description = `Reads standard input: the OCI tarball of --output type=oci,dest=- (attestation manifests are skipped; every platform of a multi-platform image is converted, as NAME-OS-ARCH, unless --platform picks one), a docker save stream, or the root filesystem tar of --output type=tar,dest=- (taken as a one-layer image). The input is saved once to a temporary file (under TMPDIR) that is removed afterwards: archives are read by member offsets and their index comes last. Writes an OCI layout with the results to OUTDIR, or with -o - a tar of that layout to standard output (the report then goes to standard error).`;
  static override examples = [
    'buildctl build --frontend dockerfile.v0 --local context=. --local dockerfile=. --output type=oci,dest=- | <%= config.bin %> buildkit -o out',
    'docker buildx build --platform linux/amd64,linux/arm64 --output type=oci,dest=- . | <%= config.bin %> buildkit -o out',
    'DOCKER_BUILDKIT=1 docker build --output type=tar,dest=- . | <%= config.bin %> buildkit -o - > erofs-layout.tar',
    'docker buildx build --output type=oci,dest=- . | <%= config.bin %> buildkit -o out --push docker://registry.example.com/app-erofs:1.0',
  ];
  static override enableJsonFlag = true;
  static override flags = {
    output: Flags.string({ char: 'o', description: 'output directory (an OCI layout, created if missing), or - for a tar of it on standard output', required: true }),
    platform: Flags.string({ description: 'convert only this platform (OS/ARCH[/VARIANT]) of a multi-platform image' }),
    name: Flags.string({ description: 'result name (NAME.erofs, the layout tag), at most 200 bytes; with several platforms, NAME-OS-ARCH', default: 'image' }),
    'chunk-size': Flags.string({ description: 'chunk size: a power of two from the block size up, with K/M/G suffixes', default: String(DEFAULT_CHUNK_SIZE_BYTES) }),
    policy: Flags.string({ description: 'per-file chunk size (see build --help)', options: ['tune', 'fixed'], default: 'tune' }),
    store: Flags.string({ description: 'content-addressed store for blobs and the chunk dictionary (default: the output directory)' }),
    fingerprints: Flags.boolean({ description: 'give regular files the erofs.fingerprint.v1 xattr (see build --help)', default: true, allowNo: true }),
    'block-size': Flags.string({ description: 'filesystem block size', default: String(DEFAULT_BLOCK_SIZE_BYTES) }),
    push: pushFlags.push,
    'push-mount-from': pushFlags['push-mount-from'],
  };

  async run(): Promise<BuildReport & { push?: PushResult }> {
    const { flags } = await this.parse(Buildkit);
    const toStdout = flags.output === '-';
    // Ctrl-C or a kill (the build pipe failing upstream) stops the conversion and removes what it wrote.
    const abort = new AbortController();
    const onSignal = (signal: NodeJS.Signals) => abort.abort(new BuildInterruptedError(signal));
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      // Standard output carries the tar with -o -, so a JSON report there would corrupt it.
      if (toStdout && this.jsonEnabled()) throw new InvalidOptionError('--json', 'cannot be combined with -o - (standard output carries the tar)');
      if (process.stdin.isTTY === true) throw new InvalidOptionError('standard input', 'is a terminal: pipe a BuildKit output into it (see --help)');
      let push: PushResult | undefined;
      const report = await convertBuildkitStream(process.stdin, {
        ...(toStdout ? { tarOutput: process.stdout } : { outputDir: flags.output }),
        ...(flags.platform === undefined ? {} : { platform: parsePlatform(flags.platform) }),
        name: flags.name,
        chunkSizeBytes: parseByteSize(flags['chunk-size'], '--chunk-size'),
        blockSizeBytes: parseByteSize(flags['block-size'], '--block-size'),
        policy: flags.policy as 'tune' | 'fixed',
        fingerprints: flags.fingerprints,
        storeDir: flags.store,
        signal: abort.signal,
        // Several platforms go up as one index; the push happens before the tar (-o -) is written.
        afterBuild: async (layoutDir, built) => {
          push = await pushBuildResult(flags, [], layoutDir, built.images.map((image) => image.name), abort.signal);
        },
      });
      if (!this.jsonEnabled()) {
        const say = (line: string) => (toStdout ? process.stderr.write(`${line}\n`) : this.log(line));
        for (const note of report.notes) say(`note: ${note}`);
        for (const image of report.images) say(`image ${image.name}: ${image.counts.regularFiles} files, ${image.blobs.length} blob(s), manifest ${image.ociLayout.manifestDigest}`);
        if (!toStdout) say(`OCI layout: ${flags.output}`);
        if (push !== undefined) say(pushSummary(push));
      }
      return push === undefined ? report : { ...report, push };
    } catch (error) {
      return reportError(this, error);
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
}
