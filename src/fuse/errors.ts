/** The FUSE daemon could not be started or reached, or refused a request. */
export class FuseDaemonError extends Error {
  readonly code = 'ERR_FUSE_DAEMON';
  constructor(readonly runtimeDir: string, detail: string) {
    super(`FUSE daemon (runtime directory ${runtimeDir}): ${detail.split('\n')[0]}`);
    this.name = 'FuseDaemonError';
  }
}

/** /dev/fuse is missing or cannot be opened (no fuse module, or a container without the device). */
export class FuseUnavailableError extends Error {
  readonly code = 'ERR_FUSE_UNAVAILABLE';
  constructor(detail: string) {
    super(`FUSE is not available: ${detail.split('\n')[0]}`);
    this.name = 'FuseUnavailableError';
  }
}
