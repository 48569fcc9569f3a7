/** How a layer's stored bytes wrap its tar. */
export type Compression = 'none' | 'gzip' | 'zstd';

export const MEDIA_TYPE_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MEDIA_TYPE_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MEDIA_TYPE_OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const MEDIA_TYPE_OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';
export const MEDIA_TYPE_OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const MEDIA_TYPE_OCI_LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
export const MEDIA_TYPE_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const MEDIA_TYPE_DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const MEDIA_TYPE_DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const MEDIA_TYPE_DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar';
export const MEDIA_TYPE_DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';

/**
 * Layer media types we convert. The non-distributable (OCI) and foreign (Docker) variants hold the
 * same bytes; they only tell registries not to push them, so a layout that has the blob is readable.
 * Docker never registered a zstd type; containerd's `...diff.tar.zstd` is accepted for tools that
 * use it.
 */
const LAYER_COMPRESSION: ReadonlyMap<string, Compression> = new Map<string, Compression>([
  [MEDIA_TYPE_OCI_LAYER, 'none'],
  [MEDIA_TYPE_OCI_LAYER_GZIP, 'gzip'],
  [MEDIA_TYPE_OCI_LAYER_ZSTD, 'zstd'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar', 'none'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', 'gzip'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+zstd', 'zstd'],
  [MEDIA_TYPE_DOCKER_LAYER, 'none'],
  [MEDIA_TYPE_DOCKER_LAYER_GZIP, 'gzip'],
  ['application/vnd.docker.image.rootfs.diff.tar.zstd', 'zstd'],
  ['application/vnd.docker.image.rootfs.foreign.diff.tar', 'none'],
  ['application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', 'gzip'],
]);

export const SUPPORTED_LAYER_MEDIA_TYPES: readonly string[] = [...LAYER_COMPRESSION.keys()];

/** The compression a layer media type implies, or undefined when we do not convert that type. */
export function layerCompression(mediaType: string): Compression | undefined {
  return LAYER_COMPRESSION.get(mediaType);
}

export const MANIFEST_MEDIA_TYPES: readonly string[] = [MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST];
export const INDEX_MEDIA_TYPES: readonly string[] = [MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST];
export const IMAGE_CONFIG_MEDIA_TYPES: readonly string[] = [MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG];

/** The media type a layer would have in an OCI manifest, for layers found without one (docker-archive, lone tarballs). */
export function ociLayerMediaType(compression: Compression): string {
  switch (compression) {
    case 'none':
      return MEDIA_TYPE_OCI_LAYER;
    case 'gzip':
      return MEDIA_TYPE_OCI_LAYER_GZIP;
    case 'zstd':
      return MEDIA_TYPE_OCI_LAYER_ZSTD;
  }
}

/** Magic numbers at the start of a file. */
export type Sniffed = Compression | 'xz' | 'bzip2' | 'unknown';

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
const BZIP2_MAGIC = [0x42, 0x5a, 0x68];

function startsWith(head: Uint8Array, magic: readonly number[]): boolean {
  return head.length >= magic.length && magic.every((byte, i) => head[i] === byte);
}

/** A zstd skippable frame (magic 0x184D2A50-0x184D2A5F, little-endian): zstd streams may start with one (metadata, seekable-format tables). */
function isZstdSkippableFrame(head: Uint8Array): boolean {
  return head.length >= 4 && (head[0]! & 0xf0) === 0x50 && head[1] === 0x2a && head[2] === 0x4d && head[3] === 0x18;
}

/**
 * What the first bytes of a file are: a compressed stream (by magic number), or 'none' when the
 * first 512 bytes are a tar header with a valid checksum. Docker reads layers by content the same
 * way, so docker-archive layers and lone tarballs need no media type.
 */
export function sniffCompression(head: Uint8Array, looksLikeTar: (head: Uint8Array) => boolean): Sniffed {
  if (startsWith(head, GZIP_MAGIC)) return 'gzip';
  if (startsWith(head, ZSTD_MAGIC) || isZstdSkippableFrame(head)) return 'zstd';
  if (startsWith(head, XZ_MAGIC)) return 'xz';
  if (startsWith(head, BZIP2_MAGIC)) return 'bzip2';
  if (looksLikeTar(head)) return 'none';
  return 'unknown';
}
