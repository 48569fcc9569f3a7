import { spawn } from 'node:child_process';

export interface RunResult {
  /** Exit status; -1 when the process was killed by a signal. */
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout and stderr interleaved in arrival order (what a person would have seen). */
  output: string;
}

export interface RunOptions {
  cwd?: string;
  /** Written to the child's stdin, which is then closed. Without it stdin is /dev/null. */
  input?: string | Buffer;
  /** Decoding of stdout/stderr. 'latin1' keeps bytes 1:1 (for tools that print raw file names). */
  encoding?: BufferEncoding;
}

/** Runs a command without a shell and collects its output. Rejects only if it could not be started. */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const encoding = options.encoding ?? 'utf8';
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    const both: Buffer[] = [];
    // Both are pipes (see stdio above); the spawn typings cannot tell from a computed stdio array.
    child.stdout?.on('data', (b: Buffer) => { stdout.push(b); both.push(b); });
    child.stderr?.on('data', (b: Buffer) => { stderr.push(b); both.push(b); });
    child.on('error', (err) => reject(new Error(`cannot run ${command}: ${err.message}`, { cause: err })));
    child.on('close', (code, signal) => {
      resolve({
        code: code ?? -1,
        signal,
        stdout: Buffer.concat(stdout).toString(encoding),
        stderr: Buffer.concat(stderr).toString(encoding),
        output: Buffer.concat(both).toString(encoding),
      });
    });
    if (options.input !== undefined && child.stdin) {
      child.stdin.on('error', () => { /* the child may exit without reading; its exit status tells */ });
      child.stdin.end(options.input);
    }
  });
}

/** Shell-like rendering of a command line, for error messages. */
export function formatCommand(command: string, args: readonly string[]): string {
  return [command, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** The end of a command's output, enough to see why it failed without drowning a test report. */
export function tail(output: string, maxChars = 4000): string {
  const trimmed = output.trimEnd();
  return trimmed.length <= maxChars ? trimmed : `[... ${trimmed.length - maxChars} characters cut ...]${trimmed.slice(-maxChars)}`;
}

/** Like {@link run} but rejects, with the command line and its output, unless it exits 0. */
export async function runChecked(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    const status = result.signal ? `was killed by ${result.signal}` : `exited ${result.code}`;
    throw new Error(`${formatCommand(command, args)} ${status}:\n${tail(result.output)}`);
  }
  return result;
}
