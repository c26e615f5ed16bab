// @ts-check
/**
 * @module audit/redis
 * `redisAudit(url | client)`: the audit sink of `wit/audit.wit` in Redis, shared by every Node
 * process using the server.
 *
 * ```text
 *   {prefix}:audit:head:{org}   hash {seq, hash}: the stream's head
 *   {prefix}:audit:log          list of every record's line, in append order (all streams)
 * ```
 *
 * `append` is one Lua script: it appends the line and moves the head only if the record links to
 * the head (seq + 1 and prev = the head's hash; 1 and 64 zeros for a first record), else answers
 * `conflict` and writes nothing. So concurrent writers, in one process or several, never fork a
 * chain. Durability is the server's (`appendonly yes`, `appendfsync always` for "durable before
 * ok"). `exportJsonl` / `writeJsonl` give the trail as JSONL for `mfa-step audit verify`.
 */

import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { connectRedis, script } from '../stores/redis-connect.js';

// KEYS[1]: the head, KEYS[2]: the log. ARGV: seq, prev, hash, line.
const APPEND = script(`
local seq = redis.call('HGET', KEYS[1], 'seq')
if seq then
  if tonumber(ARGV[1]) ~= tonumber(seq) + 1 or ARGV[2] ~= redis.call('HGET', KEYS[1], 'hash') then
    return 0
  end
elseif ARGV[1] ~= '1' or ARGV[2] ~= string.rep('0', 64) then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'hash', ARGV[3])
return 1
`);

/** Lines read per LRANGE when exporting. */
const CHUNK = 1000;

/**
 * @param {string | import('redis').RedisClientType<any, any, any, any, any>} urlOrClient
 * @param {{ prefix?: string }} [options] `prefix`: the key namespace (default `mfa-step`)
 * @returns {Promise<import('./memory.js').AuditSink & {
 *   lines(orgId?: string): AsyncGenerator<string>,
 *   exportJsonl(orgId?: string): Promise<string>,
 *   writeJsonl(path: string, orgId?: string): Promise<number>,
 *   close(): Promise<void>,
 * }>}
 */
export async function redisAudit(urlOrClient, options = {}) {
  const prefix = options.prefix ?? 'mfa-step';
  const redis = await connectRedis(urlOrClient);
  const log = `${prefix}:audit:log`;
  /** @param {string} org */
  const headKey = (org) => `${prefix}:audit:head:${org}`;

  /** @param {string} [orgId] */
  async function* lines(orgId) {
    for (let start = 0; ; start += CHUNK) {
      const chunk = await redis.command(['LRANGE', log, String(start), String(start + CHUNK - 1)]);
      if (!Array.isArray(chunk) || chunk.length === 0) return;
      for (const raw of chunk) {
        const line = Buffer.isBuffer(raw) ? raw.toString('utf8') : String(raw);
        if (orgId === undefined || JSON.parse(line).org === orgId) yield line;
      }
      if (chunk.length < CHUNK) return;
    }
  }

  return {
    async head(orgId) {
      const [seq, hash] = await redis.command(['HMGET', headKey(orgId), 'seq', 'hash']);
      if (seq === null && hash === null) return null;
      if (seq === null || hash === null) throw new TypeError('a half-written audit head');
      return { seq: BigInt(seq.toString('latin1')), hash: hash.toString('latin1') };
    },
    async append(entry) {
      const done = await redis.eval(
        APPEND,
        [headKey(entry.orgId), log],
        [String(entry.seq), entry.prev, entry.hash, entry.line],
      );
      return done === 1 ? 'ok' : 'conflict';
    },
    async noteRefusal() {
      // Refusals belong to no stream; this sink keeps none (the contract allows dropping them).
    },
    lines,
    async exportJsonl(orgId) {
      let out = '';
      for await (const line of lines(orgId)) out += `${line}\n`;
      return out;
    },
    async writeJsonl(path, orgId) {
      const file = createWriteStream(path, { mode: 0o600 });
      let n = 0;
      for await (const line of lines(orgId)) {
        if (!file.write(`${line}\n`)) await once(file, 'drain');
        n += 1;
      }
      file.end();
      await once(file, 'finish');
      return n;
    },
    close: () => redis.close(),
  };
}
