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
  const missing: string[] = [];
  let at = path.resolve(dir);
  for (;;) {
    let isDirectory: boolean;
    try {
      isDirectory = (await stat(at)).isDirectory();
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOTDIR') throw new OutputDirectoryError(role, dir, 'a parent is not a directory');
      if (code !== 'ENOENT') throw new OutputDirectoryError(role, dir, errnoProblem(error));
      missing.push(at);
      const parent = path.dirname(at);
      if (parent === at) break;
      at = parent;
      continue;
    }
    if (!isDirectory) throw new OutputDirectoryError(role, dir, at === path.resolve(dir) ? 'exists and is not a directory' : `${at} is not a directory`);
    break;
  }
  for (const level of missing.reverse()) {
    try {
      await mkdir(level);
    } catch (error) {
      // Made meanwhile by a concurrent build into the same directory.
      if ((error as NodeJS.ErrnoException).code === 'EEXIST' && (await stat(level).catch(() => undefined))?.isDirectory() === true) continue;
      const code = (error as NodeJS.ErrnoException).code;
      throw new OutputDirectoryError(role, dir, code === 'ENOENT' ? `cannot create ${level} (its parent takes no new entries)` : errnoProblem(error));
    }
  }
}
