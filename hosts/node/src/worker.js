// @ts-check
/**
 * @module worker
 * One worker thread of an engine's pool: runs export calls on a FRESH component instance each.
 *
 * The core modules arrive compiled (the engine compiles them once per process and posts the
 * `WebAssembly.Module`s); each call instantiates them anew with imports that reach the main
 * thread's backends through the synchronous bridge (`bridge.js`), then calls one export and
 * posts the result. A call never sees state left by another: no instance outlives its call.
 *
 * Imports supplied here: the mfa-step store, audit, mailer (bridged), config (read from the
 * settings passed at start, synchronously), wasi:clocks/wall-clock (Date.now, or the engine's
 * bridged test clock) and wasi:random/random (node:crypto's CSPRNG): exactly the world's imports.
 * An import nobody supplies stops the worker at start.
 */

import { randomFillSync } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { syncCaller } from './bridge.js';

/**
 * @typedef {object} WorkerStart
 * @property {string} jsUrl file URL of the jco-transpiled module
 * @property {Record<string, WebAssembly.Module>} modules the compiled core modules, by file name
 * @property {string[]} importNames the import names the transpiled module reads (no versions)
 * @property {Record<string, string>} config settings for `config.get`
 * @property {SharedArrayBuffer} ctrl the bridge's wake-up counter
 * @property {import('node:worker_threads').MessagePort} bridgePort
 * @property {number} timeoutMs how long one import may block
 * @property {boolean} bridgedClock read the time from the main thread's clock
 */

const start = /** @type {WorkerStart} */ (workerData);
const call = syncCaller(start.bridgePort, new Int32Array(start.ctrl), start.timeoutMs);

/**
 * The value of a bridged call, or a throw of the WIT error variant (jco turns a thrown non-Error
 * value into the `err` of the import's result).
 * @param {string} op
 * @param {unknown[]} args
 */
function bridged(op, args) {
  const answer = call(op, args);
  if (answer.err) throw answer.err;
  return answer.ok;
}

const NS_PER_MS = 1_000_000;

/** wasi:clocks/wall-clock: the system clock, or the engine's test clock through the bridge. */
const wallClock = {
  now() {
    let ms = Date.now();
    if (start.bridgedClock) {
      const answer = call('clock.now', []);
      // The clock import cannot fail; a test clock that fails is a broken test setup. Trap.
      if (answer.err || typeof answer.ok !== 'number') throw new Error('the test clock failed');
      ms = answer.ok;
    }
    const seconds = Math.floor(ms / 1000);
    return { seconds: BigInt(seconds), nanoseconds: Math.floor((ms - seconds * 1000) * NS_PER_MS) };
  },
  resolution() {
    return { seconds: 0n, nanoseconds: NS_PER_MS };
  },
};

/** wasi:random/random: node:crypto's CSPRNG. */
const random = {
  /** @param {bigint} len */
  getRandomBytes(len) {
    return randomFillSync(new Uint8Array(Number(len)));
  },
  getRandomU64() {
    return new BigUint64Array(randomFillSync(new BigUint64Array(1)).buffer)[0];
  },
};

/** @type {Record<string, Record<string, Function>>} */
const own = {
  'mfa-step:plugin/store': {
    get: (/** @type {string} */ key) => bridged('store.get', [key]),
    set: (/** @type {string} */ key, /** @type {Uint8Array} */ value, /** @type {bigint|undefined} */ at) =>
      bridged('store.set', [key, value, at]),
    delete: (/** @type {string} */ key) => bridged('store.delete', [key]),
    increment: (/** @type {string} */ key, /** @type {bigint} */ delta, /** @type {bigint|undefined} */ at) =>
      bridged('store.increment', [key, delta, at]),
    listKeys: (/** @type {string} */ prefix) => bridged('store.listKeys', [prefix]),
    commit: () => bridged('store.commit', []),
  },
  'mfa-step:plugin/audit': {
    head: (/** @type {string} */ orgId) => bridged('audit.head', [orgId]),
    append: (/** @type {unknown} */ entry) => bridged('audit.append', [entry]),
    noteRefusal: (/** @type {unknown} */ note) => {
      call('audit.noteRefusal', [note]);
    },
  },
  'mfa-step:plugin/mailer': {
    send: (/** @type {unknown} */ message) => bridged('mailer.send', [message]),
  },
  'mfa-step:plugin/config': {
    get: (/** @type {string} */ name) =>
      Object.prototype.hasOwnProperty.call(start.config, name) ? start.config[name] : undefined,
  },
  'mfa-step:plugin/types': {},
  'wasi:clocks/wall-clock': wallClock,
  'wasi:random/random': random,
};

