// @ts-check
/**
 * @module engine
 * `createMfaStep`: the mfa-step component, loaded once per process and called through a small
 * pool of worker threads, with async JS backends for the store, the audit sink and the mailer.
 *
 * ```text
 *   createMfaStep(...)          compile the core modules once per process (per dist folder)
 *        |                      spawn `workers` threads, each with its own bridge (bridge.js)
 *        v
 *   engine.verify(ctx, ...)     queue -> an idle worker -> FRESH instance -> export call
 *        |                            import calls -> bridge -> await backend in this thread
 *        v
 *   plain JS result             bigints -> numbers where safe, none -> null
 *   or MfaError                 the component's mfa-error; traps, deadlines, dead workers -> unavailable
 * ```
 *
 * Guarantees: the main thread's event loop is never blocked; each call gets a fresh instance (no
 * state carried between calls); every backend failure, wrong answer type or timeout is the WIT
 * `unavailable` for that import (never "absent"), and the component fails the call closed; an
 * `MfaError` never carries a code, a token or a key (messages of traps and backend errors, which
 * could quote one, are not passed on).
 */

import { readFile } from 'node:fs/promises';
import { MessageChannel, Worker } from 'node:worker_threads';
import { serveBridge } from './bridge.js';
import { MfaError } from './errors.js';

const DEFAULT_DIST = new URL('../dist/plugin/', import.meta.url);

/**
 * What `npm run build` records beside the transpiled component (`dist/<world>/manifest.json`).
 * @typedef {object} Manifest
 * @property {string} world
 * @property {string} sha256 of the component `.wasm` that was transpiled
 * @property {string} js the transpiled module's file name
 * @property {string[]} coreModules the core module file names
 * @property {string[]} imports the import names the transpiled module reads
 */

/** @type {Map<string, Promise<{ manifest: Manifest, modules: Record<string, WebAssembly.Module> }>>} */
const compiled = new Map();

/**
 * The manifest and compiled core modules of a dist folder: compiled once per process.
 * @param {URL} dist
 */
export function loadComponent(dist) {
  const key = dist.href;
  let entry = compiled.get(key);
  if (!entry) {
    entry = (async () => {
      const manifest = /** @type {Manifest} */ (JSON.parse(await readFile(new URL('manifest.json', dist), 'utf8')));
      /** @type {Record<string, WebAssembly.Module>} */
      const modules = {};
      for (const name of manifest.coreModules) {
        modules[name] = await WebAssembly.compile(await readFile(new URL(name, dist)));
      }
      return { manifest, modules };
    })();
    entry.catch(() => compiled.delete(key));
    compiled.set(key, entry);
  }
  return entry;
}

/**
 * Numbers where a bigint fits exactly, `null` for `none`, recursively; bytes are left as they are.
 * @param {unknown} value
 * @returns {unknown}
 */
export function toPlain(value) {
  if (value === undefined || value === null) return null;
  if (typeof value === 'bigint') {
    const n = Number(value);
    return Number.isSafeInteger(n) ? n : value;
  }
  if (value instanceof Uint8Array) return value;
  if (Array.isArray(value)) return value.map(toPlain);
  if (typeof value === 'object') {
    /** @type {Record<string, unknown>} */
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = toPlain(v);
    return out;
  }
  return value;
}

/**
 * The default `onBackendError`: one line naming the operation and the error's class and code,
 * never its message (a backend's message may quote a key or a value).
 * @param {string} op
 * @param {unknown} error
 */
function logBackendError(op, error) {
  const e = /** @type {{ name?: unknown, code?: unknown }} */ (error ?? {});
  const code = typeof e.code === 'string' ? ` (${e.code})` : '';
  console.warn(`mfa-step: ${op} failed: ${typeof e.name === 'string' ? e.name : typeof error}${code}`);
}

/**
 * @param {unknown} payload the component's `mfa-error`
 */
