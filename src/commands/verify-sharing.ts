import { Args, Command, Flags } from '@oclif/core';
import { mkdtemp, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { reportError } from '../cli/errors.js';
import { MECHANISM_REQUESTS, mountImage, unmountImage, type MechanismRequest } from '../mount/index.js';
import { InvalidMountOptionError } from '../mount/errors.js';
import { analyzeSharing, formatMeasureTable, formatSharingAnalysis, measureSharing, readTraceFile, type MeasureReport, type Mounter, type SharingAnalysis } from '../share/index.js';

interface VerifySharingResult {
  static: SharingAnalysis;
  measured: MeasureReport | null;
  minShared: number | null;
  /** The figure --min-shared was compared with: measured when --measure, else static. */
  sharedPercent: number | null;
  pass: boolean;
}

export default class VerifySharing extends Command {
  static override summary = 'Tell how much page cache later images share with earlier ones: statically, and measured with --measure.';
  static override description = `Images are taken in start order. Statically, for each later image: the bytes and files whose data earlier images' blobs already hold, and of those, how many are read through an object an earlier image reads too (page cache shared) and why the others are not. With --measure --run CMD (root): each image is mounted in turn and CMD runs in a chroot of it inside its own memory cgroup, once with sharing off and once on, each from a dropped page cache; the page cache each container added is printed as the RFC's table. --min-shared makes the exit status 1 when sharing falls below it (measured with --measure, else static).`;
  static override examples = [
    '<%= config.bin %> verify-sharing out/base.erofs out/v1.erofs',
    '<%= config.bin %> verify-sharing out/v1.erofs out/v2.erofs --trace startup.txt --min-shared 90',
    `<%= config.bin %> verify-sharing out/v1.erofs out/v2.erofs --measure --run 'python3 -c "import yaml, requests"' --min-shared 95`,
  ];
  static override enableJsonFlag = true;
  static override strict = false;
  static override args = {
    image: Args.string({ description: 'metadata images in start order (two or more)', required: true }),
  };
  static override flags = {
    trace: Flags.string({ description: 'count only these paths (one per line): a startup workload\'s access list' }),
    measure: Flags.boolean({ description: 'mount each image and measure the page cache CMD adds (root; needs --run)', default: false }),
    run: Flags.string({ description: 'command run by the image\'s /bin/sh in a chroot of each mount (with --measure)' }),
    'min-shared': Flags.string({ description: 'exit 1 when a later image shares less than PERCENT (0-100)' }),
    store: Flags.string({ description: 'store holding blobs/sha256/ and objects/ (default: each image\'s directory)' }),
    mechanism: Flags.string({ description: 'sharing mechanism for the measured sharing-on mounts', options: [...MECHANISM_REQUESTS], default: 'auto' }),
    'runtime-dir': Flags.string({ description: 'runtime directory for the measurement\'s mounts (default: a private temporary one)' }),
  };

  async run(): Promise<VerifySharingResult> {
    const { argv, flags } = await this.parse(VerifySharing);
    const images = argv as string[];
    try {
      const minShared = flags['min-shared'] === undefined ? null : Number(flags['min-shared']);
      if (minShared !== null && (!Number.isFinite(minShared) || minShared < 0 || minShared > 100)) {
        throw new InvalidMountOptionError('--min-shared', `"${flags['min-shared']}" must be a percentage from 0 to 100`);
      }
      if (images.length < 2) throw new InvalidMountOptionError('verify-sharing', 'give two or more images, in start order');
      if (flags.run !== undefined && !flags.measure) throw new InvalidMountOptionError('--run', 'only used with --measure');
      if (flags.measure && flags.run === undefined) throw new InvalidMountOptionError('--measure', 'needs --run CMD, the command each container starts with');
      const tracePaths = flags.trace === undefined ? undefined : await readTraceFile(flags.trace);
      const analysis = await analyzeSharing(images, { tracePaths, tracePath: flags.trace, store: flags.store });
      if (!this.jsonEnabled()) this.log(formatSharingAnalysis(analysis).join('\n'));

      let measured: MeasureReport | null = null;
      if (flags.measure) {
        measured = await this.measure(images, flags.run!, flags.store, flags.mechanism as MechanismRequest, flags['runtime-dir']);
        if (!this.jsonEnabled()) this.log(['', ...formatMeasureTable(measured)].join('\n'));
      }
      const sharedPercent = measured?.sharedPercent ?? analysis.minSharedPercent;
      const pass = minShared === null || sharedPercent === null || sharedPercent >= minShared;
      if (!pass) {
        process.exitCode = 1;
        if (!this.jsonEnabled()) this.logToStderr(`${this.config.bin}: shared ${sharedPercent!.toFixed(1)}% is under --min-shared ${minShared}%`);
      }
      return { static: analysis, measured, minShared, sharedPercent, pass };
    } catch (error) {
      return reportError(this, error);
    }
  }

  private async measure(images: string[], command: string, store: string | undefined, mechanism: MechanismRequest, runtimeDirFlag: string | undefined): Promise<MeasureReport> {
    // A private runtime directory by default: the sharing-on containers then read through object
    // index mounts of their own, not through ones the host's running containers keep warm.
    const runtimeDir = runtimeDirFlag ?? (await mkdtemp(join(tmpdir(), 'erofs-measure-runtime-')));
    const mounter: Mounter = {
      mount: (image, mountpoint, sharing) => mountImage(image, mountpoint, { noShare: !sharing, mechanism, store, runtimeDir }),
      unmount: async (mountpoint) => void (await unmountImage(mountpoint, { runtimeDir })),
    };
    try {
      return await measureSharing(images, { command, mounter, onProgress: (m) => !this.jsonEnabled() && this.logToStderr(m) });
    } finally {
      if (runtimeDirFlag === undefined) {
        // Only our own files and empty directories: never a recursive removal through a mount.
        for (const name of ['state.json', 'capabilities.json', 'lock']) await rm(join(runtimeDir, name), { force: true });
        for (const name of ['objects', 'mounts', '']) await rmdir(join(runtimeDir, name)).catch(() => undefined);
      }
    }
  }
}
