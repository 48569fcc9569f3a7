/**
 * Raised when an image's chunk data lives on an extra device that was neither given nor found, or
 * when the devices given do not fit the image's device table. It is not corruption (the image may be
 * fine, the blob is just elsewhere) and not an unsupported feature, hence its own class; it names the
 * image, the device slot and its tag so the CLI can say which blob to pass.
 */
export class DeviceUnavailableError extends Error {
  readonly code = 'ERR_EROFS_DEVICE_UNAVAILABLE';
  constructor(
    readonly problem: string,
    readonly image: string,
    /** 1-based device id (device-table slot + 1), when the problem concerns one slot. */
    readonly deviceId?: number,
    readonly tag?: string,
  ) {
    const slot = deviceId === undefined ? '' : `device ${deviceId}${tag === undefined ? '' : ` (tag ${tag === '' ? 'empty' : JSON.stringify(tag)})`}: `;
    super(`${image}: ${slot}${problem}`);
    this.name = 'DeviceUnavailableError';
  }
}

/** A path given to `lookup` does not name an entry of the image (or passes through a non-directory). */
export class PathNotFoundError extends Error {
  readonly code = 'ERR_EROFS_PATH_NOT_FOUND';
  constructor(
    readonly path: string,
    readonly reason: string,
    readonly image: string,
  ) {
    super(`${image}: ${path}: ${reason}`);
    this.name = 'PathNotFoundError';
  }
}
