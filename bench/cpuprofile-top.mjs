#!/usr/bin/env node
// Summarizes a V8 .cpuprofile (from `node --cpu-prof`): top functions by self time, and self time
// grouped by script (our dist/ files, node internals, dependencies).
//
// Usage: node bench/cpuprofile-top.mjs FILE.cpuprofile [TOP_N]
import { readFileSync } from 'node:fs';

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/cpuprofile-top.mjs FILE.cpuprofile [TOP_N]');
  process.exit(2);
}
const top = Number(topArg ?? 25);
const profile = JSON.parse(readFileSync(file, 'utf8'));
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));

// Self time per node: each sample is attributed to one node; timeDeltas[i] is the time before sample i.
const selfUs = new Map();
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i];
  const dt = profile.timeDeltas[i + 1] ?? 0; // time until the next sample belongs to this one
  selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
}
const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0);

function shortUrl(url) {
  if (!url) return '';
  const m = url.match(/\/(dist\/.*|node_modules\/.*)$/);
  return m ? m[1] : url.replace(/^file:\/\//, '');
}
function label(n) {
  const cf = n.callFrame;
  const name = cf.functionName || '(anonymous)';
  const where = shortUrl(cf.url);
  return where ? `${name}  ${where}:${cf.lineNumber + 1}` : name;
}

const byFunction = new Map();
const byScript = new Map();
for (const [id, us] of selfUs) {
  const n = nodes.get(id);
  const key = label(n);
  byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  const url = n.callFrame.url;
  const group = !url
    ? n.callFrame.functionName.startsWith('(') ? n.callFrame.functionName : '(native / builtin)'
    : url.startsWith('node:')
      ? 'node: internals'
      : url.includes('/node_modules/')
        ? 'node_modules/' + url.split('/node_modules/').pop().split('/').slice(0, url.includes('/node_modules/@') ? 2 : 1).join('/')
        : shortUrl(url);
  byScript.set(group, (byScript.get(group) ?? 0) + us);
}

const pct = (us) => ((100 * us) / totalUs).toFixed(1).padStart(5) + '%';
const ms = (us) => (us / 1000).toFixed(0).padStart(7) + ' ms';
console.log(`profile: ${(totalUs / 1e6).toFixed(2)} s sampled (${profile.samples.length} samples)\n`);
console.log(`top ${top} functions by self time:`);
for (const [k, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms(us)} ${pct(us)}  ${k}`);
console.log('\nself time by script:');
for (const [k, us] of [...byScript].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms(us)} ${pct(us)}  ${k}`);
