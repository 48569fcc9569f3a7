import { createRequire } from 'node:module';

/**
 * A loader for one of our optional native addons (`native/`, installed as optional dependencies):
 * the module when it is built, null when it is not (the caller then uses its fallback). Loaded on
 * the first call only, as loading an addon costs start-up time that most runs need not pay.
 */
export function optionalAddon<T>(specifier: string): () => T | null {
  let loaded: T | null | undefined;
  return () => {
    if (loaded === undefined) {
      try {
        loaded = createRequire(import.meta.url)(specifier) as T;
      } catch {
        loaded = null;
      }
    }
    return loaded;
  };
}
