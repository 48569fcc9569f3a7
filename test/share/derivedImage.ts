import { access, cp, mkdir, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runChecked } from '../helpers/exec.js';
import { REAL_IMAGES_DIR, realImages } from '../helpers/realImages.js';

/** Kept between runs like the real images: umoci unpack + repack of v1 takes a while. */
export const DERIVED_IMAGES_DIR = process.env['REAL_OCI_DERIVED_DIR'] ?? `${REAL_IMAGES_DIR}-derived`;

/** The small application the derived image adds on top of v1 (Python + yaml + requests). */
const APP_FILES: Record<string, string> = {
  'app/main.py': 'import yaml, requests\n\nconfig = yaml.safe_load(open("/app/config.yaml"))\nprint(config["name"], requests.__version__)\n',
  'app/config.yaml': 'name: derived-app\nworkers: 4\n',
  'app/README': 'An application layer on top of the v1 image (python3, python3-yaml, python3-requests).\n',
};

export interface DerivedImages {
  /** OCI layout with tags base, v1 (the real images) and v2 (v1 + an application layer, made by umoci). */
  layout: string;
  v1Tree: string;
  /** What v2 must contain: umoci's bundle rootfs it was packed from. */
  v2Tree: string;
}

/**
 * The RFC's pair of containers: two images that share a large base (here v1, a Debian system with
 * Python and two of Debian's Python packages, made from real packages by make-real-oci.sh) and differ
 * in a small top layer. v2 is v1 plus an application layer, added by umoci (a real tool, not ours).
 */
export async function derivedImages(): Promise<DerivedImages> {
  const real = await realImages();
  const layout = join(DERIVED_IMAGES_DIR, 'oci');
  const bundle = join(DERIVED_IMAGES_DIR, 'bundle-v2');
  const result = { layout, v1Tree: real.v1Tree, v2Tree: join(bundle, 'rootfs') };
  const marker = join(DERIVED_IMAGES_DIR, '.made');
  if (await access(marker).then(() => true, () => false)) return result;
  await rm(DERIVED_IMAGES_DIR, { recursive: true, force: true });
  await mkdir(DERIVED_IMAGES_DIR, { recursive: true });
  await cp(real.gzipLayout, layout, { recursive: true });
  await runChecked('umoci', ['unpack', '--image', `${layout}:v1`, bundle]);
  const rootfs = join(bundle, 'rootfs');
  // umoci stores whole seconds: give the new files whole-second times so the tree compares exactly.
  const whenSec = 1_735_776_000;
  await mkdir(join(rootfs, 'app'));
  for (const [path, text] of Object.entries(APP_FILES)) {
    await writeFile(join(rootfs, path), text);
    await utimes(join(rootfs, path), whenSec, whenSec);
  }
  await utimes(join(rootfs, 'app'), whenSec, whenSec);
  await runChecked('umoci', ['repack', '--image', `${layout}:v2`, bundle]);
  await writeFile(marker, '');
  return result;
}
