// @ts-check
/**
 * The backends: stores and audit sinks against `wit/store.wit` and `wit/audit.wit`, on memory and
 * Redis (namespaces, reads that create nothing, the expiry rule "later of", list-keys taken
 * literally, atomic increments under concurrency, appends that only link to the head, a trail that
 * `mfa-step audit verify` accepts), and the SMTP mailer against a minimal SMTP server.
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import { captureMailer, createMfaStep, MailError, memoryAudit, memoryStore, redisAudit, redisStore, smtpMailer } from '../src/index.js';
import { GENESIS } from '../src/audit/memory.js';
import { connectRedis } from '../src/stores/redis-connect.js';
import { CONFIG, HMAC_KEY, loginContext, redisUrl, uniquePrefix } from './support/fixtures.js';

const REDIS = redisUrl();
const bytes = (/** @type {string} */ s) => new TextEncoder().encode(s);
const text = (/** @type {Uint8Array | null} */ b) => (b === null ? null : new TextDecoder().decode(b));
const nowS = () => Math.floor(Date.now() / 1000);

/**
 * @param {string} name
 * @param {() => Promise<{ store: any, expiryOf: (key: string, counter: boolean) => Promise<number | null>, close: () => Promise<void> }>} make
 */
function storeSuite(name, make) {
  describe(`store contract: ${name}`, () => {
    /** @type {any} */
    let s;
    /** @type {any} */
    let env;
    before(async () => {
      env = await make();
      s = env.store;
    });
    after(async () => env?.close());

    test('values and counters live apart; delete removes both', async () => {
      await s.set('k', bytes('v'), null);
      assert.equal(await s.increment('k', 5, null), 5n);
      assert.equal(text(await s.get('k')), 'v');
      assert.deepEqual(await s.listKeys('k'), ['k']);
      await s.delete('k');
      assert.equal(await s.get('k'), null);
      assert.equal(await s.increment('k', 0, null), 0n);
      await s.delete('never-there');
    });

    test('a counter is invisible to get and list-keys', async () => {
      await s.increment('only-counter', 1, null);
      assert.equal(await s.get('only-counter'), null);
      assert.deepEqual(await s.listKeys('only-'), []);
    });

    test('increment(k, 0) creates nothing, even with an expiry', async () => {
      assert.equal(await s.increment('zero', 0, nowS() + 100), 0n);
      assert.equal(await env.expiryOf('zero', true), null);
      assert.equal(await s.increment('zero', -3, null), -3n);
      assert.equal(await s.increment('zero', 0, null), -3n);
    });

    test('expiry: created with the given one; later of the two after; kept for good stays so', async () => {
      const t = nowS();
      await s.increment('exp', 1, t + 100);
      assert.equal(await env.expiryOf('exp', true), t + 100);
      await s.increment('exp', 1, t + 50);
      assert.equal(await env.expiryOf('exp', true), t + 100, 'an earlier expiry does not shorten');
      await s.increment('exp', 1, t + 200);
      assert.equal(await env.expiryOf('exp', true), t + 200);
      await s.increment('exp', 1, null);
      assert.equal(await env.expiryOf('exp', true), t + 200, 'none leaves it');
      await s.increment('forever', 1, null);
      await s.increment('forever', 1, t + 100);
      assert.equal(await env.expiryOf('forever', true), null, 'kept for good stays so');
      await s.set('v-exp', bytes('x'), t + 300);
      assert.equal(await env.expiryOf('v-exp', false), t + 300);
      await s.set('v-exp', bytes('y'), null);
      assert.equal(await env.expiryOf('v-exp', false), null, 'set replaces the expiry');
    });

    test('an expiry in the past: the key is gone', async () => {
      await s.set('past', bytes('x'), nowS() - 10);
      assert.equal(await s.get('past'), null);
      assert.deepEqual(await s.listKeys('past'), []);
    });

    test('list-keys: exactly the value keys under the prefix, glob characters taken literally', async () => {
      for (const k of ['p%_*?[\\:a', 'p%_*?[\\:b', 'p%_X?[\\:c', 'p%_*?[\\', 'q:a']) await s.set(k, bytes('1'), null);
      await s.increment('p%_*?[\\:counter', 1, null);
      await s.set('p%_*?[\\:gone', bytes('1'), null);
      await s.delete('p%_*?[\\:gone');
      assert.deepEqual((await s.listKeys('p%_*?[\\:')).sort(), ['p%_*?[\\:a', 'p%_*?[\\:b']);
    });

    test('bytes are kept byte for byte, up to 64 KiB', async () => {
      const v = new Uint8Array(64 * 1024).map((_, i) => (i * 31 + 7) & 0xff);
      await s.set('bin', v, null);
      assert.deepEqual(Buffer.from(await s.get('bin')), Buffer.from(v));
    });

    test('200 concurrent increments: every number from 1 to 200 once', async () => {
      const got = await Promise.all(Array.from({ length: 200 }, () => s.increment('race', 1, nowS() + 60)));
      assert.deepEqual(got.map(Number).sort((a, b) => a - b), Array.from({ length: 200 }, (_, i) => i + 1));
    });
  });
}

