/**
 * The `execArgv` our worker threads start with: the process's own, minus what only concerns a script
 * given on the command line (`--input-type`, `-e`/`--eval`, `-p`/`--print`). Workers inherit
 * `execArgv`, and with `--input-type` a worker started from a file fails at once
 * (ERR_INPUT_TYPE_NOT_ALLOWED), so `node --input-type=module -e "...build(...)"` could not build.
 * `undefined` (inherit) when there is nothing to strip: a Worker given `execArgv` explicitly rejects
 * process-wide and V8 flags (`--perf-basic-prof`, ...) that it accepts when it inherits them.
 */
export function workerExecArgv(): string[] | undefined {
  const kept: string[] = [];
  const args = process.execArgv;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--input-type' || arg === '-e' || arg === '--eval' || arg === '-p' || arg === '--print') {
      i++; // and its value
      continue;
    }
    if (arg.startsWith('--input-type=') || arg.startsWith('--eval=') || arg.startsWith('--print=')) continue;
    kept.push(arg);
  }
  return kept.length === args.length ? undefined : kept;
}

/**
 * Limits for our worker threads. They allocate little that lives (their data is in transferred
 * buffers), so a young generation of 4 MiB does them, where V8's default grows it to tens of MiB
 * of resident memory per thread. Measured with the other memory changes of its commit (see
 * CHANGELOG); the build's time did not change.
 */
export const WORKER_RESOURCE_LIMITS = { maxYoungGenerationSizeMb: 4 } as const;

