#!/usr/bin/env node
// Bundles the CLI after `tsc`: dist/src/cli.js (tsc's output for src/cli.ts) and everything it imports
// become one ESM file, written over it. Why: a start of the unbundled CLI loaded 165 module files
// (oclif and its dependencies; a build 226 with our dist/src), and resolving and reading them one by one
// was a large part of the start-up time. The rest of dist/src stays as tsc wrote it: library users and the tests import those modules,
// and worker threads and the FUSE daemon start from them (src/paths.ts says how they are found).
import { readFileSync, rmSync } from 'node:fs';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url);
const entry = new URL('dist/src/cli.js', root).pathname;

const banner = [
  "import { createRequire as __bundleCreateRequire } from 'node:module';",
  "import { dirname as __bundleDirnameOf } from 'node:path';",
  "import { fileURLToPath as __bundleFileURLToPath } from 'node:url';",
  'const require = __bundleCreateRequire(import.meta.url);',
  'const __bundleFilename = __bundleFileURLToPath(import.meta.url);',
  'const __bundleDirname = __bundleDirnameOf(__bundleFilename);',
].join('\n');

// The input is tsc's output, which this script overwrites: a second run without tsc would bundle the bundle.
if (readFileSync(entry, 'utf8').startsWith(banner)) {
  throw new Error(`${entry} is already the bundle: run tsc first (npm run build does both)`);
}

await build({
  entryPoints: [entry],
  outfile: entry,
  allowOverwrite: true, // the bundle replaces tsc's cli.js: bin/run.js and package.json's oclif.commands name that file
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Native addons cannot be bundled; they load from node_modules when first used, as before (zstd-napi
  // through createRequire in src/oci/zstd.ts, ours in src/util/addon.ts, which
  // esbuild does not follow). typescript: oclif requires
  // it only in development (NODE_ENV=development or test) to map dist/ back to src/; bundled, its 10 MB
  // would be compiled at every start.
  external: ['@napi-rs/blake-hash', 'fs-xattr', 'zstd-napi', 'typescript'],
  // oclif and most of its dependencies are CommonJS. In an ESM bundle their require() of Node's modules
  // (and of paths oclif computes at run time) needs a real `require`, and their __dirname / __filename
  // a value: the bundle's, which only oclif's fallbacks use (e.g. for its own package.json, bundled).
  banner: { js: banner },
  define: { __filename: '__bundleFilename', __dirname: '__bundleDirname' },
  // Maps into tsc's maps, so `node --enable-source-maps` reports src/*.ts positions.
  sourcemap: 'linked',
  legalComments: 'none',
  logLevel: 'warning',
});

// Builds before the bundle wrote oclif.manifest.json (so that oclif imported only the command that
// runs). With every command in the bundle it saves nothing measurable, and oclif reads it whenever it
// exists: a leftover one would show stale flags and help once a command changes.
rmSync(new URL('oclif.manifest.json', root), { force: true });
