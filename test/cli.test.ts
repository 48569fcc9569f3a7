import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { COMMANDS, execute } from '../src/cli.js';
import { moduleUrl } from '../src/paths.js';

// dist/test/cli.test.js imports dist/src/cli.js: after `npm run build`, the CLI bundle itself.
const BUNDLE = new URL('../src/cli.js', import.meta.url);
const COMMANDS_DIR = new URL('../src/commands/', import.meta.url);

test('the CLI lists every module of src/commands, under the id oclif gave it from its file name', async () => {
  // oclif no longer discovers commands by file name (package.json: explicit strategy), so a command
  // module missing from COMMANDS would silently not exist.
  const ids = (await readdir(COMMANDS_DIR)).filter((f) => f.endsWith('.js')).map((f) => f.slice(0, -3)).sort();
  assert.deepEqual(Object.keys(COMMANDS).sort(), ids);
  for (const id of ids) {
    const { default: unbundled } = (await import(new URL(`${id}.js`, COMMANDS_DIR).href)) as { default: { description?: string } };
    assert.equal(COMMANDS[id]!.description, unbundled.description, id);
  }
  assert.equal(typeof execute, 'function');
});

test('dist/src/cli.js is one bundle: it imports nothing but Node modules and the native addons', async () => {
  // What start-up time depends on: a build step that left tsc's cli.js would still work, only slower.
  const source = await readFile(BUNDLE, 'utf8');
  const specifiers = [...source.matchAll(/^(?:import|export)\s[^;]*?from\s*["']([^"']+)["'];?$|\bimport\(["']([^"']+)["']\)/gm)].map((m) => m[1] ?? m[2]!);
  const allowed = /^(node:.*|@napi-rs\/blake-hash|fs-xattr|zstd-napi(\/.*)?)$/;
  assert.deepEqual(specifiers.filter((s) => !allowed.test(s)), []);
  assert.ok(specifiers.includes('node:module'), 'the bundle banner (createRequire for the CommonJS parts) is missing');
});

test('moduleUrl finds the scripts that worker threads and the FUSE daemon start from', async () => {
  for (const script of ['build/chunkWorker.js', 'oci/inflateWorker.js', 'fuse/daemonMain.js']) {
    await readFile(moduleUrl(script)); // throws ENOENT if the path is wrong
  }
});
