/** Typed errors of `erofs verify-sharing`; one actionable line each. */

/** The `--trace` file cannot be read. */
export class TraceFileError extends Error {
  readonly code = 'ERR_TRACE_FILE';
  constructor(
    readonly path: string,
    problem: string,
  ) {
    super(`--trace ${path}: ${problem}`);
    this.name = 'TraceFileError';
  }
}

/** A measurement could not be made (no memory cgroup, the command failed in the container...). */
export class MeasureError extends Error {
  readonly code = 'ERR_MEASURE_FAILED';
  constructor(problem: string) {
    super(`verify-sharing --measure: ${problem}`);
    this.name = 'MeasureError';
  }
}

/** Measuring mounts images and makes cgroups: root only. */
export class MeasureNotRootError extends Error {
  readonly code = 'ERR_NOT_ROOT';
  constructor() {
    super('verify-sharing --measure needs root (it mounts images, makes memory cgroups and drops caches): run it as root, e.g. with sudo');
    this.name = 'MeasureNotRootError';
  }
}
