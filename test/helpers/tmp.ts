import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Prefix of every directory made by {@link withTempDir}, so a leak is easy to spot (`ls /tmp/erofs-test-*`). */
export const TEMP_DIR_PREFIX = 'erofs-test-';

/**
 * Runs `fn` with a fresh directory under `os.tmpdir()` (named `erofs-test-XXXXXX`) and removes the
 * directory afterwards, whether `fn` resolved or threw. Set `KEEP_TEST_TMP=1` to keep it for a post-mortem
 * (its path is printed to stderr).
 */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), TEMP_DIR_PREFIX));
  try {
    return await fn(dir);
  } finally {
    if (process.env['KEEP_TEST_TMP'] === '1') {
      process.stderr.write(`withTempDir: kept ${dir}\n`);
    } else {
      // maxRetries: a file may still be briefly busy (e.g. a loop device being torn down).
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    }
  }
}
