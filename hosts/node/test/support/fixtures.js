// @ts-check
/**
 * Shared fixtures of the engine, bridge, store and conformance tests: login contexts, actors,
 * backend wrappers that delay or break, and the Redis URL (required when CI is set).
 */

import { randomBytes } from 'node:crypto';

export const HMAC_KEY = 'ab'.repeat(32);
export const CONFIG = Object.freeze({ hmac_key: HMAC_KEY });

/**
 * The Redis URL of the test server, or null when there is none outside CI. In CI (`CI` set) a
 * missing URL is a failure, never a skip.
 * @returns {string | null}
 */
export function redisUrl() {
  const url = process.env.MFA_STEP_TEST_REDIS_URL ?? process.env.MFA_STEP_TEST_REDIS ?? null;
  if (!url && process.env.CI) {
    throw new Error('CI is set but MFA_STEP_TEST_REDIS_URL is not: start Redis (. .ci/servers.sh && start_servers) and export it');
  }
  return url;
}

/** A key prefix no other test run uses. */
export function uniquePrefix(name = 't') {
  return `mfa-node-test:${name}:${randomBytes(6).toString('hex')}`;
}

/**
 * @param {string} userId
 * @param {{ orgId?: string, roles?: string[], cookie?: string | null, email?: string }} [over]
 */
export function loginContext(userId, over = {}) {
  return {
    userId,
    orgId: over.orgId ?? 'acme',
    email: over.email ?? `${userId}@clinic.example`,
    roles: over.roles ?? ['clinician'],
    locale: null,
    device: {
      cookie: over.cookie ?? null,
      traits: { userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0', browserFamily: 'Firefox', browserMajor: 131 },
      ip: '203.0.113.7',
    },
  };
}

/**
 * @param {string} userId
 * @param {{ orgId?: string, roles?: string[] }} [over]
 */
export function actor(userId, over = {}) {
  return { userId, orgId: over.orgId ?? 'acme', roles: over.roles ?? [], ip: '203.0.113.7', userAgent: 'test' };
}

/** The cookie value to present back, from a `Set-Cookie` header. @param {string} setCookie */
export function cookieValue(setCookie) {
  return setCookie.split(';')[0].split('=').slice(1).join('=');
}

/**
 * A store that waits `ms` before every call.
 * @template {Record<string, any>} S
 * @param {S} store
 * @param {number} ms
 * @returns {S}
 */
export function slowStore(store, ms) {
  /** @type {Record<string, any>} */
  const out = {};
  for (const fn of ['get', 'set', 'delete', 'increment', 'listKeys', 'commit']) {
    out[fn] = async (/** @type {unknown[]} */ ...args) => {
      await new Promise((r) => setTimeout(r, ms));
      return store[fn](...args);
    };
  }
  return /** @type {S} */ (out);
}

/**
 * A store whose `get` of the keys `when` picks answers `answer()` (a rejection, a wrong type, a
 * promise that never settles …); every other call goes through.
 * @param {Record<string, any>} store
 * @param {(key: string) => boolean} when
 * @param {() => any} answer
 */
export function brokenGet(store, when, answer) {
  return {
    ...store,
    get: (/** @type {string} */ key) => (when(key) ? answer() : store.get(key)),
  };
}
