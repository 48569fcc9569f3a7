export * from './errors.js';
export * from './analyze.js';
export * from './cgroup.js';
export * from './measure.js';
