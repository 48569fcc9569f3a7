/** A build option the user gave that cannot work; the message says which and what is allowed. */
export class InvalidOptionError extends Error {
  readonly code = 'ERR_INVALID_OPTION';
  constructor(readonly option: string, problem: string) {
    super(`${option}: ${problem}`);
    this.name = 'InvalidOptionError';
  }
}

/** The build was stopped by a signal; what it had written was removed. */
export class BuildInterruptedError extends Error {
  readonly code = 'ERR_BUILD_INTERRUPTED';
  constructor(readonly signal: string) {
    super(`build interrupted by ${signal}; partial outputs removed`);
    this.name = 'BuildInterruptedError';
  }
}

/** A source file shrank while it was read: its data would not match its size. */
export class SourceChangedError extends Error {
  readonly code = 'ERR_SOURCE_CHANGED';
  constructor(readonly sourcePath: string, expectedBytes: number, gotBytes: number) {
    super(`${sourcePath}: file shrank while being read (expected ${expectedBytes} bytes, got ${gotBytes})`);
    this.name = 'SourceChangedError';
  }
}
