import { isParsedDigest, parseDigest, type ParsedDigest } from './digest.js';
import { InvalidImageSourceError } from './errors.js';
import type { Platform } from './types.js';

/**
 * Checked access to untrusted JSON (index.json, manifests, configs, docker's manifest.json). Every
 * failure names the file and the field path, e.g. `/l/index.json: manifests[1].digest: expected a string`.
 */
export class JsonContext {
  constructor(
    /** The file, as shown in messages. */
    readonly file: string,
  ) {}

  fail(where: string, problem: string): never {
    throw new InvalidImageSourceError(this.file, where === '' ? problem : `${where}: ${problem}`);
  }

  parse(bytes: Buffer): unknown {
    try {
      return JSON.parse(bytes.toString('utf8'));
    } catch (error) {
      return this.fail('', `not valid JSON (${(error as Error).message})`);
    }
  }

  object(value: unknown, where: string): Record<string, unknown> {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return this.fail(where, 'expected an object');
    return value as Record<string, unknown>;
  }

  array(value: unknown, where: string): unknown[] {
    if (!Array.isArray(value)) return this.fail(where, 'expected an array');
    return value;
  }

  string(value: unknown, where: string): string {
    if (typeof value !== 'string') return this.fail(where, 'expected a string');
    return value;
  }

  optionalString(value: unknown, where: string): string | undefined {
    return value === undefined || value === null ? undefined : this.string(value, where);
  }

  digest(value: unknown, where: string): ParsedDigest {
    const parsed = parseDigest(this.string(value, where));
    if (!isParsedDigest(parsed)) return this.fail(where, parsed.problem);
    return parsed;
  }

  sizeBytes(value: unknown, where: string): number {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) return this.fail(where, 'expected a size in bytes (a non-negative integer)');
    return value;
  }

  stringMap(value: unknown, where: string): Record<string, string> {
    if (value === undefined || value === null) return {};
    const object = this.object(value, where);
    for (const [key, entry] of Object.entries(object)) this.string(entry, `${where}.${key}`);
    return object as Record<string, string>;
  }

  platform(value: unknown, where: string): Platform | undefined {
    if (value === undefined || value === null) return undefined;
    const object = this.object(value, where);
    const platform: Platform = { os: this.string(object['os'], `${where}.os`), architecture: this.string(object['architecture'], `${where}.architecture`) };
    const variant = this.optionalString(object['variant'], `${where}.variant`);
    if (variant !== undefined) platform.variant = variant;
    return platform;
  }
}

/** An OCI content descriptor, checked. */
export interface Descriptor {
  mediaType: string;
  digest: ParsedDigest;
  sizeBytes: number;
  annotations: Record<string, string>;
  platform?: Platform;
  urls?: string[];
}

export function parseDescriptor(json: JsonContext, value: unknown, where: string): Descriptor {
  const object = json.object(value, where);
  const descriptor: Descriptor = {
    mediaType: json.string(object['mediaType'], `${where}.mediaType`),
    digest: json.digest(object['digest'], `${where}.digest`),
    sizeBytes: json.sizeBytes(object['size'], `${where}.size`),
    annotations: json.stringMap(object['annotations'], `${where}.annotations`),
  };
  const platform = json.platform(object['platform'], `${where}.platform`);
  if (platform !== undefined) descriptor.platform = platform;
  if (Array.isArray(object['urls'])) descriptor.urls = object['urls'].filter((url): url is string => typeof url === 'string');
  return descriptor;
}

export function platformText(platform: Platform | undefined): string {
  if (platform === undefined) return 'unknown platform';
  return `${platform.os}/${platform.architecture}${platform.variant === undefined ? '' : `/${platform.variant}`}`;
}
