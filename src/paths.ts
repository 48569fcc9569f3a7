/**
 * The URL of one of our compiled modules, given by its path under `dist/src/` (e.g.
 * `build/chunkWorker.js`), for code that starts a module as a worker thread or a process of its own.
 *
 * Why this module and not each caller's own `import.meta.url`: the CLI runs from one bundle,
 * `dist/src/cli.js` (scripts/bundle.mjs), and inside it every module's `import.meta.url` is the
 * bundle's, so `new URL('./chunkWorker.js', import.meta.url)` in src/build would look in `dist/src/`
 * instead of `dist/src/build/`. This module sits at the root of src, so its `import.meta.url` names
 * `dist/src/` both when it runs as tsc wrote it (library users, tests) and inside the bundle.
 */
export function moduleUrl(pathUnderSrc: string): URL {
  return new URL(pathUnderSrc, import.meta.url);
}
