// @ts-check
/**
 * @module audit/memory
 * `memoryAudit()`: the audit sink of `wit/audit.wit` in this process's memory, for tests and
 * examples. It appends a record only if it links to its organization's head (seq + 1, prev =
 * head's hash; 1 and 64 zeros for a first record), checked and written in one JS turn, else
 * answers `conflict` (the component relinks). Lines are kept byte for byte, in append order, and
 * can be written as JSONL for `mfa-step audit verify`.
 */

/**
 * One record, as the bridge hands it to a sink (`seq` and `at` as numbers).
 * @typedef {object} AuditEntry
 * @property {string} orgId
 * @property {number} seq
 * @property {number} at
 * @property {string} action
 * @property {string} prev
 * @property {string} hash
 * @property {string} line the canonical JSON line to keep byte for byte
 */

/**
 * @typedef {object} RefusalNote
 * @property {string} rule
 * @property {string | undefined} [claimedOrg]
 * @property {string | undefined} [ip]
 * @property {string | undefined} [userAgent]
 */

/**
 * The async audit sink a Node host provides (the WIT `audit` in JS). `append` answers `'ok'` only
 * once the record is durable, `'conflict'` when it does not link to the head (nothing written);
 * any throw, rejection or other answer is `unavailable` and fails the call closed.
 * @typedef {object} AuditSink
 * @property {(orgId: string) => Promise<{ seq: number | bigint, hash: string } | null>} head
 * @property {(entry: AuditEntry) => Promise<'ok' | 'conflict'>} append
 * @property {((note: RefusalNote) => Promise<void> | void) | undefined} [noteRefusal]
 */

/** The `prev` of a stream's first record. */
export const GENESIS = '0'.repeat(64);

/**
 * @returns {AuditSink & {
 *   lines(orgId?: string): string[],
 *   exportJsonl(orgId?: string): string,
 *   writeJsonl(path: string, orgId?: string): Promise<void>,
 *   refusals: RefusalNote[],
 * }}
 */
export function memoryAudit() {
  /** @type {Map<string, { seq: number, hash: string }>} */
  const heads = new Map();
  /** @type {{ orgId: string, line: string }[]} */
  const log = [];
  /** @type {RefusalNote[]} */
  const refusals = [];

  /** @param {string} [orgId] */
  function lines(orgId) {
    return log.filter((r) => orgId === undefined || r.orgId === orgId).map((r) => r.line);
  }

  return {
    async head(orgId) {
      const head = heads.get(orgId);
      return head ? { ...head } : null;
    },
    async append(entry) {
      const head = heads.get(entry.orgId);
      const links = head
        ? entry.seq === head.seq + 1 && entry.prev === head.hash
        : entry.seq === 1 && entry.prev === GENESIS;
      if (!links) return 'conflict';
      heads.set(entry.orgId, { seq: entry.seq, hash: entry.hash });
      log.push({ orgId: entry.orgId, line: entry.line });
      return 'ok';
    },
    async noteRefusal(note) {
      if (refusals.length < 1000) refusals.push(note);
    },
    refusals,
    lines,
    exportJsonl(orgId) {
      return lines(orgId).map((l) => `${l}\n`).join('');
    },
    async writeJsonl(path, orgId) {
      const { writeFile } = await import('node:fs/promises');
      await writeFile(path, lines(orgId).map((l) => `${l}\n`).join(''), { mode: 0o600 });
    },
  };
}
