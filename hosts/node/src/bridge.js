// @ts-check
/**
 * @module bridge
 * The synchronous bridge between a component running in a worker thread and the asynchronous
 * store, audit sink and mailer in the main thread.
 *
 * Component imports are synchronous: a JS import cannot await. So the component runs in a worker,
 * and each import call there:
 *
 * ```text
 *   worker                                   main thread (event loop never blocked)
 *   ------                                   -------------------------------------
 *   port.postMessage({seq, op, args})  --->  await backend[op](...args)   (with a timeout)
 *   Atomics.wait(ctrl, 0, seen, left)        check the answer's type
 *        ...blocked...               <---    port.postMessage({seq, ok | err})
 *                                            Atomics.add(ctrl, 0, 1); Atomics.notify(ctrl, 0)
 *   receiveMessageOnPort(port) -> answer
 * ```
 *
 * The answer travels over the MessagePort (structured clone: any size, bytes and bigints intact),
 * read synchronously with `receiveMessageOnPort`; the SharedArrayBuffer only carries the wake-up
 * counter. Answers carry the request's `seq`; a late answer to a call that already timed out is
 * dropped, never taken as the answer to the next one.
 *
 * Fail closed: a backend that throws, rejects, answers with the wrong type, or takes longer than
 * the timeout gives the component the WIT `err(unavailable(...))` for that import (`conflict` and
 * `invalid` only when the backend says so in the documented way), never "absent" and never a made
 * up success. Messages name the operation, never a key's value, a stored value or a message body.
 */

import { receiveMessageOnPort } from 'node:worker_threads';
import { MailError, StoreError } from './errors.js';

/** Keys are at most 512 bytes of printable ASCII (`wit/store.wit`). */
export const MAX_KEY_BYTES = 512;
/** Values are at most 64 KiB (`wit/store.wit`). */
export const MAX_VALUE_BYTES = 64 * 1024;

const HEX64 = /^[0-9a-f]{64}$/;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/**
 * The async backends an engine bridges to. See README.md, "The engine", for each contract.
 * @typedef {object} Backends
 * @property {import('./stores/memory.js').Store} store
 * @property {import('./audit/memory.js').AuditSink} audit
 * @property {import('./mailers/capture.js').Mailer} mailer
 * @property {(() => number) | undefined} [clock] milliseconds since the epoch, when the engine runs on a test clock
 */

/**
 * One import's answer as jco wants it: `ok` the value, or `err` the WIT error variant.
 * @typedef {{ seq: number, ok?: unknown, err?: { tag: string, val?: string } }} Answer
 */

/**
 * @param {string} text
 * @param {string} what
 * @returns {string | null} why `text` breaks the key rules, or null
 */
function keyProblem(text, what) {
  if (text.length > MAX_KEY_BYTES) {
    return `invalid ${what}: ${text.length} bytes is over the limit of ${MAX_KEY_BYTES} bytes`;
  }
  for (let i = 0; i < text.length; i += 1) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) {
      return `invalid ${what}: byte ${i} is not printable ASCII (0x20 to 0x7E)`;
    }
  }
  return null;
}

/**
 * @param {unknown} key
 * @returns {string | null}
 */
function checkKey(key) {
  if (typeof key !== 'string') return 'invalid key: not a string';
  if (key.length === 0) return 'invalid key: it is empty';
  return keyProblem(key, 'key');
}

/**
 * An `option<s64>` expiry as a JS number, or null.
 * @param {unknown} at
 * @returns {number | null | undefined} undefined when it is out of range
 */
