#!/usr/bin/env node
// @ts-check
/**
 * The per-login cost of the Node host: instantiating a fresh component, one login (begin +
 * sendCode + verify) on memory and on Redis, and logins per second through the worker pool.
 *
 *   npm run bench                                  # memory only
 *   MFA_STEP_BENCH_REDIS_URL=redis://127.0.0.1:6379/ npm run bench   # memory and Redis
 *   options (env): BENCH_LOGINS (sequential logins, default 200), BENCH_SECONDS (pool run, 10),
 *                  BENCH_WORKERS (default 2), BENCH_IN_FLIGHT (default 8)
 *
 * Each login is a new user of one organization (one audit stream, as at a clinic), so the send
 * window never refuses and audit appends contend as they would. Prints Markdown.
 */

import { execSync } from 'node:child_process';
import os from 'node:os';
import { memoryAudit } from '../src/audit/memory.js';
import { redisAudit } from '../src/audit/redis.js';
import { createMfaStep } from '../src/engine.js';
import { captureMailer } from '../src/mailers/capture.js';
import { memoryStore } from '../src/stores/memory.js';
import { redisStore } from '../src/stores/redis.js';

const LOGINS = Number(process.env.BENCH_LOGINS ?? 200);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
const IN_FLIGHT = Number(process.env.BENCH_IN_FLIGHT ?? 8);
const REDIS = process.env.MFA_STEP_BENCH_REDIS_URL ?? process.env.MFA_STEP_TEST_REDIS_URL ?? null;
const CONFIG = { hmac_key: 'cd'.repeat(32) };

/** @param {number[]} xs @param {number} q */
function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}
/** @param {number[]} xs */
const summary = (xs) => `${quantile(xs, 0.5).toFixed(2)} / ${quantile(xs, 0.99).toFixed(2)} / ${Math.max(...xs).toFixed(2)}`;

let userSeq = 0;
/** @param {string} tag */
function ctx(tag) {
  userSeq += 1;
  return {
    userId: `bench-${tag}-${process.pid}-${userSeq}`,
    orgId: 'bench-clinic',
    email: `u${userSeq}@clinic.example`,
    roles: ['clinician'],
    device: { traits: { userAgent: 'bench' }, ip: '203.0.113.9' },
  };
}

/**
 * @param {import('../src/engine.js').MfaStep} engine
 * @param {ReturnType<typeof captureMailer>} mailer
 * @param {string} tag
 */
async function login(engine, mailer, tag) {
  const c = ctx(tag);
  const d = await engine.begin(c);
  if (d.tag !== 'challenge') throw new Error(`begin answered ${d.tag}`);
  await engine.sendCode(c, d.val.challengeId);
  const code = mailer.codeIn(mailer.last(c.email));
  if (!code) throw new Error('no code');
  const v = await engine.verify(c, d.val.challengeId, code, false);
  if (!v.amr.includes('mfa')) throw new Error('no mfa');
  if (mailer.messages.length > 1000) mailer.messages.splice(0, 500);
}

/**
 * @param {string} name
 * @param {() => Promise<{ store: any, audit: any, close: () => Promise<void> }>} make
 */
async function run(name, make) {
  const backends = await make();
  const mailer = captureMailer();
  /** @type {number[]} */
  const instantiate = [];
  /** @type {number[]} */
  const perCall = [];
  const engine = await createMfaStep({
    ...backends,
    mailer,
    config: CONFIG,
    workers: WORKERS,
    onCall: (i) => {
      instantiate.push(i.instantiateMs);
      perCall.push(i.workerMs);
    },
  });
  try {
    for (let i = 0; i < 20; i += 1) await login(engine, mailer, 'warm');
    instantiate.length = 0;
    perCall.length = 0;
    /** @type {number[]} */
    const logins = [];
    for (let i = 0; i < LOGINS; i += 1) {
      const t0 = performance.now();
      await login(engine, mailer, 'seq');
      logins.push(performance.now() - t0);
    }
    const seqInstantiate = [...instantiate];
    const seqCalls = [...perCall];

    let done = 0;
    const end = performance.now() + SECONDS * 1000;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (performance.now() < end) {
          await login(engine, mailer, 'pool');
          done += 1;
        }
      }),
    );
    const elapsed = (performance.now() - t0) / 1000;
    return {
      name,
      instantiate: summary(seqInstantiate),
      call: summary(seqCalls),
      login: summary(logins),
      loginsPerSecond: (done / elapsed).toFixed(0),
      callsPerSecond: ((3 * done) / elapsed).toFixed(0),
    };
  } finally {
    await engine.close();
    await backends.close();
  }
}

const results = [];
results.push(await run('memory', async () => ({ store: memoryStore(), audit: memoryAudit(), close: async () => {} })));
if (REDIS) {
  const prefix = `mfa-node-bench:${process.pid}`;
  results.push(
    await run('redis', async () => {
      const store = await redisStore(REDIS, { prefix });
      const audit = await redisAudit(REDIS, { prefix });
      return {
        store,
        audit,
        close: async () => {
          await store.close();
          await audit.close();
        },
      };
    }),
  );
}

let uptime = '';
try {
  uptime = execSync('uptime', { encoding: 'utf8' }).trim();
} catch {
  uptime = `loadavg ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`;
}
console.log(`Node ${process.version}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), workers ${WORKERS}, ${IN_FLIGHT} logins in flight`);
console.log(`load: ${uptime}`);
console.log(`sequential: ${LOGINS} logins; pool: ${SECONDS} s. Times in ms as p50 / p99 / max.\n`);
console.log('| backends | instantiate (ms) | one call in the worker (ms) | one login, sequential (ms) | logins/s (pool) | calls/s (pool) |');
console.log('|---|---|---|---|---|---|');
for (const r of results) {
  console.log(`| ${r.name} | ${r.instantiate} | ${r.call} | ${r.login} | ${r.loginsPerSecond} | ${r.callsPerSecond} |`);
}
