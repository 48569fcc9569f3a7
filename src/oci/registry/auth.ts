import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { RegistryConfigError } from './errors.js';

/** Credentials for one registry, as `docker login` stores them. */
export type Credentials = { username: string; password: string } | { identityToken: string; username?: string };

/** `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (what docker, skopeo and buildx read). */
export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env['DOCKER_CONFIG'] ?? path.join(homedir(), '.docker');
  return path.join(dir, 'config.json');
}

/** The keys docker may have stored a registry's entry under. */
function configKeys(registry: string): string[] {
  if (registry === 'docker.io') return ['https://index.docker.io/v1/', 'index.docker.io', 'docker.io', 'registry-1.docker.io'];
  return [registry, `https://${registry}`, `http://${registry}`, `https://${registry}/v1/`, `https://${registry}/v2/`];
}

/**
 * The registry's credentials from the docker config file's `auths` (`auth` = base64 of
 * `user:password`, or `identitytoken`), or undefined when it has none (or there is no file).
 * Credential helpers (`credsStore`, `credHelpers`) are not run.
 */
export async function readDockerCredentials(registry: string, configPath: string = dockerConfigPath()): Promise<Credentials | undefined> {
  let text: string;
  try {
    text = await readFile(configPath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const bad = (problem: string): never => {
    throw new RegistryConfigError(configPath, `${problem} (reading the credentials for ${registry})`);
  };
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (error) {
    return bad(`not valid JSON (${(error as Error).message})`);
  }
  const auths = (config as { auths?: unknown } | null)?.auths;
  if (auths === undefined || auths === null) return undefined;
  if (typeof auths !== 'object') return bad('"auths" is not an object');
  for (const key of configKeys(registry)) {
    const entry = (auths as Record<string, unknown>)[key];
    if (entry === undefined || entry === null || typeof entry !== 'object') continue;
    const { auth, identitytoken, username, password } = entry as Record<string, unknown>;
    if (typeof identitytoken === 'string' && identitytoken !== '') {
      return { identityToken: identitytoken, ...(typeof username === 'string' ? { username } : {}) };
    }
    if (typeof auth === 'string' && auth !== '') {
      const decoded = Buffer.from(auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) return bad(`auths[${JSON.stringify(key)}].auth is not base64 of USER:PASSWORD`);
      return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    }
    if (typeof username === 'string' && typeof password === 'string') return { username, password };
  }
  return undefined;
}

/** One `WWW-Authenticate` challenge: `Basic realm="..."` or `Bearer realm="...",service="...",scope="..."`. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses the first challenge of a `WWW-Authenticate` header (registries send one). */
export function parseChallenge(header: string): Challenge | undefined {
  const match = /^\s*([A-Za-z][\w-]*)\s*(.*)$/s.exec(header);
  if (match === null) return undefined;
  const params: Record<string, string> = {};
  const paramPattern = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?\s*/gy;
  const rest = match[2] ?? '';
  paramPattern.lastIndex = 0;
  for (let m = paramPattern.exec(rest); m !== null; m = paramPattern.exec(rest)) {
    params[m[1]!.toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] ?? '');
    if (paramPattern.lastIndex >= rest.length) break;
  }
  return { scheme: match[1]!.toLowerCase(), params };
}

export function basicHeader(credentials: { username: string; password: string }): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
}
