import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build, type BuildResult } from '../../src/build/build.js';
import { listMounts, unmountImage } from '../../src/mount/index.js';
import { readMountinfo } from '../../src/mount/mountinfo.js';
import { run, type RunResult } from '../helpers/exec.js';
import { TEMP_DIR_PREFIX } from '../helpers/tmp.js';

export const CLI = 'bin/run.js';

/** Runs the CLI (as root, like the tests). */
export function cli(args: readonly string[]): Promise<RunResult> {
  return run('node', [CLI, ...args]);
}

/** Runs the CLI and parses its --json output; fails with its output unless it exits 0. */
export async function cliJson<T>(args: readonly string[]): Promise<T> {
  const r = await cli([...args, '--json']);
  assert.equal(r.code, 0, `erofs ${args.join(' ')} exited ${r.code}:\n${r.output}`);
  return JSON.parse(r.stdout) as T;
}

export function assertOneLineError(result: RunResult, pattern: RegExp): void {
  assert.notEqual(result.code, 0, `exit status must be non-zero; output:\n${result.output}`);
  const lines = result.stderr.trim().split('\n').filter((l) => l.trim() !== '');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${result.stderr}`);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(result.stderr, /\bat .*\.js:\d+/, 'no stack trace');
}

export interface BuiltImages {
  dir: string;
  base: BuildResult;
  v1: BuildResult;
  /** A runtime directory of the test's own, so it neither sees nor disturbs the host's mounts. */
  runtimeDir: string;
}

/**
 * The real Debian images (base, and v1 = base + Python) built into one store: v1 shares the base
 * layer's blob (and so its object index) with base. Built once per test file; `cleanup` removes it.
 */
export async function buildRealPair(gzipLayout: string): Promise<BuiltImages & { cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), TEMP_DIR_PREFIX));
  const report = await build([gzipLayout], { outputDir: join(dir, 'out') });
  const byName = new Map(report.images.map((i) => [i.name, i]));
  const runtimeDir = join(dir, 'runtime');
  await mkdir(runtimeDir);
  return {
    dir,
    base: byName.get('base')!,
    v1: byName.get('v1')!,
    runtimeDir,
    cleanup: async () => {
      // A failed test may have left mounts: undo them the way a user would.
      for (const mount of (await listMounts(runtimeDir)).mounts) await unmountImage(mount.mountpoint, { runtimeDir }).catch(() => undefined);
      // Never a recursive removal through something still mounted: check first.
      const mounted = (await readMountinfo()).filter((e) => e.target.startsWith(`${dir}/`));
      if (mounted.length > 0) throw new Error(`still mounted under ${dir}: ${mounted.map((m) => m.target).join(', ')}`);
      if (process.env['KEEP_TEST_TMP'] !== '1') await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The runtime directory's state file, parsed (empty state when absent). */
export async function readState(runtimeDir: string): Promise<{ mounts: Array<{ key: string; status: string; steps: unknown[]; mountpoint: string }>; shared: Array<{ key: string; status: string; users: string[]; steps: unknown[]; path: string }> }> {
  const text = await readFile(join(runtimeDir, 'state.json'), 'utf8').catch(() => undefined);
  if (text === undefined) return { mounts: [], shared: [] };
  return JSON.parse(text) as Awaited<ReturnType<typeof readState>>;
}
