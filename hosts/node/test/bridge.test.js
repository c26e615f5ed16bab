// @ts-check
/**
 * The synchronous bridge on its own: what each import answers for each kind of backend answer
 * (the fail-closed mapping), and the worker round trip (large values byte for byte, a timeout is
 * `unavailable`, a late answer is never taken for the next call's, the main thread keeps running).
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MessageChannel, Worker } from 'node:worker_threads';
import { MAX_VALUE_BYTES, runImport, serveBridge } from '../src/bridge.js';
import { MailError, StoreError } from '../src/errors.js';
import { memoryAudit } from '../src/audit/memory.js';
import { memoryStore } from '../src/stores/memory.js';

const noLog = () => {};

/** @param {Record<string, any>} [over] */
function backends(over = {}) {
  return {
    store: { ...memoryStore(), ...(over.store ?? {}) },
    audit: { ...memoryAudit(), ...(over.audit ?? {}) },
    mailer: { send: async () => {}, ...(over.mailer ?? {}) },
    clock: over.clock,
  };
}

describe('runImport: every failure is an err, never absent', () => {
  /** @type {[string, Record<string, any>, string, unknown[], string][]} */
  const cases = [
    ['get rejects', { store: { get: async () => Promise.reject(new Error('x')) } }, 'store.get', ['k'], 'unavailable'],
    ['get throws', { store: { get: () => { throw new Error('x'); } } }, 'store.get', ['k'], 'unavailable'],
    ['get answers a string', { store: { get: async () => 'v' } }, 'store.get', ['k'], 'unavailable'],
    ['get answers undefined (a missing return)', { store: { get: async () => undefined } }, 'store.get', ['k'], 'unavailable'],
    ['head answers undefined (a missing return)', { audit: { head: async () => undefined } }, 'audit.head', ['acme'], 'unavailable'],
    ['get answers a number', { store: { get: async () => 0 } }, 'store.get', ['k'], 'unavailable'],
    ['get answers an array', { store: { get: async () => [1, 2] } }, 'store.get', ['k'], 'unavailable'],
    ['get answers > 64 KiB', { store: { get: async () => new Uint8Array(MAX_VALUE_BYTES + 1) } }, 'store.get', ['k'], 'unavailable'],
    ['increment answers a string', { store: { increment: async () => '1' } }, 'store.increment', ['k', 1n, undefined], 'unavailable'],
    ['increment answers null', { store: { increment: async () => null } }, 'store.increment', ['k', 0n, undefined], 'unavailable'],
    ['increment answers a float', { store: { increment: async () => 1.5 } }, 'store.increment', ['k', 1n, undefined], 'unavailable'],
    ['increment answers past i64', { store: { increment: async () => 2n ** 63n } }, 'store.increment', ['k', 1n, undefined], 'unavailable'],
    ['increment overflows (StoreError invalid)', { store: { increment: async () => { throw new StoreError('invalid', 'overflow'); } } }, 'store.increment', ['k', 1n, undefined], 'invalid'],
    ['listKeys answers a non-list', { store: { listKeys: async () => null } }, 'store.listKeys', ['p'], 'unavailable'],
    ['listKeys answers keys without the prefix', { store: { listKeys: async () => ['q1'] } }, 'store.listKeys', ['p'], 'unavailable'],
    ['set answers a value', { store: { set: async () => false } }, 'store.set', ['k', new Uint8Array(1), undefined], 'unavailable'],
    ['commit rejects', { store: { commit: async () => Promise.reject(new Error('x')) } }, 'store.commit', [], 'unavailable'],
    ['head answers a bad hash', { audit: { head: async () => ({ seq: 1, hash: 'zz' }) } }, 'audit.head', ['o'], 'unavailable'],
    ['head answers seq 0', { audit: { head: async () => ({ seq: 0, hash: '0'.repeat(64) }) } }, 'audit.head', ['o'], 'unavailable'],
    ['head rejects', { audit: { head: async () => Promise.reject(new Error('x')) } }, 'audit.head', ['o'], 'unavailable'],
    ['append answers true', { audit: { append: async () => true } }, 'audit.append', [{ seq: 1n, at: 0n }], 'unavailable'],
    ['append answers undefined', { audit: { append: async () => undefined } }, 'audit.append', [{ seq: 1n, at: 0n }], 'unavailable'],
    ['append answers conflict', { audit: { append: async () => 'conflict' } }, 'audit.append', [{ seq: 1n, at: 0n }], 'conflict'],
    ['send rejects', { mailer: { send: async () => Promise.reject(new Error('x')) } }, 'mailer.send', [{}], 'unavailable'],
    ['send refuses the recipient', { mailer: { send: async () => { throw new MailError('rejected-recipient', 'no'); } } }, 'mailer.send', [{}], 'rejected-recipient'],
  ];
  for (const [name, over, op, args, tag] of cases) {
    test(name, async () => {
      const answer = await runImport(backends(over), op, args, noLog);
      assert.equal(answer.err?.tag, tag, JSON.stringify(answer, (_, v) => (typeof v === 'bigint' ? String(v) : v)));
      assert.ok(!('ok' in answer));
    });
  }

  test('keys and values over the WIT limits are invalid before they reach the store', async () => {
    let reached = 0;
    const b = backends({ store: { set: async () => { reached += 1; }, get: async () => { reached += 1; return null; } } });
    for (const [op, args] of /** @type {[string, unknown[]][]} */ ([
      ['store.get', ['k'.repeat(513)]],
      ['store.get', ['a\nb']],
      ['store.get', ['']],
      ['store.get', ['é']],
      ['store.set', ['k', new Uint8Array(MAX_VALUE_BYTES + 1), undefined]],
      ['store.listKeys', ['p\u0000']],
    ])) {
      const answer = await runImport(b, op, args, noLog);
      assert.equal(answer.err?.tag, 'invalid', `${op} ${String(args[0]).slice(0, 10)}`);
    }
    assert.equal(reached, 0);
    const ok = await runImport(b, 'store.set', ['k'.repeat(512), new Uint8Array(MAX_VALUE_BYTES), undefined], noLog);
    assert.ok('ok' in ok);
  });

  test('absent is only an answer the store gave', async () => {
    assert.deepEqual(await runImport(backends(), 'store.get', ['missing'], noLog), { ok: undefined });
    assert.deepEqual(await runImport(backends(), 'audit.head', ['nobody'], noLog), { ok: undefined });
    const n = await runImport(backends(), 'store.increment', ['c', 0n, undefined], noLog);
    assert.equal(n.ok, 0n);
  });

  test('error messages name the operation, never what the backend said', async () => {
    const secret = 'v1:challenge:acme:bob=SEED-abcdef';
    const answer = await runImport(backends({ store: { get: async () => Promise.reject(new Error(secret)) } }), 'store.get', ['k'], noLog);
    assert.ok(answer.err?.val?.startsWith('store.get failed'));
    assert.ok(!answer.err?.val?.includes('SEED'));
  });
});

