#!/usr/bin/env node
const t0 = performance.now();
const { execute } = await import('../dist/src/cli.js');
const t1 = performance.now();
await execute({ dir: new URL('./run.js', import.meta.url).href });
const t2 = performance.now();
process.on('exit', () => process.stderr.write(`node-start-to-run.js ${t0.toFixed(0)} import ${(t1 - t0).toFixed(0)} execute ${(t2 - t1).toFixed(0)} exit-at ${performance.now().toFixed(0)}\n`));
