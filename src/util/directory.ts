import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';

/** A directory we are to write into cannot be one (a file is in the way, no permission, a read-only or pseudo file system). */
export class OutputDirectoryError extends Error {
  readonly code = 'ERR_OUTPUT_DIRECTORY';
  constructor(
    /** What the directory is for, as the user named it: `output directory`, `store`. */
    readonly role: string,
    readonly dir: string,
    readonly problem: string,
  ) {
    super(`${role} ${dir}: ${problem}`);
    this.name = 'OutputDirectoryError';
  }
}

function errnoProblem(error: unknown): string {
  const { code, message } = error as NodeJS.ErrnoException;
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EROFS') return 'read-only file system';
  if (code === 'ENAMETOOLONG') return 'name too long';
  return typeof code === 'string' ? `${code} (${message})` : String(message);
}

/**
 * Creates `dir` and its missing parents one level at a time, from the deepest that exists. Not
 * `mkdir(dir, { recursive: true })`: Node 20's recursive mkdir retries forever, deaf to signals, where
 * a parent refuses every new entry with ENOENT (`-o /proc/x`). A path that exists and is not a
 * directory, or that cannot be created, is an {@link OutputDirectoryError} naming `role`.
 */
export async function makeDirectory(dir: string, role: string): Promise<void> {
  const target = path.resolve(dir);
  const missing: string[] = [];
  for (let at = target; ; at = path.dirname(at)) {
    const found = await stat(at).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw new OutputDirectoryError(role, dir, error.code === 'ENOTDIR' ? 'a parent is not a directory' : errnoProblem(error));
    });
    if (found !== undefined) {
      if (!found.isDirectory()) throw new OutputDirectoryError(role, dir, at === target ? 'exists and is not a directory' : `${at} is not a directory`);
      break;
    }
    missing.push(at);
    if (path.dirname(at) === at) break;
  }
  for (const level of missing.reverse()) {
    try {
      await mkdir(level);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // Made meanwhile by a concurrent build into the same directory.
      if (code === 'EEXIST' && (await stat(level).catch(() => undefined))?.isDirectory() === true) continue;
      throw new OutputDirectoryError(role, dir, code === 'ENOENT' ? `cannot create ${level} (its parent takes no new entries)` : errnoProblem(error));
    }
  }
}