/** @param {string} name e.g. `terminal-input` */
function camel(name) {
  return name.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
}

/**
 * The import object: exactly the world's imports, all supplied here. A component that imports
 * anything else (e.g. std's `wasi:cli` runtime) is refused at start, naming the import: this host
 * supplies the world, nothing more (`mfa-step inspect` holds the component to the same rule).
 */
async function importObject() {
  /** @type {Record<string, unknown>} */
  const imports = {};
  for (const name of start.importNames) {
    if (!(name in own)) throw new Error(`the component imports ${name}, which this host does not supply`);
    imports[name] = own[name];
  }
  return imports;
}

/**
 * Turns `null` into `undefined` (jco's `none`) in plain objects and arrays, so callers may use either.
 * @param {unknown} value
 * @returns {unknown}
 */
function noneForNull(value) {
  if (value === null) return undefined;
  if (Array.isArray(value)) return value.map(noneForNull);
  if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    /** @type {Record<string, unknown>} */
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = noneForNull(v);
    return out;
  }
  return value;
}

// jco wraps each export in `WebAssembly.promising` (JSPI) inside a try/catch and falls back to the
// plain export when that throws. Node 20 has no JSPI, and the TypeError V8 builds for calling
// `undefined` costs ~3 ms each (V8 re-parses the huge calling function to name the callee): about
// 35 ms per instance. A stub that throws at once takes the same fallback in microseconds. Nothing
// else in this worker looks for JSPI.
if (typeof (/** @type {any} */ (WebAssembly).promising) !== 'function') {
  const noJspi = new TypeError('JSPI is not available in this Node');
  Object.defineProperty(WebAssembly, 'promising', {
    value: () => {
      throw noJspi;
    },
    configurable: true,
  });
}

const { instantiate } = await import(start.jsUrl);
const imports = await importObject();
/** @param {string} path */
const getCoreModule = (path) => {
  const module = start.modules[path];
  if (!module) throw new Error(`no compiled core module ${path}`);
  return module;
};

/** One fresh instance: the exports, and how long instantiating took (ms). */
async function fresh() {
  const t0 = performance.now();
  const root = await instantiate(getCoreModule, imports);
  return { root, instantiateMs: performance.now() - t0 };
}

// Start-up check: one instance, and the names of its export functions (the engine's methods).
{
  const { root } = await fresh();
  /** @type {Record<string, string[]>} */
  const exported = {};
  for (const [iface, fns] of Object.entries(root)) {
    if (iface.includes(':') || !fns || typeof fns !== 'object') continue;
    exported[iface] = Object.keys(fns).filter((fn) => typeof fns[fn] === 'function');
  }
  parentPort?.postMessage({ ready: true, exported });
}

parentPort?.on('message', async (/** @type {{ id: number, iface: string, fn: string, args: unknown[] }} */ job) => {
  const { id, iface, fn, args } = job;
  let instantiateMs = 0;
  const t0 = performance.now();
  try {
    const made = await fresh();
    instantiateMs = made.instantiateMs;
    const f = made.root[iface]?.[fn];
    if (typeof f !== 'function') throw new Error(`the component exports no ${iface}.${fn}`);
    const value = f(...args.map(noneForNull));
    parentPort?.postMessage({ id, ok: value, instantiateMs, totalMs: performance.now() - t0 });
  } catch (error) {
    const e = /** @type {{ payload?: unknown, name?: string }} */ (error);
    if (error && typeof error === 'object' && Object.prototype.hasOwnProperty.call(error, 'payload')) {
      parentPort?.postMessage({ id, mfaError: e.payload, instantiateMs, totalMs: performance.now() - t0 });
    } else {
      // A trap or a shape error. Its message is not passed on: it may quote an argument (a code).
      const kind = error instanceof TypeError || error instanceof RangeError ? 'shape' : 'trap';
      parentPort?.postMessage({ id, failure: kind, name: e?.name ?? 'unknown', instantiateMs, totalMs: performance.now() - t0 });
    }
  }
});
