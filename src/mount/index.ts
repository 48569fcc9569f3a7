export * from './errors.js';
export * from './mechanism.js';
export * from './mountinfo.js';
export { DEFAULT_RUNTIME_DIR, listMounts, mountImage, requireRoot, unmountImage, type MountListing, type MountOptions, type MountResult, type UnmountOptions, type UnmountResult } from './mount.js';
export type { Mechanism } from './state.js';
