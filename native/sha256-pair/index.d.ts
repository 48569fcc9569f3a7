/** Whether this CPU has the SHA extensions; when false, every other export throws. */
export const available: boolean;
/** Size of a digest state: a Uint8Array of this many bytes, owned by the caller. */
export const stateBytes: number;
/** Starts a new SHA-256 in `state`. */
export function init(state: Uint8Array): void;
/** Adds `bytes` to the digest in `state`. */
export function update(state: Uint8Array, bytes: Uint8Array): void;
/** Adds the same `bytes` to two digests (in one pass when both stand at a 64-byte block boundary). */
export function updatePair(a: Uint8Array, b: Uint8Array, bytes: Uint8Array): void;
/** Writes the digest of `state` into `out` (32 bytes); the state must be `init`ed again before reuse. */
export function digest(state: Uint8Array, out: Uint8Array): void;