storeSuite('memory', async () => {
  const store = memoryStore();
  return {
    store,
    expiryOf: async (/** @type {string} */ key, /** @type {boolean} */ counter) => store.expiryOf(key, counter),
    close: async () => {},
  };
});

// The memory store's expiry rule, on a clock the test moves.
describe('memory store expiry on a test clock', () => {
  test('later of, and a read of an expired counter starts from 0', async () => {
    let t = 1000;
    const s = memoryStore({ now: () => t });
    await s.increment('c', 1, 1100);
    await s.increment('c', 1, 1050);
    t = 1060;
    assert.equal(await s.increment('c', 0, null), 2n, 'the later expiry (1100) holds');
    t = 1100;
    assert.equal(await s.increment('c', 0, null), 0n, 'gone at its expiry');
    await s.increment('f', 1, null);
    await s.increment('f', 1, 1001);
    t = 999999;
    assert.equal(await s.increment('f', 0, null), 2n, 'kept for good');
    await s.set('v', bytes('x'), 1000000);
    t = 1000000;
    assert.equal(await s.get('v'), null);
  });
});

describe('store contract: redis', { skip: REDIS ? false : 'MFA_STEP_TEST_REDIS_URL is not set (CI fails here)' }, () => {
  storeSuite('redis', async () => {
    const prefix = uniquePrefix('store');
    const store = await redisStore(/** @type {string} */ (REDIS), { prefix });
    const raw = await connectRedis(/** @type {string} */ (REDIS));
    return {
      store,
      async expiryOf(key, counter) {
        const at = Number(await raw.command(['EXPIRETIME', `${prefix}:${counter ? 'c' : 'v'}:${key}`]));
        return at < 0 ? null : at;
      },
      async close() {
        await store.close();
        await raw.close();
      },
    };
  });
});

/**
 * @param {string} name
 * @param {() => Promise<{ audit: any, close: () => Promise<void> }>} make
 */
function auditSuite(name, make) {
  describe(`audit contract: ${name}`, () => {
    /** @type {any} */
    let env;
    before(async () => {
      env = await make();
    });
    after(async () => env?.close());

    /** @param {string} org @param {number} seq @param {string} prev @param {string} hash */
    const entry = (org, seq, prev, hash) => ({ orgId: org, seq, at: 0, action: 'x', prev, hash, line: `{"org":"${org}","seq":${seq}}` });
    const h = (/** @type {number} */ n) => n.toString(16).padStart(64, '0');

    test('append links to the head or answers conflict and writes nothing', async () => {
      const a = env.audit;
      assert.equal(await a.head('o1'), null);
      assert.equal(await a.append(entry('o1', 2, GENESIS, h(1))), 'conflict');
      assert.equal(await a.append(entry('o1', 1, h(9), h(1))), 'conflict');
      assert.equal(await a.append(entry('o1', 1, GENESIS, h(1))), 'ok');
      assert.equal(await a.append(entry('o1', 1, GENESIS, h(2))), 'conflict');
      assert.equal(await a.append(entry('o1', 2, h(7), h(2))), 'conflict');
      assert.equal(await a.append(entry('o1', 2, h(1), h(2))), 'ok');
      const head = await a.head('o1');
      assert.equal(Number(head.seq), 2);
      assert.equal(head.hash, h(2));
      assert.equal(await a.exportJsonl('o1'), '{"org":"o1","seq":1}\n{"org":"o1","seq":2}\n');
    });

    test('32 racing appends at one position: exactly one wins', async () => {
      const results = await Promise.all(Array.from({ length: 32 }, (_, i) => env.audit.append(entry('race', 1, GENESIS, h(100 + i)))));
      assert.equal(results.filter((r) => r === 'ok').length, 1);
      assert.equal(results.filter((r) => r === 'conflict').length, 31);
    });
  });
}

