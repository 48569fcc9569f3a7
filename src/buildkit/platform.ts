import { InvalidOptionError } from '../build/errors.js';
import type { Platform } from '../oci/index.js';

/** `OS/ARCH` or `OS/ARCH/VARIANT`, as `--platform` of docker and buildctl spells it. */
export function parsePlatform(text: string): Platform {
  const parts = text.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((part) => !/^[A-Za-z0-9._-]+$/.test(part))) {
    throw new InvalidOptionError('--platform', `"${text}" is not OS/ARCH or OS/ARCH/VARIANT (e.g. linux/arm64)`);
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}
