// @ts-check
/**
 * The host conformance kit (`wit/conformance.wit`) on the Node host: the kit component runs over
 * this package's stores and audit sinks exactly as the real component does (same bridge, same
 * worker pool, a fresh instance per call), on memory and on Redis:
 *
 *   prepare(run) -> hammer(run, i, n, rounds) on n workers at once -> judge(run, n, rounds)
 *   -> break the backends -> expect-failures(run) -> mend
 *
 * Every step must answer no findings. And the kit must be able to fail: a store that answers
 * "absent" when it is broken (the fail-open mistake) gets a `fails-closed:get` finding.
 *
 * The kit: `npm run build` writes dist/conformance/ (from cargo, or MFA_STEP_CONFORMANCE_WASM=<file>).
 * Missing kit: skipped locally, a failure when CI is set.
 */

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { memoryAudit } from '../src/audit/memory.js';
import { redisAudit } from '../src/audit/redis.js';
import { createMfaStep } from '../src/engine.js';
import { captureMailer } from '../src/mailers/capture.js';
import { memoryStore } from '../src/stores/memory.js';
import { redisStore } from '../src/stores/redis.js';
import { CONFIG, redisUrl, uniquePrefix } from './support/fixtures.js';

const KIT = new URL('../dist/conformance/', import.meta.url);
const HAVE_KIT = existsSync(fileURLToPath(new URL('manifest.json', KIT)));
if (!HAVE_KIT && process.env.CI) {
  throw new Error('CI is set but the conformance kit is not built: run `npm run build` (dist/conformance/)');
}
const REDIS = redisUrl();
const INSTANCES = 8;
const ROUNDS = 25;

/**
 * Backends that can be broken and mended: while broken, every store and audit call rejects
 * (as a database that went away), unless `lying` is set, in which case reads answer "absent".
 * @param {any} store
 * @param {any} audit
 */
function breakable(store, audit) {
  const state = { broken: false, lying: false };
  /**
   * @param {any} backend
   * @param {Record<string, () => unknown>} lies what each call answers when lying
   */
  const wrap = (backend, lies) => {
    /** @type {Record<string, Function>} */
    const out = {};
    for (const [fn, impl] of Object.entries(backend)) {
      if (typeof impl !== 'function') continue;
      out[fn] = async (/** @type {unknown[]} */ ...args) => {
        if (state.broken) {
          if (state.lying && fn in lies) return lies[fn]();
          throw new Error('the database went away');
        }
        return impl.apply(backend, args);
      };
    }
    return out;
  };
  return {
    state,
    store: wrap(store, { get: () => null, listKeys: () => [], increment: () => 0, set: () => undefined, delete: () => undefined, commit: () => undefined }),
    audit: wrap(audit, { head: () => null, append: () => 'ok' }),
  };
}

/**
 * The kit's whole run over `store` and `audit`.
 * @param {any} store
 * @param {any} audit
 */
async function runKit(store, audit) {
  const b = breakable(store, audit);
  const kit = await createMfaStep({ store: b.store, audit: b.audit, mailer: captureMailer(), config: CONFIG, workers: INSTANCES, dist: KIT });
  try {
    const api = /** @type {any} */ (kit).conformanceKit;
    assert.ok(api, `the kit exports ${Object.keys(kit).join(', ')}`);
    const run = randomBytes(16).toString('hex');
    assert.deepEqual(await api.prepare(run), [], 'prepare');
    const hammered = await Promise.all(Array.from({ length: INSTANCES }, (_, i) => api.hammer(run, i, INSTANCES, ROUNDS)));
    assert.deepEqual(hammered.flat(), [], 'hammer');
    assert.deepEqual(await api.judge(run, INSTANCES, ROUNDS), [], 'judge');
    b.state.broken = true;
    try {
      assert.deepEqual(await api.expectFailures(run), [], 'expect-failures');
      // The kit can fail: a store that answers "absent" when broken is caught.
      b.state.lying = true;
      const findings = await api.expectFailures(run);
      const checks = findings.map((/** @type {{ check: string }} */ f) => f.check);
      assert.ok(checks.includes('fails-closed:get'), `findings: ${JSON.stringify(findings)}`);
    } finally {
      b.state.broken = false;
      b.state.lying = false;
    }
  } finally {
    await kit.close();
  }
}

describe('conformance kit on the Node host', { skip: HAVE_KIT ? false : 'dist/conformance is not built (CI fails here)' }, () => {
  test(`memory store and audit, ${INSTANCES} instances in parallel`, async () => {
    await runKit(memoryStore(), memoryAudit());
  });

  test(`redis store and audit, ${INSTANCES} instances in parallel`, { skip: REDIS ? false : 'MFA_STEP_TEST_REDIS_URL is not set (CI fails here)' }, async () => {
    const prefix = uniquePrefix('kit');
    const store = await redisStore(/** @type {string} */ (REDIS), { prefix });
    const audit = await redisAudit(/** @type {string} */ (REDIS), { prefix });
    try {
      await runKit(store, audit);
    } finally {
      await store.close();
      await audit.close();
    }
  });
});
