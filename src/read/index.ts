export * from './errors.js';
export * from './source.js';
export * from './devices.js';
export * from './image.js';
export * from './summary.js';
export * from './sharing.js';
