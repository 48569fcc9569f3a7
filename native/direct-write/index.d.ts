/** A file descriptor being written by a background thread; its memory is freed with the value or by `close`. */
export type DirectWriter = { readonly __directWriter: unique symbol };
/**
 * Starts writing `fd` (opened for writing by the caller, who keeps it): tries to switch it to
 * O_DIRECT and reports whether it did; writes fall back to the page cache where the file system
 * refuses direct I/O. `slotBytes` (a multiple of 4096) is the most one submit takes;
 * `slots` writes may be queued at once.
 */
export function open(fd: number, slotBytes: number, slots: number): { writer: DirectWriter; direct: boolean };
/**
 * Queues `bytes` (copied) to be written at `positionBytes` (length and position multiples of 4096),
 * waiting while every slot is queued.
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
