/**
 * The CLI's entry module: oclif's `execute` and every command, under the ids oclif knows them by.
 *
 * `npm run build` bundles this module and everything it imports (oclif and its dependencies
 * included; native addons excluded) into one file, `dist/src/cli.js`, over the one tsc wrote
 * (scripts/bundle.mjs). Why: `--version` loaded 165 module files (65 of them oclif's), a build 226
 * (62 of ours), and resolving and reading them one by one was a large part of a start; now they are
 * 2 and 16 (the chunk thread's modules and the native addons).
 *
 * bin/run.js imports `execute` from here, and package.json's `oclif.commands` (strategy `explicit`)
 * points oclif at `COMMANDS` in this same file, so oclif finds the commands in the module already
 * loaded: one copy of oclif, no other file to import. oclif no longer lists src/commands: a new
 * command goes into `COMMANDS` (test/cli.test.ts checks that none is missing).
 *
 * Without the bundling step (tsc alone) this file still works as it stands, importing the modules
 * one by one.
 */
import type { Command } from '@oclif/core';
import Build from './commands/build.js';
import Buildkit from './commands/buildkit.js';
import Inspect from './commands/inspect.js';
import Mount from './commands/mount.js';
import Pull from './commands/pull.js';
import Umount from './commands/umount.js';
import VerifySharing from './commands/verify-sharing.js';

export { execute } from '@oclif/core';

/** Command id -> command class; the ids are those oclif derived from the file names of src/commands. */
export const COMMANDS: Record<string, Command.Class> = {
  build: Build,
  buildkit: Buildkit,
  inspect: Inspect,
  mount: Mount,
  pull: Pull,
  umount: Umount,
  'verify-sharing': VerifySharing,
};