function mfaErrorOf(payload) {
  const p = /** @type {{ kind?: unknown, message?: unknown, field?: unknown, retryAfterSeconds?: unknown }} */ (
    payload ?? {}
  );
  return new MfaError(String(p.kind ?? 'unavailable'), String(p.message ?? 'the call failed'), {
    field: typeof p.field === 'string' ? p.field : null,
    retryAfterSeconds: typeof p.retryAfterSeconds === 'number' ? p.retryAfterSeconds : null,
  });
}

/**
 * What one call cost, for `onCall`.
 * @typedef {object} CallInfo
 * @property {string} iface e.g. `loginStep`
 * @property {string} fn e.g. `verify`
 * @property {number} instantiateMs creating the fresh instance
 * @property {number} workerMs instantiate + the export call, in the worker
 * @property {number} totalMs from the call to its answer here, queueing included
 * @property {'ok' | 'error' | 'failure'} outcome
 */

/**
 * @typedef {object} EngineOptions
 * @property {import('./stores/memory.js').Store} store
 * @property {import('./audit/memory.js').AuditSink} audit
 * @property {import('./mailers/capture.js').Mailer} mailer
 * @property {Record<string, string> | Map<string, string>} config settings (`hmac_key` required); see wit/config.wit
 * @property {number} [workers] worker threads (default 2): calls running at once
 * @property {number} [callTimeoutMs] how long one store/audit/mailer call may take (default 5000)
 * @property {number} [callDeadlineMs] how long a whole export call may take before its worker is
 *   replaced (default 60000)
 * @property {() => number} [clock] a test clock (ms since the epoch); default: the system clock
 * @property {(op: string, error: unknown) => void} [onBackendError] sees each backend failure
 *   (default: one `console.warn` line with the operation and the error's class and code; the
 *   error itself may quote a key, never a code, which no import carries back)
 * @property {(info: CallInfo) => void} [onCall] sees each call's timings
 * @property {URL} [dist] the transpiled component (default: this package's `dist/plugin/`)
 */

/**
 * The engine: async methods mirroring the component's exports in camelCase.
 * `login-step` functions are on the engine itself, `devices` and `admin` under their names.
 * @typedef {object} MfaStep
 * @property {(ctx: object) => Promise<any>} begin `{ tag: 'allow' | 'challenge' | 'deny', val }`
 * @property {(ctx: object, challengeId: string) => Promise<any>} sendCode
 * @property {(ctx: object, challengeId: string, code: string, rememberDevice: boolean) => Promise<any>} verify
 * @property {(ctx: object) => Promise<any>} enroll
 * @property {(ctx: object, stepUp: string) => Promise<any>} changeEmail
 * @property {(ctx: object) => Promise<any>} status
 * @property {Record<string, (...args: any[]) => Promise<any>>} devices listDevices, revoke, revokeAll
 * @property {Record<string, (...args: any[]) => Promise<any>>} admin getPolicy, setPolicy, resetUser, ...
 * @property {(iface: string, fn: string, ...args: unknown[]) => Promise<any>} call any export by name
 * @property {Manifest} component what was loaded (its SHA-256 included)
 * @property {() => Promise<void>} close stops the workers; queued and running calls fail `unavailable`
 */

/**
 * @typedef {object} Job
 * @property {number} id
 * @property {string} iface
 * @property {string} fn
 * @property {unknown[]} args
 * @property {(value: unknown) => void} resolve
 * @property {(error: Error) => void} reject
 * @property {number} queuedAt
 */

/**
 * @typedef {object} Slot
 * @property {Worker} worker
 * @property {Job | null} job
 * @property {ReturnType<typeof setTimeout> | undefined} deadline
 * @property {boolean} ready takes calls
 * @property {boolean} started became ready once (so a replacement is spawned when it exits)
 */

/**
 * Loads the component and starts the worker pool.
 * @param {EngineOptions} options
 * @returns {Promise<MfaStep>}
 */
