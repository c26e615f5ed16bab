// @ts-check
/**
 * @module stores/redis
 * `redisStore(url | client)`: the store contract of `wit/store.wit` in Redis 7 (or Valkey), safe
 * to share between processes, and laid out exactly as the Rust host's `RedisStore`
 * (`host-harness/src/backends/redis.rs`), so that Node and `mfa-step serve` nodes can share one
 * database (not yet tested side by side):
 *
 * ```text
 *   {prefix}:v:{key}   a value      SET … EXAT at + ZADD index, one script     get / set / delete
 *   {prefix}:c:{key}   a counter    one script: INCRBY + EXPIREAT … GT          increment / delete
 *   {prefix}:index     sorted set of the value keys (score 0)                  list-keys
 * ```
 *
 * - Every write is one Lua script, so it is atomic for every client of the server; values and
 *   counters live in separate namespaces (`get` never sees a counter).
 * - `increment`: `INCRBY` (Redis refuses to overflow), then the expiry rule: a counter created by
 *   the call takes the expiry given, one with an expiry keeps the later of the two
 *   (`EXPIREAT … GT`), one kept for good stays so; a read (`delta` 0) creates nothing.
 * - Expiry is Redis's own (by Redis's clock: keep it in step with the host's, NTP).
 * - `list-keys` reads a range of the index (`ZRANGE … BYLEX`), never the keyspace, and prunes
 *   names whose value has expired.
 * - `commit` answers at once: each call is durable when it returns, as far as the server's own
 *   durability goes (`appendonly yes` + `appendfsync always` for "durable before ok").
 * Standalone Redis only (scripts touch keys they do not declare), not Redis Cluster.
 */

import { connectRedis, script } from './redis-connect.js';

/** The latest expiry Redis takes (milliseconds in an i64). */
const LATEST_EXPIRY = Math.floor(Number.MAX_SAFE_INTEGER / 1000);

/**
 * @param {number} at
 * @returns {string}
 */
function redisExpiry(at) {
  return String(Math.min(Math.max(at, 1), LATEST_EXPIRY));
}

// KEYS[1]: the value, KEYS[2]: the index. ARGV[1]: the value, ARGV[2]: expiry or '', ARGV[3]: the name.
const SET = script(`
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
end
redis.call('ZADD', KEYS[2], 0, ARGV[3])
return 1
`);

// KEYS[1]: the value, KEYS[2]: the counter, KEYS[3]: the index. ARGV[1]: the name.
const DELETE = script(`
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
`);

// The Rust host's script, unchanged. KEYS[1]: the counter. ARGV[1]: delta, ARGV[2]: expiry or ''.
const INCREMENT = script(`
local existed = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[1] == '0' and not existed then
  return false
end
if ARGV[1] ~= '0' then
  local added = redis.pcall('INCRBY', KEYS[1], ARGV[1])
  if type(added) == 'table' and added.err then
    if string.find(added.err, 'overflow', 1, true) then
      return redis.error_reply('MFASTEP_OVERFLOW the increment would leave the 64-bit range')
    end
    return added
  end
end
local value = redis.call('GET', KEYS[1])
if ARGV[2] ~= '' then
  if not existed then
    redis.call('EXPIREAT', KEYS[1], ARGV[2])
  elseif redis.call('PTTL', KEYS[1]) >= 0 then
    redis.call('EXPIREAT', KEYS[1], ARGV[2], 'GT')
  end
end
return value
`);

// KEYS[1]: the index. ARGV[1], ARGV[2]: the BYLEX range, ARGV[3]: the value keys' prefix.
const LIST = script(`
local names = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYLEX')
local live = {}
for _, name in ipairs(names) do
  if redis.call('EXISTS', ARGV[3] .. name) == 1 then
    table.insert(live, name)
  else
    redis.call('ZREM', KEYS[1], name)
  end
end
return live
`);

/**
 * Connects to Redis and answers the store contract.
 * @param {string | import('redis').RedisClientType<any, any, any, any, any>} urlOrClient a
 *   `redis://` URL (the store owns the connection) or a connected node-redis client (borrowed)
 * @param {{ prefix?: string }} [options] `prefix`: the key namespace (default `mfa-step`, as the Rust host)
 * @returns {Promise<import('./memory.js').Store & { close(): Promise<void> }>}
 */
export async function redisStore(urlOrClient, options = {}) {
  const prefix = options.prefix ?? 'mfa-step';
  if (!/^[\x20-\x7e]{1,64}$/.test(prefix)) throw new TypeError('redisStore: the prefix must be 1 to 64 bytes of printable ASCII');
  const redis = await connectRedis(urlOrClient);
  const index = `${prefix}:index`;
  /** @param {string} key */
  const value = (key) => `${prefix}:v:${key}`;
  /** @param {string} key */
  const counter = (key) => `${prefix}:c:${key}`;

  return {
    async get(key) {
      const reply = await redis.command(['GET', value(key)]);
      if (reply === null) return null;
      if (!Buffer.isBuffer(reply)) throw new TypeError('redis GET answered something else than bytes');
      return new Uint8Array(reply.buffer, reply.byteOffset, reply.byteLength);
    },
    async set(key, bytes, expiresAt) {
      await redis.eval(SET, [value(key), index], [bytes, expiresAt === null ? '' : redisExpiry(expiresAt), key]);
    },
    async delete(key) {
      await redis.eval(DELETE, [value(key), counter(key), index], [key]);
    },
    async increment(key, delta, expiresAt) {
      const reply =
        delta === 0 && expiresAt === null
          ? await redis.command(['GET', counter(key)])
          : await redis.eval(INCREMENT, [counter(key)], [String(delta), expiresAt === null ? '' : redisExpiry(expiresAt)]);
      if (reply === null) return 0n;
      const text = Buffer.isBuffer(reply) ? reply.toString('latin1') : String(reply);
      if (!/^-?\d{1,19}$/.test(text)) throw new TypeError('redis answered a counter that is not an integer');
      return BigInt(text);
    },
    async listKeys(prefixOfKeys) {
      const reply = await redis.eval(LIST, [index], [`[${prefixOfKeys}`, `(${prefixOfKeys}\x7f`, `${prefix}:v:`]);
      if (!Array.isArray(reply)) throw new TypeError('redis answered something else than a list');
      return reply.map((name) => (Buffer.isBuffer(name) ? name.toString('latin1') : String(name)));
    },
    async commit() {},
    close: () => redis.close(),
  };
}
