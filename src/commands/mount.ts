import { Args, Command, Flags } from '@oclif/core';
import { reportError } from '../cli/errors.js';
import { DEFAULT_RUNTIME_DIR, MECHANISM_REQUESTS, listMounts, mountImage, type MechanismRequest, type MountListing, type MountResult } from '../mount/index.js';
import { InvalidMountOptionError } from '../mount/errors.js';
import { listFuseMounts, mountFuse, type FuseMountRecord, type FuseMountResult } from '../fuse/client.js';

export default class Mount extends Command {
  static override summary = 'Mount a metadata image read-only, sharing page cache with other images that hold the same files.';
  static override description = `Picks the best sharing mechanism the running kernel has, found by probing it: EROFS inode_share (Linux 7.0+), else overlayfs data-only layers over the store's per-blob object indexes (Linux 6.5+; each object index is mounted once per host and shared by every image that needs it), else a plain mount with a warning. Needs root. State lives under --runtime-dir so that erofs umount and later mounts cooperate; a mount interrupted half way is cleaned up by the next mount, umount or --list.`;
  static override examples = [
    '<%= config.bin %> mount out/v1.erofs /mnt/v1',
    '<%= config.bin %> mount out/v1.erofs /mnt/v1 --store /var/lib/erofs-store --json',
    '<%= config.bin %> mount out/v1.erofs /mnt/v1 --no-share',
    '<%= config.bin %> mount --list',
    '<%= config.bin %> mount --fuse out/v1.erofs /mnt/v1',
  ];
  static override enableJsonFlag = true;
  static override args = {
    image: Args.string({ description: 'metadata image (NAME.erofs written by build)', required: false }),
    mountpoint: Args.string({ description: 'existing directory to mount on', required: false }),
  };
  static override flags = {
    fuse: Flags.boolean({
      description: 'serve the image from the host\'s user-space FUSE daemon (no kernel EROFS needed); equal files across FUSE-mounted images share one page cache copy',
      default: false,
      exclusive: ['list', 'no-share'],
    }),
    list: Flags.boolean({ description: 'show what erofs mount has mounted (and the shared object indexes)', default: false }),
    mechanism: Flags.string({ description: 'how to share page cache; a forced mechanism the kernel lacks is an error', options: [...MECHANISM_REQUESTS], default: 'auto' }),
    'no-share': Flags.boolean({ description: 'plain EROFS mount with the blobs as devices (no sharing, no probing)', default: false }),
    'runtime-dir': Flags.string({ description: 'where mount state and shared object index mounts live', default: DEFAULT_RUNTIME_DIR }),
    store: Flags.string({ description: 'store holding blobs/sha256/ and objects/ (default: the image\'s directory)' }),
  };

  async run(): Promise<MountResult | MountListing | (MountListing & { fuse: FuseMountRecord[] }) | FuseMountResult> {
    const { args, flags } = await this.parse(Mount);
    try {
      if (flags.list) {
        const listing = await listMounts(flags['runtime-dir']);
        const fuse = await listFuseMounts(flags['runtime-dir']);
        if (!this.jsonEnabled()) {
          // "nothing mounted" would be wrong when only FUSE mounts exist.
          if (fuse.length === 0 || listing.mounts.length > 0) this.printListing(listing);
          for (const m of fuse) this.log(`${m.mountpoint}  fuse  ${m.metadataImage}`);
        }
        // Only present when something is FUSE-mounted, so the listing is unchanged for everyone else.
        return fuse.length === 0 ? listing : { ...listing, fuse };
      }
      if (args.image === undefined || args.mountpoint === undefined) throw new InvalidMountOptionError('mount', 'IMAGE and MOUNTPOINT are required (or --list)');
      if (flags.fuse) {
        const served = await mountFuse(args.image, args.mountpoint, { runtimeDir: flags['runtime-dir'], store: flags.store });
        if (!this.jsonEnabled()) {
          this.log(`mounted ${served.metadataImage} on ${served.mountpoint} with fuse (daemon ${served.daemonPid}${served.reusedDaemon ? ', shared with other images' : ', started'})`);
          for (const stale of served.cleanedUp) this.log(`  cleaned up ${stale} left by a dead daemon`);
        }
        return served;
      }
      const result = await mountImage(args.image, args.mountpoint, {
        mechanism: flags.mechanism as MechanismRequest,
        noShare: flags['no-share'],
        runtimeDir: flags['runtime-dir'],
        store: flags.store,
      });
      for (const warning of result.warnings) this.warn(warning);
      if (!this.jsonEnabled()) {
        this.log(`mounted ${result.metadataImage} on ${result.mountpoint} with ${result.mechanism}`);
        this.log(`  why: ${result.reason}`);
        for (const index of result.objectIndexes) this.log(`  object index ${index.digest.slice(0, 12)}: ${index.mountpoint}${index.reused ? ' (shared with another mount)' : ''}`);
      }
      return result;
    } catch (error) {
      return reportError(this, error);
    }
  }

  private printListing(listing: MountListing): void {
    if (listing.mounts.length === 0) this.log(`nothing mounted (runtime directory ${listing.runtimeDir})`);
    for (const m of listing.mounts) {
      this.log(`${m.mountpoint}  ${m.mechanism}  ${m.metadataImage}${m.status === 'ready' ? '' : `  [${m.status}]`}`);
      if (m.objectIndexes.length > 0) this.log(`  object indexes: ${m.objectIndexes.map((d) => d.slice(0, 12)).join(', ')}`);
    }
    const objects = listing.shared.filter((s) => s.kind === 'objects');
    if (objects.length > 0) this.log('shared object indexes:');
    for (const s of objects) this.log(`  ${s.digest.slice(0, 12)} on ${s.path}: ${s.users} user(s)`);
    for (const note of listing.notes) this.log(`note: ${note}`);
  }
}
