import { spawn } from 'node:child_process';

export interface CommandResult {
  /** Exit status; -1 when killed by a signal. */
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a system tool (mount, losetup, umount) without a shell and collects its output. LC_ALL=C so
 * that messages we match ("busy", "not mounted") are not translated. Rejects only when the tool
 * cannot be started at all.
 */
export function runTool(command: string, args: readonly string[]): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (error) => reject(new Error(`cannot run ${command}: ${error.message}`, { cause: error })));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
  });
}

/** Shell-like rendering of a command line, for messages. */
export function formatCommand(command: string, args: readonly string[]): string {
  return [command, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

async function kernelLog(): Promise<string[] | undefined> {
  const r = await runTool('dmesg', []).catch(() => undefined);
  return r === undefined || r.code !== 0 ? undefined : r.stdout.split('\n').filter((line) => line !== '');
}

/** Where the kernel log ends now (its last line), for {@link kernelMessageSince}. */
export async function kernelLogMark(): Promise<string | undefined> {
  const lines = await kernelLog();
  return lines?.[lines.length - 1];
}

/**
 * The last kernel log line after `mark` that comes from one of `subsystems` ("erofs", "overlayfs"):
 * mount(8) of util-linux 2.38 only says "wrong fs type, bad option", the kernel's own reason
 * ("erofs: Unknown parameter 'inode_share'") is in dmesg. Undefined when dmesg is not readable.
 */
export async function kernelMessageSince(mark: string | undefined, subsystems: readonly string[]): Promise<string | undefined> {
  const lines = await kernelLog();
  if (lines === undefined) return undefined;
  // The ring buffer may have wrapped past the mark: then every line is new.
  const at = mark === undefined ? -1 : lines.lastIndexOf(mark);
  const fresh = lines.slice(at + 1);
  const wanted = fresh.filter((line) => subsystems.some((s) => line.includes(`${s}:`) || line.includes(`${s} (`)));
  // "[ 3024.896311] erofs: Unknown parameter 'inode_share'" -> "erofs: Unknown parameter 'inode_share'"
  return wanted[wanted.length - 1]?.replace(/^\[[^\]]*\]\s*/, '').trim();
}
