// The `sallyport:policy/host@0.1.0` interface for the smoke test: config from a Map, log to an array.
export const cfg = new Map();
export const logs = [];
export function log(level, message) { logs.push([level, message]); }
export function config(key) { return cfg.get(key); }
