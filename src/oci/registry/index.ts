/** Registries (OCI distribution API): `docker://` references, pulling sources, pushing and pulling EROFS artifacts. */
export { parseReference, isRegistrySpec, usesPlainHttp, REGISTRY_SCHEME, PLAIN_HTTP_ENV, type RegistryReference } from './reference.js';
export { RegistryClient, type RegistryClientOptions } from './client.js';
export { pushLayoutImages, resolveManifestDescriptor, type PushOptions, type PushResult, type PushedBlob, type ManifestDescriptor } from './push.js';
export { pullErofsArtifact, type PullOptions, type PullResult } from './pull.js';
export { InvalidReferenceError, RegistryArtifactError, RegistryAuthError, RegistryConfigError, RegistryHttpError, RegistryUnreachableError, REGISTRY_ERROR_CODES } from './errors.js';
export { dockerConfigPath } from './auth.js';
