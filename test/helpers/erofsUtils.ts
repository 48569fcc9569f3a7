import { join } from 'node:path';
import { run } from './exec.js';

/**
 * The bin/ directory of erofs-utils 1.9.4, as scripts/erofs-utils-reference.sh prints it (the script
 * owns the cache location; it builds the tools from Debian's source when they are missing, which
 * scripts/setup.sh has already done). Debian bookworm's 1.5 has no `fsck.erofs --xattr-inode-digest`
 * and cannot read long xattr name prefixes. Missing is an error, never a skip.
 */
export async function erofsUtils194Bin(): Promise<string> {
  const result = await run('bash', [join(process.cwd(), 'scripts', 'erofs-utils-reference.sh')]);
  if (result.code !== 0) throw new Error(`erofs-utils 1.9.4 is not available (scripts/erofs-utils-reference.sh exited ${result.code}):\n${result.output.trimEnd()}`);
  return result.stdout.trim();
}
