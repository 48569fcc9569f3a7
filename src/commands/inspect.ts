import { Args, Command, Flags } from '@oclif/core';
import { reportError } from '../cli/errors.js';
import {
  ErofsImage,
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
    } catch (error) {
      // One line on stderr, exit 2 for a bad image, path or device; anything else is reported as a bug.
      return reportError(this, error);
    }
  }
}