auditSuite('memory', async () => ({ audit: memoryAudit(), close: async () => {} }));
describe('audit on redis', { skip: REDIS ? false : 'MFA_STEP_TEST_REDIS_URL is not set (CI fails here)' }, () => {
  auditSuite('redis', async () => {
    const audit = await redisAudit(/** @type {string} */ (REDIS), { prefix: uniquePrefix('audit') });
    return { audit, close: () => audit.close() };
  });
});

/** The `mfa-step` binary: `MFA_STEP_BIN`, or the repository's build. In CI its absence fails. */
function mfaStepBin() {
  const repo = fileURLToPath(new URL('../../../', import.meta.url));
  const found = [process.env.MFA_STEP_BIN, join(repo, 'target/release/mfa-step'), join(repo, 'target/debug/mfa-step')].find(
    (p) => p && existsSync(p),
  );
  if (!found && process.env.CI) throw new Error('CI is set but no mfa-step binary: build it (cargo build -p host-harness) or set MFA_STEP_BIN');
  return found ?? null;
}

const BIN = mfaStepBin();

describe('the trail as JSONL passes mfa-step audit verify', { skip: BIN ? false : 'no mfa-step binary (CI fails here)' }, () => {
  /**
   * @param {any} audit
   * @param {any} store
   */
  async function exercise(audit, store) {
    const mailer = captureMailer();
    const engine = await createMfaStep({ store, audit, mailer, config: CONFIG, workers: 2 });
    try {
      await Promise.all(
        ['ana', 'ben', 'cy', 'dee'].map(async (user) => {
          const ctx = loginContext(user, { orgId: user === 'dee' ? 'other' : 'acme' });
          const d = await engine.begin(ctx);
          await engine.sendCode(ctx, d.val.challengeId);
          await engine.verify(ctx, d.val.challengeId, '000000', false).catch(() => {});
          await engine.verify(ctx, d.val.challengeId, /** @type {string} */ (mailer.codeIn(mailer.last(ctx.email))), false);
        }),
      );
    } finally {
      await engine.close();
    }
    const dir = mkdtempSync(join(tmpdir(), 'mfa-node-audit-'));
    const file = join(dir, 'audit.jsonl');
    await audit.writeJsonl(file);
    const run = spawnSync(/** @type {string} */ (BIN), ['audit', 'verify', '--data-dir', dir, '--audit', file], {
      env: { ...process.env, MFA_STEP_HMAC_KEY: HMAC_KEY },
      encoding: 'utf8',
    });
    assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`);
    assert.match(run.stdout + run.stderr, /OK: the log is whole/);
    assert.match(run.stdout + run.stderr, /seals checked/);
  }

  test('memory', async () => {
    await exercise(memoryAudit(), memoryStore());
  });

  test('redis', { skip: REDIS ? false : 'MFA_STEP_TEST_REDIS_URL is not set (CI fails here)' }, async () => {
    const prefix = uniquePrefix('verify');
    const audit = await redisAudit(/** @type {string} */ (REDIS), { prefix });
    const store = await redisStore(/** @type {string} */ (REDIS), { prefix });
    try {
      await exercise(audit, store);
    } finally {
      await audit.close();
      await store.close();
    }
  });
});

/**
 * A minimal SMTP server on loopback: takes every recipient but those containing `refused` (550),
 * keeps each message's DATA. No TLS.
 */
async function smtpServer() {
  /** @type {string[]} */
  const messages = [];
  const server = createServer((socket) => {
    socket.setEncoding('latin1');
    let buffer = '';
    let inData = false;
    socket.write('220 test ESMTP\r\n');
    socket.on('data', (chunk) => {
      buffer += chunk;
      for (;;) {
        if (inData) {
          const end = buffer.indexOf('\r\n.\r\n');
          if (end < 0) return;
          messages.push(buffer.slice(0, end));
          buffer = buffer.slice(end + 5);
          inData = false;
          socket.write('250 queued\r\n');
          continue;
        }
        const eol = buffer.indexOf('\r\n');
        if (eol < 0) return;
        const line = buffer.slice(0, eol);
        buffer = buffer.slice(eol + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO' || verb === 'HELO') socket.write('250-test\r\n250 8BITMIME\r\n');
        else if (verb === 'RCPT') socket.write(line.includes('refused') ? '550 5.1.1 no such user\r\n' : '250 ok\r\n');
        else if (verb === 'DATA') {
          inData = true;
          socket.write('354 go on\r\n');
        } else if (verb === 'QUIT') socket.end('221 bye\r\n');
        else socket.write('250 ok\r\n');
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', () => r(undefined)));
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());
  return { port: address.port, messages, close: () => new Promise((r) => server.close(() => r(undefined))) };
}

describe('the SMTP mailer', () => {
  const message = { to: 'dr@clinic.example', senderName: 'Acme Clinic', subject: 'Your code', html: '<p>123456</p>', text: 'Your code:\n123456\n' };

  test("delivers both parts, From with the sender name and the host's address", async () => {
    const smtp = await smtpServer();
    const mailer = smtpMailer({ host: '127.0.0.1', port: smtp.port, from: 'mfa@clinic.example', insecureNoTls: true });
    try {
      await mailer.send(message);
      assert.equal(smtp.messages.length, 1);
      const raw = smtp.messages[0];
      assert.match(raw, /^From: Acme Clinic <mfa@clinic\.example>$/m);
      assert.match(raw, /^To: dr@clinic\.example$/m);
      assert.match(raw, /^Subject: Your code$/m);
      assert.match(raw, /text\/plain/);
      assert.match(raw, /text\/html/);
    } finally {
      mailer.close();
      await smtp.close();
    }
  });

  test('a refused recipient is rejected-recipient; no server is unavailable; neither repeats the body', async () => {
    const smtp = await smtpServer();
    const mailer = smtpMailer({ host: '127.0.0.1', port: smtp.port, from: 'mfa@clinic.example', insecureNoTls: true, timeoutMs: 2000 });
    try {
      await assert.rejects(mailer.send({ ...message, to: 'refused@clinic.example' }), (/** @type {any} */ e) => {
        assert.ok(e instanceof MailError);
        assert.equal(e.kind, 'rejected-recipient');
        assert.ok(!e.message.includes('123456'));
        return true;
      });
    } finally {
      mailer.close();
      await smtp.close();
    }
    const gone = smtpMailer({ host: '127.0.0.1', port: smtp.port, from: 'mfa@clinic.example', insecureNoTls: true, timeoutMs: 2000 });
    await assert.rejects(gone.send(message), (/** @type {any} */ e) => e instanceof MailError && e.kind === 'unavailable');
    gone.close();
  });

  test('without insecureNoTls, a server with no STARTTLS gets nothing', async () => {
    const smtp = await smtpServer();
    const mailer = smtpMailer({ host: '127.0.0.1', port: smtp.port, from: 'mfa@clinic.example', timeoutMs: 2000 });
    try {
      await assert.rejects(mailer.send(message), (/** @type {any} */ e) => e instanceof MailError && e.kind === 'unavailable');
      assert.equal(smtp.messages.length, 0);
    } finally {
      mailer.close();
      await smtp.close();
    }
  });
});