function expiry(at) {
  if (at === undefined || at === null) return null;
  const n = Number(at);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * @param {string} tag
 * @param {string} [val]
 * @returns {{ tag: string, val?: string }}
 */
function variant(tag, val) {
  return val === undefined ? { tag } : { tag, val };
}

/**
 * @param {string} op
 * @param {string} why
 */
function unavailable(op, why) {
  return variant('unavailable', `${op} failed: ${why}`);
}

/**
 * Describes a backend failure without repeating its message (it may quote a value): the error's
 * class and code only. The full error goes to `onBackendError`, which the operator controls.
 * @param {unknown} e
 */
function describe(e) {
  if (e instanceof Error) {
    const code = /** @type {{ code?: unknown }} */ (e).code;
    return typeof code === 'string' ? `${e.name} (${code})` : e.name;
  }
  return 'the backend threw a non-Error value';
}

/**
 * Runs one import against the backends and checks the answer's type. Never throws.
 * @param {Backends} backends
 * @param {string} op
 * @param {unknown[]} args
 * @param {(op: string, error: unknown) => void} onBackendError
 * @returns {Promise<{ ok?: unknown, err?: { tag: string, val?: string } }>}
 */
export async function runImport(backends, op, args, onBackendError) {
  const { store, audit, mailer } = backends;
  try {
    switch (op) {
      case 'store.get': {
        const problem = checkKey(args[0]);
        if (problem) return { err: variant('invalid', problem) };
        const value = await store.get(/** @type {string} */ (args[0]));
        // Only `null` is "absent": `undefined` is what a backend with a missing `return` answers,
        // and reading it as absent would skip a stored mandate.
        if (value === null) return { ok: undefined };
        if (!(value instanceof Uint8Array)) {
          return { err: unavailable(op, 'the store answered something else than bytes or null') };
        }
        if (value.byteLength > MAX_VALUE_BYTES) {
          return { err: unavailable(op, 'the store answered a value over 64 KiB') };
        }
        // A copy of exactly the value: posting a view would clone its whole backing buffer (a
        // Buffer from a client is often a slice of a larger one, holding other replies).
        return { ok: Uint8Array.prototype.slice.call(value) };
      }
      case 'store.set': {
        const [key, value, at] = args;
        const problem = checkKey(key);
        if (problem) return { err: variant('invalid', problem) };
        if (!(value instanceof Uint8Array)) return { err: variant('invalid', 'invalid value: not bytes') };
        if (value.byteLength > MAX_VALUE_BYTES) {
          return {
            err: variant(
              'invalid',
              `invalid value: ${value.byteLength} bytes is over the limit of ${MAX_VALUE_BYTES} bytes`,
            ),
          };
        }
        const expiresAt = expiry(at);
        if (expiresAt === undefined) return { err: variant('invalid', 'invalid expiry: out of range') };
        const done = await store.set(/** @type {string} */ (key), value, expiresAt);
        if (done !== undefined) return { err: unavailable(op, 'the store answered a value to a set') };
        return { ok: undefined };
      }
      case 'store.delete': {
        const problem = checkKey(args[0]);
        if (problem) return { err: variant('invalid', problem) };
        const done = await store.delete(/** @type {string} */ (args[0]));
        if (done !== undefined) return { err: unavailable(op, 'the store answered a value to a delete') };
        return { ok: undefined };
      }
      case 'store.increment': {
        const [key, delta, at] = args;
        const problem = checkKey(key);
        if (problem) return { err: variant('invalid', problem) };
        const d = Number(delta);
        if (!Number.isSafeInteger(d)) return { err: variant('invalid', 'invalid delta: out of range') };
        const expiresAt = expiry(at);
        if (expiresAt === undefined) return { err: variant('invalid', 'invalid expiry: out of range') };
        const value = await store.increment(/** @type {string} */ (key), d, expiresAt);
        /** @type {bigint} */
        let count;
        if (typeof value === 'bigint') count = value;
        else if (typeof value === 'number' && Number.isSafeInteger(value)) count = BigInt(value);
        else return { err: unavailable(op, 'the store answered something else than an integer') };
        if (count < I64_MIN || count > I64_MAX) {
          return { err: unavailable(op, 'the store answered a count outside the 64-bit range') };
        }
        return { ok: count };
      }
      case 'store.listKeys': {
        const prefix = args[0];
        if (typeof prefix !== 'string') return { err: variant('invalid', 'invalid prefix: not a string') };
        const problem = keyProblem(prefix, 'prefix');
        if (problem) return { err: variant('invalid', problem) };
        const keys = await store.listKeys(prefix);
        if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string' && k.startsWith(prefix))) {
          return { err: unavailable(op, 'the store answered something else than a list of keys with the prefix') };
        }
        return { ok: [...keys] };
      }
      case 'store.commit': {
        const done = await store.commit();
        if (done !== undefined) return { err: unavailable(op, 'the store answered a value to a commit') };
        return { ok: undefined };
      }
      case 'audit.head': {
        const head = await audit.head(/** @type {string} */ (args[0]));
        if (head === null) return { ok: undefined };
        if (typeof head !== 'object') return { err: unavailable(op, 'the sink answered something else than a head') };
        const { seq, hash } = /** @type {{ seq: unknown, hash: unknown }} */ (head);
        const n = typeof seq === 'bigint' ? seq : typeof seq === 'number' && Number.isSafeInteger(seq) ? BigInt(seq) : -1n;
        if (n < 1n || typeof hash !== 'string' || !HEX64.test(hash)) {
          return { err: unavailable(op, 'the sink answered a head without a valid seq and hash') };
        }
        return { ok: { seq: n, hash } };
      }
      case 'audit.append': {
        const e = /** @type {Record<string, unknown>} */ (args[0]);
        const entry = {
          orgId: e.orgId,
          seq: Number(e.seq),
          at: Number(e.at),
          action: e.action,
          prev: e.prev,
          hash: e.hash,
          line: e.line,
        };
        const outcome = await audit.append(/** @type {import('./audit/memory.js').AuditEntry} */ (entry));
        if (outcome === 'ok') return { ok: undefined };
        if (outcome === 'conflict') return { err: variant('conflict') };
        return { err: unavailable(op, "the sink answered something else than 'ok' or 'conflict'") };
      }
      case 'audit.noteRefusal': {
        // Cannot fail (WIT): a failing note is dropped, as the contract allows.
        if (audit.noteRefusal) {
          try {
            await audit.noteRefusal(/** @type {import('./audit/memory.js').RefusalNote} */ (args[0]));
          } catch (error) {
            onBackendError(op, error);
          }
        }
        return { ok: undefined };
      }
      case 'mailer.send': {
        await mailer.send(/** @type {import('./mailers/capture.js').MailMessage} */ (args[0]));
        return { ok: undefined };
      }
      case 'clock.now': {
        const ms = backends.clock ? backends.clock() : Date.now();
        if (typeof ms !== 'number' || !Number.isFinite(ms)) return { err: unavailable(op, 'the clock answered a non-number') };
        return { ok: ms };
      }
      default:
        return { err: unavailable(op, 'unknown import') };
    }
  } catch (error) {
    onBackendError(op, error);
    if (op.startsWith('store.') && error instanceof StoreError && error.kind === 'invalid') {
      return { err: variant('invalid', error.message) };
    }
    if (op === 'mailer.send' && error instanceof MailError && error.kind === 'rejected-recipient') {
      return { err: variant('rejected-recipient', error.message) };
    }
    return { err: unavailable(op, describe(error)) };
  }
}