export async function createMfaStep(options) {
  const {
    store,
    audit,
    mailer,
    workers = 2,
    callTimeoutMs = 5000,
    callDeadlineMs = 60000,
    clock,
    onBackendError = logBackendError,
    onCall,
    dist = DEFAULT_DIST,
  } = options;
  for (const [name, backend, fns] of /** @type {const} */ ([
    ['store', store, ['get', 'set', 'delete', 'increment', 'listKeys', 'commit']],
    ['audit', audit, ['head', 'append']],
    ['mailer', mailer, ['send']],
  ])) {
    for (const fn of fns) {
      if (typeof (/** @type {Record<string, unknown>} */ (backend ?? {}))[fn] !== 'function') {
        throw new TypeError(`createMfaStep: ${name}.${fn} must be a function`);
      }
    }
  }
  /** @type {Record<string, string>} */
  const config = {};
  const entries = options.config instanceof Map ? [...options.config] : Object.entries(options.config ?? {});
  for (const [k, v] of entries) {
    if (typeof v !== 'string') throw new TypeError(`createMfaStep: config.${k} must be a string`);
    config[k] = v;
  }
  if (!Number.isInteger(workers) || workers < 1) throw new TypeError('createMfaStep: workers must be a positive integer');

  const { manifest, modules } = await loadComponent(dist);
  const backends = { store, audit, mailer, clock };
  const jsUrl = new URL(manifest.js, dist).href;
  const workerUrl = new URL('./worker.js', import.meta.url);

  /** @type {Slot[]} */
  const slots = [];
  /** @type {Job[]} */
  const queue = [];
  let nextId = 0;
  let closed = false;
  /** The pool was up once (a pool with no worker left then refuses calls instead of queueing). */
  let started = false;
  /** Replacement workers being started. */
  let respawning = 0;
  /** @type {Record<string, string[]>} */
  let exported = {};

  /** @param {Slot} slot @param {Error} error */
  function fail(slot, error) {
    const job = slot.job;
    slot.job = null;
    clearTimeout(slot.deadline);
    if (job) job.reject(error);
  }

  /** @returns {Promise<Slot>} */
  function spawn() {
    const { port1, port2 } = new MessageChannel();
    const ctrl = new SharedArrayBuffer(4);
    serveBridge(port1, new Int32Array(ctrl), backends, { timeoutMs: callTimeoutMs, onBackendError });
    const worker = new Worker(workerUrl, {
      workerData: {
        jsUrl,
        modules,
        importNames: manifest.imports,
        config,
        ctrl,
        bridgePort: port2,
        // The main thread answers `unavailable` at callTimeoutMs; the worker's own limit is a
        // backstop for a main thread too busy to answer at all.
        timeoutMs: callTimeoutMs + 1000,
        bridgedClock: typeof clock === 'function',
      },
      transferList: [port2],
    });
    /** @type {Slot} */
    const slot = { worker, job: null, deadline: undefined, ready: false, started: false };
    return new Promise((resolve, reject) => {
      worker.on('message', (msg) => {
        if (msg.ready) {
          slot.ready = true;
          slot.started = true;
          exported = msg.exported;
          resolve(slot);
          return;
        }
        const job = slot.job;
        if (!job || msg.id !== job.id) return;
        slot.job = null;
        clearTimeout(slot.deadline);
        const info = {
          iface: job.iface,
          fn: job.fn,
          instantiateMs: msg.instantiateMs,
          workerMs: msg.totalMs,
          totalMs: performance.now() - job.queuedAt,
        };
        if ('ok' in msg) {
          onCall?.({ ...info, outcome: 'ok' });
          job.resolve(toPlain(msg.ok));
        } else if (msg.mfaError) {
          onCall?.({ ...info, outcome: 'error' });
          job.reject(mfaErrorOf(msg.mfaError));
        } else {
          onCall?.({ ...info, outcome: 'failure' });
          job.reject(
            msg.failure === 'shape'
              ? new MfaError(
                  'invalid-input',
                  `an argument of ${job.fn} does not have the shape the WIT contract gives it (strings, lists, records with camelCase fields; none as undefined or null)`,
                )
              : new MfaError('unavailable', `the component failed while running ${job.fn} (${msg.name}); nothing was granted`),
          );
        }
        dispatch();
      });
      worker.on('error', (error) => {
        onBackendError('worker', error);
        if (!slot.started) reject(error);
        slot.ready = false;
        fail(slot, new MfaError('unavailable', 'the worker running the call stopped; nothing was granted'));
      });
      worker.on('exit', (code) => {
        port1.close();
        if (!slot.started) reject(new Error(`the worker exited (code ${code}) before it was ready`));
        fail(slot, new MfaError('unavailable', 'the worker running the call stopped; nothing was granted'));
        const i = slots.indexOf(slot);
        if (i >= 0) slots.splice(i, 1);
        if (!closed && slot.started) {
          respawning += 1;
          spawn().then((fresh) => {
            respawning -= 1;
            if (closed) {
              void fresh.worker.terminate();
              return;
            }
            slots.push(fresh);
            dispatch();
          }, (error) => {
            respawning -= 1;
            onBackendError('worker', error);
            // No worker left to run them: queued calls fail now rather than wait for ever.
            if (slots.length === 0 && respawning === 0) {
              for (const job of queue.splice(0)) job.reject(new MfaError('unavailable', 'no worker could be started; nothing was granted'));
            }
          });
        }
      });
    });
  }

  function dispatch() {
    for (const slot of slots) {
      if (queue.length === 0) return;
      if (!slot.ready || slot.job) continue;
      const job = /** @type {Job} */ (queue.shift());
      slot.job = job;
      slot.deadline = setTimeout(() => {
        // Retired at once: no call goes to a worker being terminated.
        slot.ready = false;
        fail(slot, new MfaError('unavailable', `${job.fn} took longer than ${callDeadlineMs} ms; nothing was granted`));
        void slot.worker.terminate();
      }, callDeadlineMs);
      slot.worker.postMessage({ id: job.id, iface: job.iface, fn: job.fn, args: job.args });
    }
  }

  /**
   * @param {string} iface
   * @param {string} fn
   * @param {unknown[]} args
   */
  function call(iface, fn, ...args) {
    if (closed) return Promise.reject(new MfaError('unavailable', 'the engine is closed'));
    if (started && slots.length === 0 && respawning === 0) {
      return Promise.reject(new MfaError('unavailable', 'no worker is running; nothing was granted'));
    }
    return new Promise((resolve, reject) => {
      nextId += 1;
      queue.push({ id: nextId, iface, fn, args, resolve, reject, queuedAt: performance.now() });
      dispatch();
    });
  }

  try {
    for (let i = 0; i < workers; i += 1) slots.push(await spawn());
    started = true;
  } catch (error) {
    closed = true;
    await Promise.all(slots.map((s) => s.worker.terminate()));
    throw error;
  }

  /** @type {Record<string, any>} */
  const engine = {
    call,
    component: manifest,
    async close() {
      closed = true;
      for (const job of queue.splice(0)) job.reject(new MfaError('unavailable', 'the engine is closed'));
      await Promise.all(slots.map((s) => s.worker.terminate()));
    },
  };
  for (const [iface, fns] of Object.entries(exported)) {
    /** @type {Record<string, (...args: unknown[]) => Promise<unknown>>} */
    const methods = {};
    for (const fn of fns) methods[fn] = (...args) => call(iface, fn, ...args);
    if (iface === 'loginStep') Object.assign(engine, methods);
    else engine[iface] = methods;
  }
  return /** @type {MfaStep} */ (engine);
}
