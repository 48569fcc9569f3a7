import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { digestOf } from '../digest.js';
import { DigestMismatchError } from '../errors.js';
import { INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES } from '../mediaTypes.js';
import { basicHeader, dockerConfigPath, parseChallenge, readDockerCredentials, type Challenge, type Credentials } from './auth.js';
import { RegistryAuthError, RegistryConfigError, RegistryHttpError, RegistryUnreachableError } from './errors.js';
import { registryBaseUrl, type RegistryReference } from './reference.js';

export interface RegistryClientOptions {
  /** Ask for push access as well as pull (the token's scope). */
  push?: boolean;
  /** Other repositories of the same registry to be granted pull access on (cross-repository mounts). */
  pullRepositories?: readonly string[];
  /** The docker config file with credentials (default {@link dockerConfigPath}). */
  configPath?: string;
  /** For the plain-HTTP rule (default process.env). */
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  /**
   * How many times a request that failed in a way that may pass (see {@link isTransientRegistryError})
   * is made again. Default: {@link RETRIES_ENV}, else {@link DEFAULT_RETRIES}.
   */
  retries?: number;
  /** Wait before the first retry, doubled before each next one (default 500 ms); a `Retry-After` the registry sends is honoured up to {@link MAX_RETRY_WAIT_MS}. */
  retryDelayMs?: number;
}

/** Environment variable: how many times a failed registry request is retried (0 turns retries off). */
export const RETRIES_ENV = 'EROFS_REGISTRY_RETRIES';
/** As docker and crane do: a registry restarting, a proxy's 502, a rate limit pass within seconds. */
export const DEFAULT_RETRIES = 3;
const DEFAULT_RETRY_DELAY_MS = 500;
/** The longest wait a `Retry-After` gets; a registry asking for more fails the request. */
export const MAX_RETRY_WAIT_MS = 30_000;
/** Statuses a registry, or a proxy or load balancer in front of it, answers for a condition that passes. */
const TRANSIENT_STATUSES: readonly number[] = [408, 429, 500, 502, 503, 504];

/** A failure worth another try: the registry could not be reached or dropped the connection, or answered a transient status. */
export function isTransientRegistryError(error: unknown): boolean {
  if (error instanceof RegistryUnreachableError) return true;
  return error instanceof RegistryHttpError && !(error instanceof RegistryAuthError) && TRANSIENT_STATUSES.includes(error.status);
}

function retriesFrom(options: RegistryClientOptions): number {
  if (options.retries !== undefined) return options.retries;
  const text = (options.env ?? process.env)[RETRIES_ENV];
  if (text === undefined || text.trim() === '') return DEFAULT_RETRIES;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0 || value > 100) throw new RegistryConfigError(RETRIES_ENV, `${JSON.stringify(text)} is not a whole number of retries from 0 to 100`);
  return value;
}

