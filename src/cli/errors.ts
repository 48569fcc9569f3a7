import type { Command } from '@oclif/core';
import { OCI_ERROR_CODES } from '../oci/errors.js';
import { REGISTRY_ERROR_CODES } from '../oci/registry/errors.js';

/** Error codes of our typed errors: these are the user's input or environment, not our bugs. */
const EXPECTED_CODES = new Set([
  'ERR_EROFS_CORRUPT',
  'ERR_EROFS_UNSUPPORTED',
  'ERR_EROFS_LIMIT',
  'ERR_INVALID_OPTION',
  'ERR_BUILD_INTERRUPTED',
  'ERR_INVALID_LAYER',
  'ERR_STORE',
  'ERR_SOURCE_READ',
  'ERR_SOURCE_CHANGED',
  'ERR_OUTPUT_DIRECTORY',
  // erofs mount / umount / verify-sharing (src/mount/errors.ts, src/share/errors.ts)
  'ERR_NOT_ROOT',
  'ERR_MOUNT_FAILED',
  'ERR_MECHANISM_UNAVAILABLE',
  'ERR_MOUNTPOINT',
  'ERR_NOT_MOUNTED',
  'ERR_MOUNT_BUSY',
  'ERR_STATE_LOCKED',
  'ERR_STATE_CORRUPT',
  'ERR_ARTIFACT_NOT_FOUND',
  'ERR_EROFS_DEVICE_UNAVAILABLE',
  'ERR_EROFS_PATH_NOT_FOUND',
  'ERR_MEASURE_FAILED',
  'ERR_TRACE_FILE',
  // erofs mount --fuse (src/fuse/errors.ts)
  'ERR_FUSE_DAEMON',
  'ERR_FUSE_UNAVAILABLE',
  'ENOENT',
  'EACCES',
  'EPERM',
  'ENOTDIR',
  'EISDIR',
  'ENOSPC',
]);

/**
 * Ends a command with one line on stderr and exit status 2. Known failures print their message;
 * anything else is a bug, reported as such (with the stack when DEBUG is set).
 */
export function reportError(command: Command, error: unknown): never {
  const err = error as NodeJS.ErrnoException;
  if (err !== null && typeof err === 'object' && 'oclif' in err) throw err;
  const code = typeof err?.code === 'string' ? err.code : undefined;
  const message = err instanceof Error ? err.message : String(error);
  // Written directly: oclif's error printer wraps long lines, and one line is what scripts grep.
  const bin = command.config.bin;
  const line = message.split('\n')[0]!;
  if (code !== undefined && (EXPECTED_CODES.has(code) || OCI_ERROR_CODES.includes(code) || REGISTRY_ERROR_CODES.includes(code))) {
    process.stderr.write(`${bin}: error: ${line}\n`);
    exitWith(command, 2, { code, message: line });
  }
  if (process.env.DEBUG) console.error(err?.stack);
  process.stderr.write(`${bin}: internal error (please report): ${line}\n`);
  exitWith(command, 70, { code: code ?? 'ERR_INTERNAL', message: line });
}

/**
 * Exits with `status`. Under --json, standard output also gets `{"error": {code, message}}`: oclif
 * would otherwise print its own exit exception there as the error and exit with 1, so a script
 * could tell neither what failed nor bad input (2) from a bug (70). Writes to pipes and files are
 * synchronous on Linux, so nothing is lost by exiting right after.
 */
function exitWith(command: Command, status: number, error: { code: string; message: string }): never {
  if (command.jsonEnabled()) {
    process.stdout.write(`${JSON.stringify({ error }, null, 2)}\n`);
    process.exit(status);
  }
  command.exit(status);
}
