#!/usr/bin/env node
// Writes oclif.manifest.json after `tsc`. With it, oclif imports only the command that runs; without
// it, oclif imports every command module (and with them the reader, mount, FUSE and sharing code) to
// learn their names and flags, on every start. oclif's own generator is in the `oclif` package, a large
// dev tool; @oclif/core's Plugin builds the same manifest.
import { writeFileSync } from 'node:fs';
import { Plugin } from '@oclif/core';

const root = new URL('..', import.meta.url);
const plugin = new Plugin({ root: root.pathname, type: 'core', ignoreManifest: true, errorOnManifestCreate: true });
await plugin.load();
writeFileSync(new URL('oclif.manifest.json', root), `${JSON.stringify(plugin.manifest)}\n`);
