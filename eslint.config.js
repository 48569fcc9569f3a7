// Lint rules that guard the architecture (docs/architecture.md in ../shared): no import cycles, and
// each folder imports only what its row of the table allows. Style is left to the compiler's strict
// checks; these rules catch what the compiler cannot.
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

/** Folder -> folders of ours it may not import (everything not listed is allowed). */
const FORBIDDEN = {
  format: ['read', 'oci', 'build', 'store', 'share', 'mount', 'fuse', 'buildkit', 'commands', 'cli', 'util'],
  read: ['oci', 'build', 'store', 'share', 'mount', 'fuse', 'buildkit', 'commands', 'cli'],
  oci: ['format', 'read', 'build', 'store', 'share', 'mount', 'fuse', 'buildkit', 'commands', 'cli'],
  store: ['read', 'oci', 'build', 'share', 'mount', 'fuse', 'buildkit', 'commands', 'cli'],
  build: ['read', 'share', 'mount', 'fuse', 'buildkit', 'commands', 'cli'],
  share: ['oci', 'build', 'store', 'mount', 'fuse', 'buildkit', 'commands', 'cli'],
  mount: ['oci', 'build', 'share', 'fuse', 'buildkit', 'commands', 'cli'],
  fuse: ['oci', 'build', 'share', 'buildkit', 'commands', 'cli'],
  util: ['format', 'read', 'oci', 'build', 'store', 'share', 'mount', 'fuse', 'buildkit', 'commands', 'cli'],
};

export default [
  { ignores: ['dist/**', 'node_modules/**', 'bench/**', 'bin/**', 'out/**', 'eslint.config.js'] },
  {
    files: ['src/**/*.ts', 'test/**/*.ts'],
    languageOptions: { parser: tseslint.parser, parserOptions: { sourceType: 'module' } },
    plugins: { 'import-x': importX },
    settings: { 'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })] },
    rules: { 'import-x/no-cycle': ['error', { ignoreExternal: true }] },
  },
  ...Object.entries(FORBIDDEN).map(([folder, forbidden]) => ({
    files: [`src/${folder}/**/*.ts`],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: forbidden.map((other) => ({ group: [`**/${other}/*`, `../${other}/*`, `../../${other}/*`], message: `src/${folder} may not import src/${other} (see the architecture table)` })) },
      ],
    },
  })),
];
