/** A file descriptor being written by a background thread; its memory is freed with the value or by `close`. */
export type DirectWriter = { readonly __directWriter: unique symbol };
/**
 * Starts writing `fd` (opened for writing by the caller, who keeps it): tries to switch it to
 * O_DIRECT and reports whether it did; writes fall back to the page cache where the file system
 * refuses direct I/O. The writer owns `slots` buffers of `slotBytes` (a multiple of 4096) each,
 * aligned for direct I/O, handed out as ArrayBuffers: the caller fills them and submits views of them.
 * They are valid while the writer is reachable.
 */
export function open(fd: number, slotBytes: number, slots: number): { writer: DirectWriter; direct: boolean; slots: ArrayBuffer[] };
/**
 * Queues `bytes`, a view of one of the writer's slots (length, address and `positionBytes`
 * multiples of 4096), to be written from where it is: the caller leaves that slot alone until it is
 * written. Returns once fewer than `slots` writes are queued, so the slot queued before this one
 * (with two slots: the other one) is free again.
 * Throws the error of an earlier write (an Error with `code`, such as ENOSPC) if one failed.
 */
export function submit(writer: DirectWriter, bytes: Uint8Array, positionBytes: number): void;
/**
 * Waits for every queued write, then throws the first failure if there was one; with `buffered`,
 * also switches the descriptor back out of O_DIRECT (to read the file back through it).
 */
export function drain(writer: DirectWriter, buffered: boolean): void;
/** Stops the background thread (after the queued writes) and frees the slots; the descriptor stays open. */
export function close(writer: DirectWriter): void;
