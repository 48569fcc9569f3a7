/** A decompression state (ISA-L's inflate_state), freed with the value. */
export type GunzipState = { readonly __gunzipState: unique symbol };
/** A new state, ready for a gzip member's header. */
export function create(): GunzipState;
/** Makes `state` ready for the next gzip member. */
export function reset(state: GunzipState): void;
/**
 * Decompresses from `input` into `output` from `outputOffset`, until the input is used up, the
 * output is full or the member ends (its CRC-32 and length checked). `result` receives the input
 * bytes consumed, the output bytes produced, and 1 when the member ended. Corrupt input throws an
 * Error with code `ERR_GZIP_STREAM`.
 */
export function inflate(state: GunzipState, input: Uint8Array, output: Uint8Array, outputOffset: number, result: Uint32Array): void;
