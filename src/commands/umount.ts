import { Args, Command, Flags } from '@oclif/core';
import { reportError } from '../cli/errors.js';
import { DEFAULT_RUNTIME_DIR, unmountImage, type UnmountResult } from '../mount/index.js';
import { isFuseMount, unmountFuse, type FuseUnmountResult } from '../fuse/client.js';

export default class Umount extends Command {
  static override summary = 'Unmount what erofs mount mounted, releasing shared object indexes no other mount uses.';
  static override examples = ['<%= config.bin %> umount /mnt/v1'];
  static override enableJsonFlag = true;
  static override args = {
    mountpoint: Args.string({ description: 'mount point given to erofs mount', required: true }),
  };
  static override flags = {
    'runtime-dir': Flags.string({ description: 'the runtime directory erofs mount used', default: DEFAULT_RUNTIME_DIR }),
  };

  async run(): Promise<UnmountResult | FuseUnmountResult> {
    const { args, flags } = await this.parse(Umount);
    try {
      if (await isFuseMount(args.mountpoint, flags['runtime-dir'])) {
        const fuse = await unmountFuse(args.mountpoint, { runtimeDir: flags['runtime-dir'] });
        if (!this.jsonEnabled()) this.log(`unmounted ${fuse.mountpoint} (fuse)${fuse.daemonStopped ? '; the daemon stopped (no image left)' : ''}`);
        return fuse;
      }
      const result = await unmountImage(args.mountpoint, { runtimeDir: flags['runtime-dir'] });
      if (!this.jsonEnabled()) {
        const released = result.released.length === 0 ? '' : `; released ${result.released.length} shared resource(s) no other mount used`;
        this.log(`unmounted ${result.mountpoint} (${result.mechanism})${released}`);
      }
      return result;
    } catch (error) {
      return reportError(this, error);
    }
  }
}
