import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runChecked } from './exec.js';
import { TEMP_DIR_PREFIX } from './tmp.js';

/** Debian's docker-registry: the reference distribution server (2.8). */
export const REGISTRY_BINARY = '/usr/bin/docker-registry';

export interface RegistryServerOptions {
  /** Require HTTP basic auth with this user (a bcrypt htpasswd file made with `htpasswd -B`). */
  basicAuth?: { username: string; password: string };
}

export interface RegistryServer {
  /** `127.0.0.1:PORT`: what references start with. */
  host: string;
  port: number;
  /** The registry's storage root (`docker/registry/v2/...` below it). */
  storageDir: string;
  /** Kills the server (SIGKILL: as a crash) and starts it again on the same port and storage. */
  restart(): Promise<void>;
  /** Kills the server now (SIGKILL), leaving it down until {@link RegistryServer.start}. */
  kill(): Promise<void>;
  start(): Promise<void>;
}

/** A free TCP port on loopback (the kernel's choice, released again for the server to take). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function stopProcess(child: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  // SIGTERM lets the registry finish; if it has not exited after 5 s of polling, SIGKILL.
  for (let i = 0; i < 50 && child.exitCode === null && child.signalCode === null; i++) {
    if (await Promise.race([exited.then(() => true), sleep(100).then(() => false)])) return;
  }
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await exited;
  }
}

/**
 * Runs `fn` with a docker-registry listening on 127.0.0.1 (a free port, storage in a temporary
 * directory, deletes enabled, optionally basic auth), and stops it (SIGTERM, then SIGKILL) and
 * removes the directory afterwards, whether `fn` resolved or threw.
 */
export async function withRegistry<T>(options: RegistryServerOptions, fn: (registry: RegistryServer) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), `${TEMP_DIR_PREFIX}registry-`));
  let child: ChildProcess | undefined;
  let output = '';
  try {
    const port = await freePort();
    const storageDir = join(dir, 'storage');
    await mkdir(storageDir);
    const auth: string[] = [];
    if (options.basicAuth !== undefined) {
      const { stdout } = await runChecked('htpasswd', ['-Bbn', options.basicAuth.username, options.basicAuth.password]);
      await writeFile(join(dir, 'htpasswd'), stdout);
      auth.push('auth:', '  htpasswd:', '    realm: test-registry', `    path: ${join(dir, 'htpasswd')}`);
    }
    const config = [
      'version: 0.1',
      'log:',
      '  level: error',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storageDir}`,
      '  delete:',
      '    enabled: true',
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      ...auth,
    ].join('\n');
    await writeFile(join(dir, 'config.yml'), `${config}\n`);

    const start = async (): Promise<void> => {
      output = '';
      const started = spawn(REGISTRY_BINARY, ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'pipe', 'pipe'] });
      child = started;
      started.stdout?.on('data', (b: Buffer) => (output += b.toString()));
      started.stderr?.on('data', (b: Buffer) => (output += b.toString()));
      // Ready when /v2/ answers (200, or 401 with auth); a server that exits instead fails at once.
      for (let attempt = 0; attempt < 200; attempt++) {
        if (started.exitCode !== null || started.signalCode !== null) throw new Error(`docker-registry exited (${started.exitCode ?? started.signalCode}):\n${output}`);
        const status = await fetch(`http://127.0.0.1:${port}/v2/`).then((r) => r.status, () => 0);
        if (status === 200 || status === 401) return;
        await sleep(50);
      }
      throw new Error(`docker-registry did not answer on 127.0.0.1:${port}:\n${output}`);
    };
    const kill = async (): Promise<void> => {
      await stopProcess(child, 'SIGKILL');
    };
    await start();
    return await fn({
      host: `127.0.0.1:${port}`,
      port,
      storageDir,
      start,
      kill,
      restart: async () => {
        await kill();
        await start();
      },
    });
  } finally {
    await stopProcess(child, 'SIGTERM');
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

/** Writes a docker config.json with basic credentials for `registry` and returns its directory (for DOCKER_CONFIG). */
export async function writeDockerConfig(dir: string, registry: string, username: string, password: string): Promise<string> {
  const configDir = join(dir, 'docker-config');
  await mkdir(configDir, { recursive: true });
  const auth = Buffer.from(`${username}:${password}`).toString('base64');
  await writeFile(join(configDir, 'config.json'), JSON.stringify({ auths: { [registry]: { auth } } }));
  return configDir;
}

/** `skopeo copy` (an independent client) of an OCI layout image into the registry, over plain HTTP. */
export async function skopeoPush(layoutDir: string, tag: string, target: string, extraArgs: readonly string[] = []): Promise<void> {
  await runChecked('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', ...extraArgs, `oci:${layoutDir}:${tag}`, `docker://${target}`]);
}
