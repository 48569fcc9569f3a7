#!/usr/bin/env node
// The chunk thread's two SHA-256 digests (a file's content and its blob) over the same bytes: node:crypto
// (OpenSSL) computing both one after the other, against native/sha256-pair computing both in one pass
// (and one digest of each, for scale). Medians of RUNS runs over SIZE_MB of random bytes in 1 MiB pieces,
// alternating. Also checks that both give the same digests.
//
// Usage: node bench/sha256-pair.mjs [SIZE_MB=1024] [RUNS=5]     (after `npm run build`)
import { createHash, randomBytes } from 'node:crypto';
import { createSha256 } from '../dist/src/build/sha256.js';

const sizeMb = Number(process.argv[2] ?? 1024);
const runs = Number(process.argv[3] ?? 5);
const piece = randomBytes(1 << 20);
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

function time(fn) {
  const start = process.hrtime.bigint();
  const digests = fn();
  return { ms: Number(process.hrtime.bigint() - start) / 1e6, digests };
}
const ways = {
  'node:crypto, one digest': () => {
    const a = createHash('sha256');
    for (let i = 0; i < sizeMb; i++) a.update(piece);
    return [a.digest('hex')];
  },
  'node:crypto, two digests': () => {
    const a = createHash('sha256');
    const b = createHash('sha256');
    for (let i = 0; i < sizeMb; i++) {
      a.update(piece);
      b.update(piece);
    }
    return [a.digest('hex'), b.digest('hex')];
  },
  'sha256-pair, one digest': () => {
    const a = createSha256('sha-extensions');
    for (let i = 0; i < sizeMb; i++) a.update(piece);
    return [a.digest().toString('hex')];
  },
  'sha256-pair, two digests in one pass': () => {
    const a = createSha256('sha-extensions');
    const b = createSha256('sha-extensions');
    for (let i = 0; i < sizeMb; i++) a.updateWith(b, piece);
    return [a.digest().toString('hex'), b.digest().toString('hex')];
  },
};
const times = Object.fromEntries(Object.keys(ways).map((name) => [name, []]));
const seen = new Set();
for (let run = 0; run < runs; run++) {
  for (const [name, fn] of Object.entries(ways)) {
    const { ms, digests } = time(fn);
    times[name].push(ms);
    digests.forEach((d) => seen.add(d));
  }
}
if (seen.size !== 1) throw new Error(`the implementations disagree: ${[...seen].join(', ')}`);
console.log(`${sizeMb} MiB, ${runs} runs each, node ${process.version}; every digest equal`);
console.log('| way | median ms | MB/s per digest |');
console.log('|---|---:|---:|');
for (const [name, values] of Object.entries(times)) {
  const ms = median(values);
  const digests = name.includes('two') ? 2 : 1;
  console.log(`| ${name} | ${ms.toFixed(0)} | ${((sizeMb * 1.048576 * digests) / (ms / 1000)).toFixed(0)} |`);
}
const ratio = median(times['sha256-pair, two digests in one pass']) / median(times['node:crypto, two digests']);
console.log(`two digests, sha256-pair / node:crypto: ${ratio.toFixed(2)}x`);
