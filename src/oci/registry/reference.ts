import { isParsedDigest, parseDigest } from '../digest.js';
import { InvalidReferenceError } from './errors.js';

/**
 * The scheme that marks a build source (or push target) as a registry image, as skopeo and
 * containers/image spell it: `docker://HOST[:PORT]/REPO[:TAG][@DIGEST]`. (`oci:` means a local
 * layout to those tools, so it is not used for registries here.)
 */
export const REGISTRY_SCHEME = 'docker://';

/** Docker Hub's names: `debian` is `docker.io/library/debian`, served by registry-1.docker.io. */
const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_API_HOST = 'registry-1.docker.io';

export interface RegistryReference {
  /** `HOST[:PORT]` as written (docker.io for Docker Hub names). */
  registry: string;
  /** `REPO` path, e.g. `library/debian`, `team/app`. */
  repository: string;
  tag?: string;
  /** `sha256:...` when the reference pins a digest (then it wins over the tag). */
  digest?: string;
  /** `HOST/REPO:TAG` or `HOST/REPO@DIGEST`: how messages name it. */
  text: string;
}

// The distribution spec's grammar (reference/regexp.go), one path component at a time.
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const HOST = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$/;

export function isRegistrySpec(spec: string): boolean {
  return spec.startsWith(REGISTRY_SCHEME);
}

/**
 * Parses `[docker://]HOST[:PORT]/REPO[:TAG][@DIGEST]`. As docker does, the first component is a
 * host only when it has a '.' or ':' or is `localhost`; otherwise the name is Docker Hub's (and a
 * one-component name is under `library/`). No tag and no digest means `latest`.
 */
export function parseReference(spec: string): RegistryReference {
  const text = isRegistrySpec(spec) ? spec.slice(REGISTRY_SCHEME.length) : spec;
  const fail = (problem: string): never => {
    throw new InvalidReferenceError(spec, `${problem} (expected ${REGISTRY_SCHEME}HOST[:PORT]/REPO[:TAG][@sha256:DIGEST])`);
  };
  if (text === '') fail('empty reference');
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const parsed = parseDigest(rest.slice(at + 1));
    if (!isParsedDigest(parsed)) return fail(parsed.problem);
    digest = parsed.text;
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) fail(`tag ${JSON.stringify(tag)} is not valid`);
  }
  const components = rest.split('/');
  let registry = DOCKER_HUB;
  const first = components[0]!;
  if (components.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    registry = first;
    components.shift();
    if (!HOST.test(registry)) fail(`registry host ${JSON.stringify(registry)} is not valid`);
  }
  if (registry === DOCKER_HUB && components.length === 1) components.unshift('library');
  for (const component of components) {
    if (!PATH_COMPONENT.test(component)) fail(`repository component ${JSON.stringify(component)} is not valid (lowercase letters, digits, separators . _ __ -)`);
  }
  const repository = components.join('/');
  if (tag === undefined && digest === undefined) tag = 'latest';
  const name = `${registry}/${repository}`;
  return { registry, repository, ...(tag === undefined ? {} : { tag }), ...(digest === undefined ? {} : { digest }), text: digest === undefined ? `${name}:${tag}` : `${name}@${digest}` };
}

/** What the manifest endpoint is asked for: the digest when pinned, else the tag. */
export function manifestReference(reference: RegistryReference): string {
  return reference.digest ?? reference.tag ?? 'latest';
}

/** The same repository with another tag or digest (a manifest pushed by digest, a referrers tag). */
export function withReference(reference: RegistryReference, tagOrDigest: string): RegistryReference {
  const isDigest = tagOrDigest.includes(':');
  const name = `${reference.registry}/${reference.repository}`;
  return {
    registry: reference.registry,
    repository: reference.repository,
    ...(isDigest ? { digest: tagOrDigest } : { tag: tagOrDigest }),
    text: isDigest ? `${name}@${tagOrDigest}` : `${name}:${tagOrDigest}`,
  };
}

function hostOnly(registry: string): string {
  if (registry.startsWith('[')) return registry.slice(0, registry.indexOf(']') + 1);
  const colon = registry.lastIndexOf(':');
  return colon < 0 ? registry : registry.slice(0, colon);
}

/**
 * Environment variable listing registries (`HOST[:PORT]`, comma-separated) to reach over plain
 * HTTP, as docker's `insecure-registries` does. Loopback registries need no entry.
 */
export const PLAIN_HTTP_ENV = 'EROFS_INSECURE_REGISTRIES';

/**
 * Plain HTTP for loopback hosts (localhost, 127.0.0.0/8, ::1), as docker treats them as insecure
 * registries by default, and for the registries named in {@link PLAIN_HTTP_ENV}; HTTPS otherwise.
 */
export function usesPlainHttp(registry: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const host = hostOnly(registry);
  if (host === 'localhost' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)) return true;
  const listed = (env[PLAIN_HTTP_ENV] ?? '').split(',').map((entry) => entry.trim()).filter((entry) => entry !== '');
  return listed.includes(registry) || listed.includes(host);
}

/** `http(s)://HOST[:PORT]`: where the `/v2/` API of the reference's registry is. */
export function registryBaseUrl(reference: RegistryReference, env: NodeJS.ProcessEnv = process.env): string {
  const host = reference.registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : reference.registry;
  return `${usesPlainHttp(reference.registry, env) ? 'http' : 'https'}://${host}`;
}

/** A file name for what the reference names: `app:v1` -> `app:v1` (build turns ':' into '_'). */
export function imageNameOf(reference: RegistryReference): string {
  const last = reference.repository.slice(reference.repository.lastIndexOf('/') + 1);
  return reference.tag === undefined || reference.digest !== undefined ? last : `${last}:${reference.tag}`;
}
