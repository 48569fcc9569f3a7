import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { runChecked } from './exec.js';

/** Kept between runs on one machine: making the images takes about a minute and Debian's mirror. */
export const REAL_IMAGES_DIR = process.env['REAL_OCI_DIR'] ?? '/var/tmp/mkfs-erofs-ts-real-oci';

/**
 * Real images built by tools that are not ours (debootstrap, umoci, skopeo) from real Debian
 * packages, by ../shared/tools/make-real-oci.sh: a base image and one derived from it with Python,
 * deletions (whiteouts) and a replaced directory (opaque), as OCI layouts (gzip and zstd layers) and
 * docker-save archives, plus the trees each image must contain.
 */
export async function realImages(): Promise<{ gzipLayout: string; zstdLayout: string; dockerBase: string; dockerV1: string; baseTree: string; v1Tree: string }> {
  const paths = {
    gzipLayout: join(REAL_IMAGES_DIR, 'oci', 'gzip'),
    zstdLayout: join(REAL_IMAGES_DIR, 'oci', 'zstd'),
    dockerBase: join(REAL_IMAGES_DIR, 'docker', 'base.tar'),
    dockerV1: join(REAL_IMAGES_DIR, 'docker', 'v1.tar'),
    baseTree: join(REAL_IMAGES_DIR, 'rootfs', 'base'),
    v1Tree: join(REAL_IMAGES_DIR, 'rootfs', 'v1'),
  };
  const ready = await access(paths.dockerV1).then(
    () => true,
    () => false,
  );
  if (!ready) await runChecked('bash', [join(process.cwd(), '..', 'shared', 'tools', 'make-real-oci.sh'), REAL_IMAGES_DIR]);
  return paths;
}
