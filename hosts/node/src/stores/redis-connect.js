// @ts-check
/**
 * @module stores/redis-connect
 * A node-redis (v5) connection for the Redis store and audit sink: from a URL (owned, closed by
 * `close()`) or a caller's client (borrowed, left open), with replies as Buffers so that values
 * come back byte for byte, and Lua scripts run by `EVALSHA` with a fallback to `EVAL`.
 */

import { createHash } from 'node:crypto';
import { createClient, RESP_TYPES } from 'redis';

/**
 * @typedef {object} RedisConnection
 * @property {(args: (string | Buffer | Uint8Array)[]) => Promise<any>} command one raw command; blob replies are Buffers
 * @property {(script: Script, keys: string[], args: (string | Buffer | Uint8Array)[]) => Promise<any>} eval
 * @property {() => Promise<void>} close closes the connection if it was opened here
 * @property {string} target where it goes, never a password
 */

/**
 * @typedef {object} Script
 * @property {string} source
 * @property {string} sha
 */

/**
 * @param {string} source
 * @returns {Script}
 */
export function script(source) {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

/**
 * `redis://host:port/db` without user or password, for messages.
 * @param {string} url
 */
function describe(url) {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.username || u.password ? '<redacted>@' : ''}${u.host}${u.pathname}`;
  } catch {
    return '<a Redis URL that does not parse>';
  }
}

/**
 * @param {string | import('redis').RedisClientType<any, any, any, any, any>} urlOrClient
 * @returns {Promise<RedisConnection>}
 */
export async function connectRedis(urlOrClient) {
  const owned = typeof urlOrClient === 'string';
  const target = owned ? describe(urlOrClient) : 'a caller-provided client';
  /** @type {any} */
  let base;
  if (owned) {
    // No offline queue: while the server is unreachable a command fails at once (the import is
    // `unavailable`) instead of waiting to run late, after the component has given up on it.
    base = createClient({ url: urlOrClient, socket: { connectTimeout: 5000 }, disableOfflineQueue: true });
    // Without a listener node-redis would throw connection errors at the process; the failed
    // commands themselves reject, and the bridge turns that into `unavailable`.
    base.on('error', () => {});
    try {
      await base.connect();
    } catch (error) {
      throw new Error(`cannot reach Redis at ${target}: ${error instanceof Error ? error.name : 'error'}`);
    }
  } else {
    base = urlOrClient;
  }
  const client = base;
  // Blob replies as Buffers (values come back byte for byte); passed per command, since
  // `sendCommand` does not follow a client's `withTypeMapping`.
  const options = { typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer } };
  /** @param {(string | Buffer | Uint8Array)[]} args */
  const send = (args) =>
    client.sendCommand(
      args.map((a) => (typeof a === 'string' ? a : Buffer.from(a.buffer, a.byteOffset, a.byteLength))),
      options,
    );

  return {
    target,
    command: send,
    async eval(s, keys, args) {
      const rest = [String(keys.length), ...keys, ...args];
      try {
        return await send(['EVALSHA', s.sha, ...rest]);
      } catch (error) {
        if (error instanceof Error && error.message.startsWith('NOSCRIPT')) {
          return send(['EVAL', s.source, ...rest]);
        }
        throw error;
      }
    },
    async close() {
      if (owned) await base.close();
    },
  };
}