/**
 * Main-thread side: answers one worker's import calls on `port`. Each call runs against the
 * backends with `timeoutMs`; the answer is posted, then the worker woken.
 * @param {import('node:worker_threads').MessagePort} port
 * @param {Int32Array} ctrl the shared wake-up counter (index 0)
 * @param {Backends} backends
 * @param {{ timeoutMs: number, onBackendError: (op: string, error: unknown) => void }} options
 */
export function serveBridge(port, ctrl, backends, { timeoutMs, onBackendError }) {
  port.on('message', async (/** @type {{ seq: number, op: string, args: unknown[] }} */ request) => {
    const { seq, op, args } = request;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve({ err: unavailable(op, `no answer within ${timeoutMs} ms`) }), timeoutMs);
    });
    const answer = /** @type {{ ok?: unknown, err?: { tag: string, val?: string } }} */ (
      await Promise.race([runImport(backends, op, args, onBackendError), timeout])
    );
    clearTimeout(timer);
    try {
      port.postMessage({ seq, ...answer });
    } catch (error) {
      // An answer that cannot be cloned is a backend bug: the worker gets unavailable.
      onBackendError(op, error);
      port.postMessage({ seq, err: unavailable(op, 'the answer could not be passed to the component') });
    }
    Atomics.add(ctrl, 0, 1);
    Atomics.notify(ctrl, 0);
  });
  // The bridge must not keep the process alive by itself: the pool's workers hold it.
  port.unref();
}

/**
 * Worker side: a synchronous caller. `call(op, args)` posts the request and blocks (Atomics.wait)
 * until the main thread's answer for this `seq` arrives, or `timeoutMs` passes (then `unavailable`).
 * @param {import('node:worker_threads').MessagePort} port
 * @param {Int32Array} ctrl
 * @param {number} timeoutMs
 * @returns {(op: string, args: unknown[]) => Answer}
 */
export function syncCaller(port, ctrl, timeoutMs) {
  let lastSeq = 0;
  return (op, args) => {
    lastSeq += 1;
    const seq = lastSeq;
    port.postMessage({ seq, op, args });
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const seen = Atomics.load(ctrl, 0);
      for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
        const answer = /** @type {Answer} */ (m.message);
        if (answer.seq === seq) return answer;
        // A late answer to an earlier call that timed out: dropped.
      }
      const left = deadline - performance.now();
      if (left <= 0) return { seq, err: unavailable(op, `no answer within ${timeoutMs} ms`) };
      Atomics.wait(ctrl, 0, seen, left);
    }
  };
}
