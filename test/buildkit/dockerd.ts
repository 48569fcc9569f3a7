import { spawn, type ChildProcess } from 'node:child_process';
import { access, mkdtemp, open, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run, tail, type RunResult } from '../helpers/exec.js';

/**
 * Debian's docker.io client, by full path: another `docker` (a newer static client) may come first
 * on PATH, and the client must be the one that matches the daemon under test.
 */
export const DOCKER = '/usr/bin/docker';
export const DOCKERD = '/usr/sbin/dockerd';

export interface Dockerd {
  /** `unix:///...sock`, for `docker -H`. */
  host: string;
  /** The private directory holding data root, exec root, socket, pid file and log. */
  dir: string;
  storageDriver: string;
  /** Runs the docker client against this daemon (BuildKit on). */
  docker(args: readonly string[]): Promise<RunResult>;
}

/**
 * Starts a private dockerd (own data root, exec root, socket and pid file under a fresh /tmp
 * directory; no iptables, no bridge), runs `fn`, then stops it by PID and removes every trace:
 * the daemon and its containerd child are gone, nothing stays mounted below its directory.
 * overlay2 is tried first, vfs when the kernel or the file system refuses overlay.
 */
export async function withDockerd<T>(fn: (dockerd: Dockerd) => Promise<T>): Promise<T> {
  // Short: a unix socket path is limited to 108 bytes.
  const dir = await mkdtemp('/tmp/erofs-dockerd-');
  let daemon: ChildProcess | undefined;
  try {
    let started: { daemon: ChildProcess; driver: string } | undefined;
    const failures: string[] = [];
    for (const driver of ['overlay2', 'vfs']) {
      try {
        started = await start(dir, driver);
        break;
      } catch (error) {
        failures.push(`${driver}: ${(error as Error).message}`);
      }
    }
    if (started === undefined) throw new Error(`dockerd did not start:\n${failures.join('\n')}`);
    daemon = started.daemon;
    const host = `unix://${join(dir, 'docker.sock')}`;
    return await fn({
      host,
      dir,
      storageDriver: started.driver,
      docker: (args) => run(DOCKER, ['-H', host, ...args]),
    });
  } finally {
    if (daemon !== undefined) await stop(daemon, dir);
    await unmountBelow(dir);
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

async function start(dir: string, driver: string): Promise<{ daemon: ChildProcess; driver: string }> {
  const root = join(dir, driver);
  const log = await open(join(dir, `dockerd-${driver}.log`), 'w');
  const daemon = spawn(
    DOCKERD,
    [
      '--data-root', join(root, 'data'),
      '--exec-root', join(root, 'exec'),
      '--host', `unix://${join(dir, 'docker.sock')}`,
      '--pidfile', join(dir, 'dockerd.pid'),
      '--iptables=false',
      '--ip6tables=false',
      '--bridge=none',
      `--storage-driver=${driver}`,
    ],
    { stdio: ['ignore', log.fd, log.fd] },
  );
  await log.close();
  let exited: string | undefined;
  daemon.on('exit', (code, signal) => (exited = `exited ${code ?? signal}`));
  daemon.on('error', (error) => (exited = error.message));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (exited !== undefined) break;
    const info = await run(DOCKER, ['-H', `unix://${join(dir, 'docker.sock')}`, 'info', '--format', '{{.Driver}}']);
    if (info.code === 0 && info.stdout.trim() === driver) return { daemon, driver };
    await sleep(250);
  }
  const logText = await readFile(join(dir, `dockerd-${driver}.log`), 'utf8').catch(() => '');
  if (exited === undefined) await stop(daemon, dir);
  throw new Error(`dockerd ${exited ?? 'not ready after 60 s'}; log:\n${tail(logText, 2000)}`);
}

/** SIGTERM by PID, SIGKILL after 30 s; then any process still naming our directory (its containerd) is killed by PID. */
async function stop(daemon: ChildProcess, dir: string): Promise<void> {
  if (daemon.exitCode === null && daemon.signalCode === null) {
    const exited = new Promise<void>((resolve) => daemon.once('exit', () => resolve()));
    daemon.kill('SIGTERM');
    const timedOut = await Promise.race([exited.then(() => false), sleep(30_000).then(() => true)]);
    if (timedOut) {
      daemon.kill('SIGKILL');
      await exited;
    }
  }
  for (const pid of await processesNaming(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** PIDs whose command line mentions `dir` (dockerd's containerd and shims carry its paths). */
export async function processesNaming(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const cmdline = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(dir)) pids.push(Number(name));
  }
  return pids;
}

/** Mount points below `dir`, deepest first. */
export async function mountsBelow(dir: string): Promise<string[]> {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  return mounts
    .split('\n')
    .map((line) => line.split(' ')[1] ?? '')
    .map((field) => field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))))
    .filter((mountpoint) => mountpoint === dir || mountpoint.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

async function unmountBelow(dir: string): Promise<void> {
  for (const mountpoint of await mountsBelow(dir)) {
    const r = await run('umount', [mountpoint]);
    if (r.code !== 0) await run('umount', ['-l', mountpoint]);
  }
}

/** True when Debian's docker.io is installed (scripts/setup.sh installs it). */
export async function haveDocker(): Promise<boolean> {
  return access(DOCKERD).then(
    () => access(DOCKER).then(() => true, () => false),
    () => false,
  );
}
