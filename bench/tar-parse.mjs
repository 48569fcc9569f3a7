#!/usr/bin/env node
// The tar reader's own cost: main-thread CPU of iterating a layer tarball's entries with
// readLayerEntries (bodies skipped, nothing stored), for one or more builds of dist/ (this checkout's,
// or copies of other revisions' placed inside the repository so that node_modules resolves), run
// alternately, medians. CPU of the main thread alone (from /proc), so the file reads on libuv's
// threads are not in it; a conversion runs this on its busiest thread, once per entry.
//
// Usage: node bench/tar-parse.mjs LAYER.tar [RUNS] [DIST_DIR...]   (default: RUNS=10, DIST_DIR=dist)
import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { mainThreadCpuMs } from './mainThreadCpu.mjs';

const [layer, runsArg, ...distArgs] = process.argv.slice(2);
if (process.env.TAR_PARSE_CHILD !== undefined) {
  // One measurement, in a fresh process: the reader's code is as cold as in a conversion.
  const { readLayerEntries } = await import(path.resolve(process.env.TAR_PARSE_CHILD, 'src/oci/index.js'));
  const before = mainThreadCpuMs();
  let entries = 0;
  for await (const _entry of readLayerEntries(createReadStream(layer, { highWaterMark: 1 << 20 }), layer)) entries++;
  console.log(JSON.stringify({ cpuMs: mainThreadCpuMs() - before, entries }));
  process.exit(0);
}
if (!layer) {
  console.error('usage: node bench/tar-parse.mjs LAYER.tar [RUNS] [DIST_DIR...]');
  process.exit(2);
}
const runs = Number(runsArg ?? 10);
const dists = distArgs.length > 0 ? distArgs : ['dist'];
const samples = new Map(dists.map((dist) => [dist, []]));
let entries;
for (let run = 0; run < runs; run++) {
  // Order reversed every other round, as the other bench scripts do.
  for (const dist of run % 2 === 0 ? dists : [...dists].reverse()) {
    const out = execFileSync(process.execPath, [new URL(import.meta.url).pathname, layer], { env: { ...process.env, TAR_PARSE_CHILD: dist } });
    const result = JSON.parse(out.toString());
    entries = result.entries;
    samples.get(dist).push(result.cpuMs);
  }
}
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
console.log(`${layer}: ${entries} entries, ${runs} runs per build, main-thread CPU ms (10 ms ticks)`);
for (const [dist, values] of samples) console.log(`${dist}: median ${median(values)}, min ${Math.min(...values)}, max ${Math.max(...values)}`);
