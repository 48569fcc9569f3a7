/** The image-source side of a build: open an image, list its layers, stream them verified, read tar entries. */
export { openImageSource, probeImageSource, DEFAULT_PLATFORM, type OpenImageSourceOptions, type ProbedSource } from './source.js';
export type { ImageSource, ImageSourceKind, ImageInfo, ImageConfig, LayerDescriptor, Platform } from './types.js';
export { readLayerEntries, normalizeEntryPath, type LayerEntry, type LayerEntryType, type ReadLayerEntriesOptions } from './tarEntries.js';
export { openLayerStream, type LayerLocation } from './layerStream.js';
export {
  DigestMismatchError,
  ImageNotFoundError,
  InvalidImageSourceError,
  InvalidLayerError,
  MissingBlobError,
  SizeMismatchError,
  TarFormatError,
  UnsupportedMediaTypeError,
  OCI_ERROR_CODES,
  isOciError,
} from './errors.js';
export { SUPPORTED_LAYER_MEDIA_TYPES, layerCompression, type Compression } from './mediaTypes.js';
export { singleLayerStreamSource } from './streamSource.js';
export { firstMemberName } from './tarHeader.js';
