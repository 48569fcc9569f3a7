import { createRequire } from 'node:module';
import type zstd from 'zstd-napi/binding.js';

type ZstdBinding = typeof zstd;
let binding: ZstdBinding | undefined;

/**
 * zstd-napi's native binding, loaded when a zstd layer is met: loading a native addon took about
 * 25 ms of every start, and most builds read no zstd.
 */
export function zstdBinding(): ZstdBinding {
  binding ??= createRequire(import.meta.url)('zstd-napi/binding.js') as ZstdBinding;
  return binding;
}