/** Milliseconds a `Retry-After` header asks for (seconds, or an HTTP date), undefined when absent or unreadable. */
function retryAfterMs(header: string | null): number | undefined {
  if (header === null) return undefined;
  const seconds = Number(header);
  if (header.trim() !== '' && Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** Every manifest and index type we read: the registry answers with whichever it has. */
export const MANIFEST_ACCEPT = [...MANIFEST_MEDIA_TYPES, ...INDEX_MEDIA_TYPES].join(', ');

/** Bytes of an error body read to explain a failure. */
const MAX_ERROR_BODY_BYTES = 64 * 1024;

export interface RequestOptions {
  headers?: Record<string, string>;
  /** Made again if the request must be repeated after authenticating (streams are not rewindable). */
  body?: () => unknown;
  /** Statuses returned to the caller instead of thrown (2xx always are). */
  allow?: readonly number[];
  /**
   * False: made once, whatever happens (an upload's PUT, whose session a failure may have ended: the
   * push starts a new session instead).
   */
  retry?: boolean;
}

export interface FetchedManifest {
  bytes: Buffer;
  /** The Content-Type, or the manifest's own mediaType field when the registry sends a generic one. */
  mediaType: string;
  digest: string;
}

/** The error's cause, told as a person would: `ECONNREFUSED 127.0.0.1:5000`, `other side closed`. */
function networkProblem(error: unknown): string {
  const cause = (error as { cause?: unknown }).cause ?? error;
  const code = (cause as NodeJS.ErrnoException).code;
  const message = cause instanceof Error ? cause.message : String(cause);
  if (typeof code === 'string' && !message.includes(code)) return `${message} (${code})`;
  return message;
}

/** The error of a request's last try, its message saying how many tries were made. */
export function withAttempts(error: unknown, attempts: number): unknown {
  if (error instanceof RegistryHttpError || error instanceof RegistryUnreachableError) error.message += ` (${attempts} attempts)`;
  return error;
}

/**
 * The OCI distribution API of one repository: requests with the registry's authentication
 * (Basic, or a Bearer token from its realm, with credentials from the docker config file), typed
 * errors for failed answers and dropped connections.
 */
export class RegistryClient {
  readonly baseUrl: string;
  private authorization: string | undefined;
  private credentials: Credentials | undefined | null = null;
  private readonly configPath: string;
  /** Times a request that failed transiently is made again (see {@link RegistryClientOptions.retries}). */
  readonly retries: number;
  private readonly retryDelayMs: number;

  constructor(
    readonly reference: RegistryReference,
    private readonly options: RegistryClientOptions = {},
  ) {
    this.baseUrl = registryBaseUrl(reference, options.env);
    this.configPath = options.configPath ?? dockerConfigPath(options.env);
    this.retries = retriesFrom(options);
    this.retryDelayMs = options.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;
  }

  /** `/v2/REPO/...` of this client's repository (or another of the same registry). */
  path(suffix: string, repository = this.reference.repository): string {
    return `/v2/${repository}/${suffix}`;
  }

  /**
   * Makes a request, authenticating when challenged; a 2xx or allowed answer is returned, any other
   * is thrown as a typed error. A transient failure (no connection, a dropped one, 408, 429 or 5xx)
   * is retried up to {@link retries} times, waiting {@link waitBeforeRetry}; the error after the last
   * try says how many were made.
   */
  async request(method: string, pathOrUrl: string, options: RequestOptions = {}): Promise<Response> {
    const url = new URL(pathOrUrl, this.baseUrl).toString();
    const attempts = 1 + (options.retry === false ? 0 : this.retries);
    for (let attempt = 1; ; attempt++) {
      let response: Response;
      try {
        response = await this.send(method, url, options);
        if (response.status === 401) {
          const challenge = parseChallenge(response.headers.get('www-authenticate') ?? '');
          await response.body?.cancel().catch(() => undefined);
          if (challenge !== undefined) {
            await this.authenticate(challenge, method, url);
            response = await this.send(method, url, options);
          }
        }
      } catch (error) {
        if (!(error instanceof RegistryUnreachableError) || attempt >= attempts) throw attempt > 1 ? withAttempts(error, attempt) : error;
        await this.waitBeforeRetry(attempt);
        continue;
      }
      if ((response.status >= 200 && response.status < 300) || options.allow?.includes(response.status)) return response;
      if (attempt < attempts && TRANSIENT_STATUSES.includes(response.status)) {
        const asked = retryAfterMs(response.headers.get('retry-after'));
        if (asked === undefined || asked <= MAX_RETRY_WAIT_MS) {
          await response.body?.cancel().catch(() => undefined);
          await this.waitBeforeRetry(attempt, asked);
          continue;
        }
      }
      const failure = await this.failure(method, url, response);
      throw attempt > 1 ? withAttempts(failure, attempt) : failure;
    }
  }

  /**
   * Waits before try `attempt + 1`: what the registry asked for (`Retry-After`), else
   * retryDelayMs doubled per try so far. Ends early with the abort of the client's signal.
   */
  async waitBeforeRetry(attempt: number, askedMs?: number): Promise<void> {
    const delayMs = askedMs ?? this.retryDelayMs * 2 ** (attempt - 1);
    try {
      await sleep(Math.min(delayMs, MAX_RETRY_WAIT_MS), undefined, this.options.signal === undefined ? {} : { signal: this.options.signal });
    } catch (error) {
      if (this.options.signal?.aborted === true) throw this.options.signal.reason;
      throw error;
    }
  }

  private async send(method: string, url: string, options: RequestOptions): Promise<Response> {
    const headers: Record<string, string> = { 'user-agent': 'mkfs-erofs-ts', ...options.headers };
    if (this.authorization !== undefined) headers['authorization'] = this.authorization;
    const body = options.body?.();
    try {
      // duplex 'half' is what undici requires for a streamed request body.
      return await fetch(url, { method, headers, ...(body === undefined ? {} : { body: body as RequestInit['body'], duplex: 'half' }), ...(this.options.signal === undefined ? {} : { signal: this.options.signal }) } as RequestInit);
    } catch (error) {
      if (this.options.signal?.aborted === true) throw this.options.signal.reason;
      throw new RegistryUnreachableError(this.reference.text, method, new URL(url).pathname, networkProblem(error));
    }
  }

  /** A typed error for a failed answer, with the registry's own error code and message. */
  private async failure(method: string, url: string, response: Response): Promise<Error> {
    const path = new URL(url).pathname;
    let detail = '';
    try {
      const text = (await readLimited(response, MAX_ERROR_BODY_BYTES, this.reference.text, method, path)).toString('utf8');
      const first = (JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> }).errors?.[0];
      if (first !== undefined) detail = [first.code, first.message].filter((part) => typeof part === 'string' && part !== '').join(': ');
    } catch {
      // Not the distribution API's JSON error (a proxy's page, an empty body): the status says it.
    }
    if (response.status === 401 || response.status === 403) {
      const credentials = await this.loadCredentials().catch(() => undefined);
      const hint = credentials === undefined ? `no credentials for ${this.reference.registry} in ${this.configPath}` : `check the credentials for ${this.reference.registry} in ${this.configPath}`;
      return new RegistryAuthError(this.reference.text, method, path, response.status, detail === '' ? hint : `${detail}; ${hint}`);
    }
    return new RegistryHttpError(this.reference.text, method, path, response.status, detail);
  }

  private async loadCredentials(): Promise<Credentials | undefined> {
    if (this.credentials === null) this.credentials = await readDockerCredentials(this.reference.registry, this.configPath);
    return this.credentials;
  }

  private scopes(challenge: Challenge): string[] {
    const { repository } = this.reference;
    const scopes = [`repository:${repository}:${this.options.push === true ? 'pull,push' : 'pull'}`];
    for (const other of this.options.pullRepositories ?? []) if (other !== repository) scopes.push(`repository:${other}:pull`);
    for (const asked of (challenge.params['scope'] ?? '').split(' ')) if (asked !== '' && !scopes.includes(asked)) scopes.push(asked);
    return scopes;
  }

  /** Answers a challenge: Basic with the stored password, or a Bearer token from the realm. */
  private async authenticate(challenge: Challenge, method: string, url: string): Promise<void> {
    const credentials = await this.loadCredentials();
    const path = new URL(url).pathname;
    const noCredentials = () => new RegistryAuthError(this.reference.text, method, path, 401, `the registry wants credentials and ${this.configPath} has none for ${this.reference.registry} (docker login ${this.reference.registry})`);
    if (challenge.scheme === 'basic') {
      if (credentials === undefined || !('password' in credentials)) throw noCredentials();
      this.authorization = basicHeader(credentials);
      return;
    }
    if (challenge.scheme !== 'bearer') throw new RegistryAuthError(this.reference.text, method, path, 401, `unsupported authentication scheme ${JSON.stringify(challenge.scheme)}`);
    const realm = challenge.params['realm'];
    if (realm === undefined) throw new RegistryAuthError(this.reference.text, method, path, 401, 'Bearer challenge without a realm');
    const tokenUrl = new URL(realm);
    const service = challenge.params['service'];
    const scopes = this.scopes(challenge);
    let response: Response;
    try {
      if (credentials !== undefined && 'identityToken' in credentials) {
        // An identity token is an OAuth2 refresh token (docker login with a token-based store).
        const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: credentials.identityToken, client_id: 'mkfs-erofs-ts', ...(service === undefined ? {} : { service }) });
        form.set('scope', scopes.join(' '));
        response = await fetch(tokenUrl, { method: 'POST', body: form, ...(this.options.signal === undefined ? {} : { signal: this.options.signal }) });
      } else {
        if (service !== undefined) tokenUrl.searchParams.set('service', service);
        for (const scope of scopes) tokenUrl.searchParams.append('scope', scope);
        const headers: Record<string, string> = credentials !== undefined && 'password' in credentials ? { authorization: basicHeader(credentials) } : {};
        response = await fetch(tokenUrl, { headers, ...(this.options.signal === undefined ? {} : { signal: this.options.signal }) });
      }
    } catch (error) {
      throw new RegistryUnreachableError(this.reference.text, 'GET', `token realm ${tokenUrl.origin}${tokenUrl.pathname}`, networkProblem(error));
    }
    if (!response.ok) {
      await response.body?.cancel().catch(() => undefined);
      const hint = credentials === undefined ? `no credentials for ${this.reference.registry} in ${this.configPath}` : `check the credentials for ${this.reference.registry} in ${this.configPath}`;
      throw new RegistryAuthError(this.reference.text, 'GET', `${tokenUrl.origin}${tokenUrl.pathname} (token)`, response.status, hint);
    }
    const body = (await response.json().catch(() => ({}))) as { token?: unknown; access_token?: unknown };
    const token = typeof body.token === 'string' && body.token !== '' ? body.token : body.access_token;
    if (typeof token !== 'string' || token === '') throw new RegistryAuthError(this.reference.text, 'GET', `${tokenUrl.origin}${tokenUrl.pathname} (token)`, response.status, 'the token server answered without a token');
    this.authorization = `Bearer ${token}`;
  }

  /**
   * A manifest or index by tag or digest, its bytes checked against the digest asked for (or, by
   * tag, against the registry's `Docker-Content-Digest`). Undefined when the registry has none
   * (404) and `allowMissing` is set.
   */
  async getManifest(tagOrDigest: string, maxBytes: number, allowMissing = false): Promise<FetchedManifest | undefined> {
    const path = this.path(`manifests/${tagOrDigest}`);
    const response = await this.request('GET', path, { headers: { accept: MANIFEST_ACCEPT }, allow: allowMissing ? [404] : [] });
    if (response.status === 404) {
      await response.body?.cancel().catch(() => undefined);
      return undefined;
    }
    const bytes = await readLimited(response, maxBytes, this.reference.text, 'GET', path);
    const claimed = tagOrDigest.includes(':') ? tagOrDigest : response.headers.get('docker-content-digest') ?? undefined;
    const algorithm = claimed?.startsWith('sha512:') === true ? 'sha512' : 'sha256';
    const digest = digestOf(bytes, algorithm);
    if (claimed !== undefined && claimed !== digest) throw new DigestMismatchError(`${this.reference.text}: manifest ${tagOrDigest} from ${this.reference.registry}`, 'digest', claimed, digest);
    let mediaType = (response.headers.get('content-type') ?? '').split(';')[0]!.trim();
    if (![...MANIFEST_MEDIA_TYPES, ...INDEX_MEDIA_TYPES].includes(mediaType)) {
      // Some registries send application/json: the manifest's own field says what it is.
      try {
        const field = (JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown }).mediaType;
        if (typeof field === 'string') mediaType = field;
      } catch {
        // The layout reader reports the JSON problem with its place.
      }
    }
    return { bytes, mediaType, digest };
  }

  /** The blob's size when the repository has it, undefined when not (404). */
  async headBlob(digest: string, repository = this.reference.repository): Promise<number | undefined> {
    const response = await this.request('HEAD', this.path(`blobs/${digest}`, repository), { allow: [404] });
    if (response.status === 404) return undefined;
    const length = Number(response.headers.get('content-length') ?? NaN);
    return Number.isSafeInteger(length) && length >= 0 ? length : undefined;
  }

  /** A small blob (a config) read whole, at most `maxBytes`; the caller checks its digest. */
  async readBlob(digest: string, maxBytes: number): Promise<Buffer> {
    const path = this.path(`blobs/${digest}`);
    return readLimited(await this.request('GET', path), maxBytes, this.reference.text, 'GET', path);
  }

  /**
   * A blob's bytes as they arrive (backpressure reaches the socket). A connection dropped midway is
   * resumed where it broke (`Range: bytes=N-`; from a registry that sends the whole blob again, the
   * bytes already given are skipped), up to {@link retries} times; after that it becomes a
   * {@link RegistryUnreachableError}. Nothing is checked here: the layer stream checks digest and
   * size, so a resumed download is verified like any other.
   */
  openBlob(digest: string): Readable {
    const path = this.path(`blobs/${digest}`);
    const reference = this.reference.text;
    const client = this;
    async function* chunks(): AsyncGenerator<Buffer> {
      let givenBytes = 0;
      for (let resumes = 0; ; resumes++) {
        const response = await client.request('GET', path, givenBytes === 0 ? {} : { headers: { range: `bytes=${givenBytes}-` } });
        if (response.body === null) return;
        let skipBytes = 0;
        if (givenBytes > 0) {
          const from = /^bytes (\d+)-/.exec(response.headers.get('content-range') ?? '')?.[1];
          if (response.status !== 206) skipBytes = givenBytes;
          else if (Number(from) !== givenBytes) {
            await response.body.cancel().catch(() => undefined);
            throw new RegistryHttpError(reference, 'GET', path, 206, `asked to resume at byte ${givenBytes}, the registry sent bytes from ${from ?? 'an unknown offset'}`);
          }
        }
        try {
          for await (const chunk of Readable.fromWeb(response.body as import('node:stream/web').ReadableStream<Uint8Array>)) {
            let piece = chunk as Buffer;
            if (skipBytes > 0) {
              const skipped = Math.min(skipBytes, piece.length);
              skipBytes -= skipped;
              piece = piece.subarray(skipped);
              if (piece.length === 0) continue;
            }
            givenBytes += piece.length;
            yield piece;
          }
          return;
        } catch (error) {
          if (resumes >= client.retries) {
            const lost = new RegistryUnreachableError(reference, 'GET', path, `connection lost while reading the blob: ${networkProblem(error)}`);
            throw resumes === 0 ? lost : withAttempts(lost, resumes + 1);
          }
          await client.waitBeforeRetry(resumes + 1);
        }
      }
    }
    return Readable.from(chunks(), { objectMode: false });
  }
}

/** A response body read whole, refusing more than `maxBytes` (a manifest, a config, an error). */
export async function readLimited(response: Response, maxBytes: number, reference: string, method: string, path: string): Promise<Buffer> {
  const declared = Number(response.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw new RegistryHttpError(reference, method, path, response.status, `${declared} bytes, over the ${maxBytes}-byte limit for this kind of object`);
  }
  const parts: Buffer[] = [];
  let total = 0;
  if (response.body === null) return Buffer.alloc(0);
  try {
    for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
      total += chunk.length;
      if (total > maxBytes) throw new RegistryHttpError(reference, method, path, response.status, `more than ${maxBytes} bytes, over the limit for this kind of object`);
      parts.push(Buffer.from(chunk));
    }
  } catch (error) {
    if (error instanceof RegistryHttpError) throw error;
    throw new RegistryUnreachableError(reference, method, path, `connection lost while reading the answer: ${networkProblem(error)}`);
  }
  return Buffer.concat(parts);
}