/**
 * A worker that makes synchronous bridge calls and reports what it got.
 * @param {string} body the worker's code after `const call = syncCaller(...)`
 * @param {ReturnType<typeof backends>} b
 * @param {number} timeoutMs the main thread's limit per call
 * @param {number} [workerTimeoutMs] the worker's own limit (default: a little more)
 */
async function inWorker(body, b, timeoutMs, workerTimeoutMs = timeoutMs + 200) {
  const { port1, port2 } = new MessageChannel();
  const ctrl = new SharedArrayBuffer(4);
  serveBridge(port1, new Int32Array(ctrl), b, { timeoutMs, onBackendError: noLog });
  const bridgeUrl = new URL('../src/bridge.js', import.meta.url).href;
  const source = `
    const { workerData, parentPort } = await import('node:worker_threads');
    const { syncCaller } = await import(${JSON.stringify(bridgeUrl)});
    const call = syncCaller(workerData.port, new Int32Array(workerData.ctrl), workerData.timeoutMs);
    ${body}
  `;
  const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(source)}`), {
    workerData: { port: port2, ctrl, timeoutMs: workerTimeoutMs },
    transferList: [port2],
  });
  try {
    return await new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
  } finally {
    await worker.terminate();
    port1.close();
  }
}

describe('the worker round trip', () => {
  test('64 KiB and 1 MiB answers arrive byte for byte', async () => {
    const store = memoryStore();
    const small = new Uint8Array(MAX_VALUE_BYTES).map((_, i) => (i * 7) & 0xff);
    await store.set('big', small, null);
    const b = backends({ store });
    const got = /** @type {any} */ (
      await inWorker(`
        const a = call('store.get', ['big']);
        const set = call('store.set', ['copy', a.ok, 99999999999n]);
        const b = call('store.get', ['copy']);
        parentPort.postMessage({ a: a.ok, set, b: b.ok });
      `, b, 2000)
    );
    assert.deepEqual(Buffer.from(got.a), Buffer.from(small));
    assert.deepEqual(Buffer.from(got.b), Buffer.from(small));
    assert.ok('ok' in got.set);
  });

  test('a worker that gave up: unavailable; the late answer is not taken for its next call', async () => {
    let calls = 0;
    const b = backends({
      store: {
        get: async (/** @type {string} */ key) => {
          calls += 1;
          if (key === 'slow') {
            await new Promise((r) => setTimeout(r, 500));
            return new Uint8Array([1]);
          }
          return new Uint8Array([2]);
        },
      },
    });
    let ticks = 0;
    const ticker = setInterval(() => {
      ticks += 1;
    }, 10);
    try {
      const got = /** @type {any} */ (
        await inWorker(`
          const first = call('store.get', ['slow']);
          // Wait past the slow answer's arrival, then ask again: the stale answer must be dropped.
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 600);
          const second = call('store.get', ['fast']);
          parentPort.postMessage({ first, second });
        `, b, 2000, 200)
      );
      assert.equal(got.first.err.tag, 'unavailable');
      assert.deepEqual([...got.second.ok], [2]);
      assert.equal(calls, 2);
      assert.ok(ticks >= 20, `the main thread ran ${ticks} timer ticks while the worker was blocked`);
    } finally {
      clearInterval(ticker);
    }
  });

  test("a backend slower than the main thread's limit: unavailable", async () => {
    const b = backends({ store: { get: () => new Promise(() => {}) } });
    const got = /** @type {any} */ (await inWorker(`parentPort.postMessage(call('store.get', ['k']));`, b, 100));
    assert.equal(got.err.tag, 'unavailable');
  });
});

test('a value that is a view into a larger buffer reaches the component as exactly its bytes', async () => {
  const big = Buffer.alloc(1 << 20, 0x41);
  const view = big.subarray(1000, 1010);
  const answer = await runImport(backends({ store: { get: async () => view } }), 'store.get', ['k'], noLog);
  const ok = /** @type {Uint8Array} */ (answer.ok);
  assert.equal(ok.byteLength, 10);
  assert.equal(ok.buffer.byteLength, 10, 'not the 1 MiB buffer behind it');
});
