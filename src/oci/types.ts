import type { Readable } from 'node:stream';

/** An image's target platform, as OCI descriptors and configs spell it. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** One layer of an image, as its manifest (or docker's manifest.json) describes it. */
export interface LayerDescriptor {
  /**
   * Digest of the stored (possibly compressed) bytes, verified while streaming. Absent only when
   * nothing names the bytes: a lone layer tarball, or a compressed layer in an old-format docker
   * archive (then its diff_id is still checked).
   */
  digest?: string;
  /** OCI or Docker layer media type; for docker archives and lone tarballs, the one the content has. */
  mediaType: string;
  sizeBytes?: number;
  /** sha256 of the uncompressed tar (config `rootfs.diff_ids`), verified while streaming. */
  diffId?: string;
  /** Names the layer in messages: source, image, position, short digest. */
  label: string;
}

/** The parts of an image config we read; everything else is kept as found. */
export interface ImageConfig {
  os?: string;
  architecture?: string;
  variant?: string;
  config?: Record<string, unknown>;
  rootfs?: { type: string; diff_ids: string[] };
  history?: unknown[];
  [key: string]: unknown;
}

export interface ImageInfo {
  /** The tag (`org.opencontainers.image.ref.name`, docker RepoTags) or, without one, `sha256:` + 12 hex of the manifest (or config) digest. */
  name: string;
  manifestDigest?: string;
  configDigest?: string;
  config?: ImageConfig;
  platform?: Platform;
  /** Bottom layer first, the order to apply them in. */
  layers: LayerDescriptor[];
}

export type ImageSourceKind = 'oci-layout' | 'oci-archive' | 'docker-archive' | 'layer-tarball' | 'registry';

export interface ImageSource {
  /** The spec as given (`path` or `path:tag`). */
  spec: string;
  kind: ImageSourceKind;
  /** The directory or file read (for a registry, `HOST/REPO:TAG`). */
  path: string;
  images: ImageInfo[];
  /**
   * Choices made while reading that the user may want to know about, one line each: which platform
   * was picked from a multi-platform index, which non-image manifests were skipped.
   */
  notes: string[];
  /**
   * The layer's uncompressed tar bytes, verified while streaming (digest and size of the stored
   * bytes, diff_id of the tar): a mismatch or corrupt compression makes the stream error with a
   * typed error before it ends. Rejects at once when the layer is not part of this source.
   */
  openLayer(layer: LayerDescriptor): Promise<Readable>;
}
