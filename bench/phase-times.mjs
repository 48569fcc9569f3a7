#!/usr/bin/env node
// Where a build's time goes, in process (no CLI start-up): wall time and main-thread CPU time of each
// layer and of the image's finish (building the object indexes, metadata planning and emitting, waiting for
// the blob fsync), and of the whole build. Main-thread CPU is read from /proc (the workers' time is not in it).
//
// Usage: node bench/phase-times.mjs SOURCE OUTDIR [RUNS]     (after `npm run build`; OUTDIR is replaced)
import { rmSync } from 'node:fs';
import { build } from '../dist/src/build/build.js';
import { ImageBuilder } from '../dist/src/build/imageBuilder.js';
import { mainThreadCpuMs } from './mainThreadCpu.mjs';

const [source, outDir, runsArg] = process.argv.slice(2);
if (!source || !outDir) {
  console.error('usage: node bench/phase-times.mjs SOURCE OUTDIR [RUNS]');
  process.exit(2);
}
let phases = [];
const timed = (name, original) =>
  async function (...args) {
    const wall = performance.now();
    const cpu = mainThreadCpuMs();
    try {
      return await original.apply(this, args);
    } finally {
      phases.push(`${name} ${(performance.now() - wall).toFixed(0)} ms wall / ${mainThreadCpuMs() - cpu} ms cpu`);
    }
  };
ImageBuilder.prototype.layer = timed('layer', ImageBuilder.prototype.layer);
ImageBuilder.prototype.finish = timed('finish', ImageBuilder.prototype.finish);
for (let run = 1; run <= Number(runsArg ?? 1); run++) {
  rmSync(outDir, { recursive: true, force: true });
  phases = [];
  const wall = performance.now();
  const cpu = mainThreadCpuMs();
  await build([source], { outputDir: outDir });
  console.log(`run ${run}: ${phases.join(', ')}; build ${(performance.now() - wall).toFixed(0)} ms wall / ${mainThreadCpuMs() - cpu} ms cpu`);
}
rmSync(outDir, { recursive: true, force: true });
