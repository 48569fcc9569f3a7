#!/usr/bin/env node
// oclif's execute from the CLI bundle (src/cli.ts, scripts/bundle.mjs), not from @oclif/core: one file
// to load where a start loaded 165 (oclif, its dependencies and, for a command, our modules). oclif then
// finds the commands in that same module (package.json's oclif.commands): one copy of oclif in the process.
import { execute } from '../dist/src/cli.js';

await execute({ dir: import.meta.url });
