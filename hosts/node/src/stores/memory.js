// @ts-check
/**
 * @module stores/memory
 * `memoryStore()`: the store contract of `wit/store.wit` in this process's memory, for tests,
 * examples and a single-process demo. Nothing survives a restart.
 *
 * - Values and counters live in separate maps (a key used with `increment` is never read by
 *   `get`); `delete` removes both.
 * - `increment` is atomic (JS runs it in one turn) and applies the expiry rule: a counter created
 *   by the call takes the expiry given, one with an expiry keeps the later of the two, one kept
 *   for good stays so; `increment(key, 0, …)` on an absent counter answers 0 and creates nothing.
 * - An expired key reads as absent (and is dropped when met); `sweep()` forgets all expired keys.
 * - Each call is durable when it returns (as far as memory goes): `commit` answers at once.
 */

/**
 * The async store a Node host provides (the WIT `store` in JS). Keys and values are checked
 * against the WIT limits by the bridge before they reach it. Any throw or rejection is
 * `unavailable` (a `StoreError('invalid', …)` is `invalid`), and so is an answer of the wrong type.
 * @typedef {object} Store
 * @property {(key: string) => Promise<Uint8Array | null>} get
 * @property {(key: string, value: Uint8Array, expiresAt: number | null) => Promise<void>} set
 * @property {(key: string) => Promise<void>} delete
 * @property {(key: string, delta: number, expiresAt: number | null) => Promise<number | bigint>} increment
 * @property {(prefix: string) => Promise<string[]>} listKeys
 * @property {() => Promise<void>} commit
 */

import { StoreError } from '../errors.js';

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/**
 * @param {{ now?: () => number }} [options] `now`: the clock expiries are judged by, in Unix
 *   seconds (default: the system clock); give the engine's test clock when it has one
 * @returns {Store & {
 *   sweep(): number,
 *   size(): { values: number, counters: number },
 *   expiryOf(key: string, counter: boolean): number | null,
 * }}
 */
export function memoryStore(options = {}) {
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));
  /** @type {Map<string, { value: Uint8Array, expiresAt: number | null }>} */
  const values = new Map();
  /** @type {Map<string, { count: bigint, expiresAt: number | null }>} */
  const counters = new Map();

  /**
   * @template {{ expiresAt: number | null }} T
   * @param {Map<string, T>} map
   * @param {string} key
   * @returns {T | undefined}
   */
  function live(map, key) {
    const entry = map.get(key);
    if (entry && entry.expiresAt !== null && entry.expiresAt <= now()) {
      map.delete(key);
      return undefined;
    }
    return entry;
  }

  return {
    async get(key) {
      const entry = live(values, key);
      return entry ? entry.value.slice() : null;
    },
    async set(key, value, expiresAt) {
      values.set(key, { value: value.slice(), expiresAt });
    },
    async delete(key) {
      values.delete(key);
      counters.delete(key);
    },
    async increment(key, delta, expiresAt) {
      const entry = live(counters, key);
      if (!entry) {
        if (delta === 0) return 0n;
        counters.set(key, { count: BigInt(delta), expiresAt });
        return BigInt(delta);
      }
      const count = entry.count + BigInt(delta);
      if (count < I64_MIN || count > I64_MAX) {
        throw new StoreError('invalid', 'counter overflow: the increment would leave the 64-bit range; nothing changed');
      }
      entry.count = count;
      if (expiresAt !== null && entry.expiresAt !== null) entry.expiresAt = Math.max(entry.expiresAt, expiresAt);
      return count;
    },
    async listKeys(prefix) {
      const keys = [];
      for (const key of [...values.keys()]) {
        if (key.startsWith(prefix) && live(values, key)) keys.push(key);
      }
      return keys;
    },
    async commit() {},
    sweep() {
      let removed = 0;
      for (const map of [values, counters]) {
        for (const key of [...map.keys()]) {
          if (!live(/** @type {Map<string, { expiresAt: number | null }>} */ (map), key)) removed += 1;
        }
      }
      return removed;
    },
    expiryOf(key, counter) {
      const entry = counter ? live(counters, key) : live(values, key);
      return entry ? entry.expiresAt : null;
    },
    size() {
      return { values: values.size, counters: counters.size };
    },
  };
}
