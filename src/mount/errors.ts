/**
 * Typed errors of `erofs mount` / `erofs umount` / `verify-sharing --measure`. Each message is one
 * line that says what failed and what to do about it; `code` lets the CLI tell them from bugs.
 */

/** Mounting needs root (CAP_SYS_ADMIN for mount(2), and loop-control for loop devices). */
export class NotRootError extends Error {
  readonly code = 'ERR_NOT_ROOT';
  constructor(readonly action: string) {
    super(`${action} needs root (mount(2) and loop devices require CAP_SYS_ADMIN): run it as root, e.g. with sudo`);
    this.name = 'NotRootError';
  }
}

/** A command the kernel side depends on (mount, losetup, umount) failed; carries its output and the kernel's reason when dmesg has one. */
export class KernelCommandError extends Error {
  readonly code = 'ERR_MOUNT_FAILED';
  constructor(
    readonly command: string,
    readonly output: string,
    readonly kernelMessage?: string,
  ) {
    const why = [output.trim().split('\n')[0], kernelMessage].filter((s) => s !== undefined && s !== '').join('; kernel: ');
    super(`${command} failed: ${why || 'no output'}`);
    this.name = 'KernelCommandError';
  }
}

/** `--mechanism X` was forced but the running kernel cannot do X. */
export class MechanismUnavailableError extends Error {
  readonly code = 'ERR_MECHANISM_UNAVAILABLE';
  constructor(
    readonly mechanism: string,
    readonly reason: string,
  ) {
    super(`mechanism ${mechanism} is not available here: ${reason}; use --mechanism auto to pick the best one this kernel has`);
    this.name = 'MechanismUnavailableError';
  }
}

/** The mount point cannot be used: missing, not a directory, or already a mount point. */
export class MountpointError extends Error {
  readonly code = 'ERR_MOUNTPOINT';
  constructor(
    readonly mountpoint: string,
    readonly problem: string,
  ) {
    super(`${mountpoint}: ${problem}`);
    this.name = 'MountpointError';
  }
}

/** `erofs umount` of a directory that no `erofs mount` (with this runtime directory) made. */
export class NotMountedError extends Error {
  readonly code = 'ERR_NOT_MOUNTED';
  constructor(
    readonly mountpoint: string,
    readonly runtimeDir: string,
  ) {
    super(`${mountpoint}: not mounted by erofs mount (runtime directory ${runtimeDir}); see erofs mount --list`);
    this.name = 'NotMountedError';
  }
}

/** The image's mount is in use (open files, a process's cwd); nothing was changed. */
export class MountBusyError extends Error {
  readonly code = 'ERR_MOUNT_BUSY';
  constructor(readonly mountpoint: string) {
    super(`${mountpoint}: target is busy (a process has files open or its working directory there); stop it and retry`);
    this.name = 'MountBusyError';
  }
}

/** Another live process holds the runtime directory's lock for longer than we wait. */
export class StateLockedError extends Error {
  readonly code = 'ERR_STATE_LOCKED';
  constructor(
    readonly lockPath: string,
    readonly ownerPid: number,
    readonly waitedMs: number,
  ) {
    super(`${lockPath}: held by running process ${ownerPid} for over ${Math.round(waitedMs / 1000)} s; wait for it to finish (a dead owner's lock is taken over automatically)`);
    this.name = 'StateLockedError';
  }
}

/** The state file exists but is not ours or not readable JSON; it is never guessed at. */
export class StateCorruptError extends Error {
  readonly code = 'ERR_STATE_CORRUPT';
  constructor(
    readonly statePath: string,
    readonly problem: string,
  ) {
    super(`${statePath}: ${problem}; unmount by hand (see /proc/self/mountinfo and losetup -l) and remove the file`);
    this.name = 'StateCorruptError';
  }
}

/** A file the mount needs (a blob, an object index) is not in the store. */
export class ArtifactNotFoundError extends Error {
  readonly code = 'ERR_ARTIFACT_NOT_FOUND';
  constructor(
    readonly what: string,
    readonly path: string,
    readonly hint: string,
  ) {
    super(`${what} not found at ${path}: ${hint}`);
    this.name = 'ArtifactNotFoundError';
  }
}

/** An option value that cannot work (e.g. a runtime directory whose path overlayfs cannot take). */
export class InvalidMountOptionError extends Error {
  readonly code = 'ERR_INVALID_OPTION';
  constructor(
    readonly option: string,
    problem: string,
  ) {
    super(`${option}: ${problem}`);
    this.name = 'InvalidMountOptionError';
  }
}
