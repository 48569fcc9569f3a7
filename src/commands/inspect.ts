import { Args, Command, Flags } from '@oclif/core';
import { CorruptImageError, UnsupportedFeatureError } from '../format/index.js';
import {
  DeviceUnavailableError,
  ErofsImage,
  PathNotFoundError,
  describePath,
  formatImageSummary,
  formatPathReport,
  summarizeImage,
  type ImageSummary,
  type PathReport,
} from '../read/index.js';

export default class Inspect extends Command {
  static override description = 'Show what an EROFS image holds: superblock, devices and file counts, or one path in detail (inode, layout, chunk map, xattrs).';

  static override examples = [
    '<%= config.bin %> inspect image.erofs',
    '<%= config.bin %> inspect meta.erofs usr/bin/env --device blob.img',
    '<%= config.bin %> inspect meta.erofs etc/passwd --json',
  ];

  static override enableJsonFlag = true;

  static override args = {
    image: Args.string({ description: 'metadata image (any EROFS image: ours or mkfs.erofs\'s)', required: true }),
    path: Args.string({ description: 'a path inside the image ("/" or "" for the root); without it, the whole image is summarized', required: false }),
  };

  static override flags = {
    device: Flags.string({
      description: 'extra device (blob) in device-table order; repeat for several. Without it, blobs are looked up by tag next to the image and in <imagedir>/blobs/sha256',
      multiple: true,
    }),
  };

  async run(): Promise<ImageSummary | PathReport> {
    const { args, flags } = await this.parse(Inspect);
    try {
      const image = await ErofsImage.open(args.image, { devices: flags.device });
      try {
        if (args.path === undefined) {
          const summary = await summarizeImage(image);
          if (!this.jsonEnabled()) this.log(formatImageSummary(summary).join('\n'));
          return summary;
        }
        const report = await describePath(image, args.path);
        if (!this.jsonEnabled()) this.log(formatPathReport(report).join('\n'));
        return report;
      } finally {
        await image.close();
      }
    } catch (err) {
      // Image problems are the user's input, not our bug: one line, no stack trace.
      const expected = err instanceof CorruptImageError || err instanceof UnsupportedFeatureError || err instanceof DeviceUnavailableError || err instanceof PathNotFoundError;
      const system = err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' && (err as NodeJS.ErrnoException).syscall !== undefined;
      if (!expected && !system) throw err;
      const message = (err as Error).message;
      // --json reports the error as JSON on stdout (oclif does that for this.error).
      if (this.jsonEnabled()) {
        process.exitCode = 2;
        this.error(message, { exit: 2 });
      }
      // oclif would wrap a long message over several lines; an image path and a byte offset belong on one.
      this.logToStderr(`Error: ${message}`);
      this.exit(2);
    }
  }
}
