#!/usr/bin/env node
// The "bare Node pipeline", the scale it sets for a layer converter: the layer file read as a
// stream, its SHA-256 (the layer digest), gunzip when it is gzip, the SHA-256 of the tar (the
// diff_id), tar-stream parsing the entries, BLAKE3 of every 1 MiB chunk of every file, and the
// chunks written block-aligned into one blob file. No tree, no metadata image, no dedup lookups, no
// per-file content digest, no blob digest and no fsync: a floor for what a Node converter can do on
// this machine, not a converter. bench/layer-vs-mkfs.sh times it beside ours and mkfs.erofs.
//
// Usage: node bench/bare-pipeline.mjs LAYER.tar[.gz] BLOB_OUT
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, openSync, writeSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import tar from 'tar-stream';

const [layer, blobPath] = process.argv.slice(2);
if (!layer || !blobPath) {
  console.error('usage: node bench/bare-pipeline.mjs LAYER.tar[.gz] BLOB_OUT');
  process.exit(2);
}
const CHUNK_BYTES = 1 << 20;
const BLOCK_BYTES = 4096;
const fd = openSync(blobPath, 'w');
let blobBytes = 0;
let chunks = 0;
let files = 0;
const layerDigest = createHash('sha256');
const diffId = createHash('sha256');
const extract = tar.extract();
extract.on('entry', (header, stream, next) => {
  let inChunk = 0;
  let hasher = new Blake3Hasher();
  const endChunk = () => {
    hasher.digest('hex');
    chunks++;
    const pad = (BLOCK_BYTES - (blobBytes % BLOCK_BYTES)) % BLOCK_BYTES;
    if (pad > 0) blobBytes += writeSync(fd, Buffer.alloc(pad), 0, pad, blobBytes);
    hasher = new Blake3Hasher();
    inChunk = 0;
  };
  stream.on('data', (data) => {
    for (let at = 0; at < data.length; ) {
      const piece = data.subarray(at, at + Math.min(data.length - at, CHUNK_BYTES - inChunk));
      hasher.update(piece);
      blobBytes += writeSync(fd, piece, 0, piece.length, blobBytes);
      inChunk += piece.length;
      at += piece.length;
      if (inChunk === CHUNK_BYTES) endChunk();
    }
  });
  stream.on('end', () => {
    if (header.type === 'file') files++;
    if (inChunk > 0) endChunk();
    next();
  });
});
const tap = (hash) =>
  async function* (source) {
    for await (const chunk of source) {
      hash.update(chunk);
      yield chunk;
    }
  };
const stages = [createReadStream(layer, { highWaterMark: 1 << 20 }), tap(layerDigest)];
if (/\.(gz|tgz)$/.test(layer)) stages.push(createGunzip({ chunkSize: 1 << 20 }));
stages.push(tap(diffId), extract);
await pipeline(...stages);
closeSync(fd);
console.log(JSON.stringify({ files, chunks, blobBytes, layerDigest: layerDigest.digest('hex'), diffId: diffId.digest('hex') }));
