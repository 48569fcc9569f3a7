/** A build option the user gave that cannot work; the message says which and what is allowed. */
export class InvalidOptionError extends Error {
  readonly code = 'ERR_INVALID_OPTION';
  constructor(readonly option: string, problem: string) {
    super(`${option}: ${problem}`);
    this.name = 'InvalidOptionError';
  }
}
