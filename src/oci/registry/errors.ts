/**
 * Typed errors of registry access. Each message is one line naming the reference, what was asked
 * of the registry and what it answered, so the CLI prints it as is (codes: see REGISTRY_ERROR_CODES).
 */

/** A registry reference that does not parse (`docker://HOST/REPO:TAG`). */
export class InvalidReferenceError extends Error {
  readonly code = 'ERR_INVALID_REFERENCE';
  constructor(
    readonly reference: string,
    readonly problem: string,
  ) {
    super(`${reference}: ${problem}`);
    this.name = 'InvalidReferenceError';
  }
}

/** The registry answered a request with a status we cannot go on from (404, 500, 400...). */
export class RegistryHttpError extends Error {
  readonly code: string = 'ERR_REGISTRY_HTTP';
  constructor(
    /** The reference being pulled or pushed (`HOST/REPO:TAG`). */
    readonly reference: string,
    readonly method: string,
    /** The request path (`/v2/app/manifests/v1`), query left out. */
    readonly path: string,
    readonly status: number,
    /** What the registry said (its `errors[0].code: message`), or a hint of ours. */
    readonly detail: string,
  ) {
    super(`${reference}: registry answered ${status} ${statusText(status)} for ${method} ${path}${detail === '' ? '' : `: ${detail}`}`);
    this.name = 'RegistryHttpError';
  }
}

/** 401/403 after authenticating (or with no credentials to offer). */
export class RegistryAuthError extends RegistryHttpError {
  override readonly code = 'ERR_REGISTRY_AUTH';
  constructor(reference: string, method: string, path: string, status: number, detail: string) {
    super(reference, method, path, status, detail);
    this.name = 'RegistryAuthError';
  }
}

/** The registry could not be reached, or dropped the connection mid-request. */
export class RegistryUnreachableError extends Error {
  readonly code = 'ERR_REGISTRY_UNREACHABLE';
  constructor(
    readonly reference: string,
    readonly method: string,
    readonly path: string,
    readonly problem: string,
  ) {
    super(`${reference}: ${method} ${path} failed: ${problem}`);
    this.name = 'RegistryUnreachableError';
  }
}

/** What we were asked to push or pull is not something we can (not an EROFS artifact, no such image in the layout...). */
export class RegistryArtifactError extends Error {
  readonly code = 'ERR_REGISTRY_ARTIFACT';
  constructor(
    readonly reference: string,
    readonly problem: string,
  ) {
    super(`${reference}: ${problem}`);
    this.name = 'RegistryArtifactError';
  }
}

/** The settings of registry access cannot be used: the docker config file (not JSON, a malformed `auths` entry), or EROFS_REGISTRY_RETRIES. */
export class RegistryConfigError extends Error {
  readonly code = 'ERR_REGISTRY_CONFIG';
  constructor(
    readonly configPath: string,
    readonly problem: string,
  ) {
    super(`${configPath}: ${problem}`);
    this.name = 'RegistryConfigError';
  }
}

export const REGISTRY_ERROR_CODES: readonly string[] = ['ERR_INVALID_REFERENCE', 'ERR_REGISTRY_HTTP', 'ERR_REGISTRY_AUTH', 'ERR_REGISTRY_UNREACHABLE', 'ERR_REGISTRY_ARTIFACT', 'ERR_REGISTRY_CONFIG'];

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Payload Too Large',
  416: 'Range Not Satisfiable',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

function statusText(status: number): string {
  return STATUS_TEXT[status] ?? '';
}
