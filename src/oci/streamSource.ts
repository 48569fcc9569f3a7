import type { Readable } from 'node:stream';
import { InvalidImageSourceError } from './errors.js';
import { ociLayerMediaType } from './mediaTypes.js';
import type { ImageSource, LayerDescriptor } from './types.js';

/**
 * One uncompressed layer tar read once from a stream (a pipe): an image of that single layer.
 * Nothing names its bytes, so nothing is checked but the tar itself; it can be opened only once.
 */
export function singleLayerStreamSource(stream: Readable, label: string, imageName: string): ImageSource {
  const layer: LayerDescriptor = { mediaType: ociLayerMediaType('none'), label };
  let opened = false;
  return {
    spec: label,
    kind: 'layer-tarball',
    path: label,
    images: [{ name: imageName, layers: [layer] }],
    notes: [],
    openLayer(wanted: LayerDescriptor): Promise<Readable> {
      if (wanted !== layer) return Promise.reject(new InvalidImageSourceError(label, `layer ${wanted.label} is not part of this source`));
      if (opened) return Promise.reject(new InvalidImageSourceError(label, 'a stream can be read only once'));
      opened = true;
      return Promise.resolve(stream);
    },
  };
}
