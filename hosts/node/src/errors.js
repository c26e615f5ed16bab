// @ts-check
/**
 * @module errors
 * The errors the Node host throws and the ones backends throw to it.
 *
 * - {@link MfaError}: what an engine call rejects with. It carries the component's `mfa-error`
 *   (kind, message, field, retry-after) and nothing else: never a code, token or key.
 * - {@link StoreError}, {@link MailError}: what a store or mailer backend may throw to choose the
 *   WIT error variant. Any other throw or rejection becomes `unavailable` (fail closed).
 */

/**
 * The kinds of `types.error-kind`, as the component names them.
 * @typedef {'invalid-input' | 'rejected' | 'throttled' | 'locked' | 'forbidden' | 'unavailable'
 *   | 'misconfigured' | 'not-implemented'} MfaErrorKind
 */

/** A failure the caller should see (the WIT `mfa-error`). Never contains a code, token or key. */
export class MfaError extends Error {
  /**
   * @param {MfaErrorKind | string} kind
   * @param {string} message
   * @param {{ field?: string | null, retryAfterSeconds?: number | null }} [extra]
   */
  constructor(kind, message, extra = {}) {
    super(message);
    this.name = 'MfaError';
    /** @type {MfaErrorKind | string} */
    this.kind = kind;
    /** @type {string | null} the offending field, for `invalid-input` */
    this.field = extra.field ?? null;
    /** @type {number | null} seconds until a retry can succeed, for `throttled` */
    this.retryAfterSeconds = extra.retryAfterSeconds ?? null;
  }

  /** @returns {{ kind: string, message: string, field: string | null, retryAfterSeconds: number | null }} */
  toJSON() {
    return {
      kind: this.kind,
      message: this.message,
      field: this.field,
      retryAfterSeconds: this.retryAfterSeconds,
    };
  }
}

/**
 * Thrown by a store backend. `invalid` (a key or value over the WIT limits) maps to the WIT
 * `store-error.invalid`; everything else, and any other thrown value, to `unavailable`.
 * The message is passed to the component: it must not contain a value.
 */
export class StoreError extends Error {
  /**
   * @param {'invalid' | 'unavailable'} kind
   * @param {string} message
   */
  constructor(kind, message) {
    super(message);
    this.name = 'StoreError';
    this.kind = kind;
  }
}

/**
 * Thrown by a mailer backend. `rejected-recipient` maps to the WIT `mail-error.rejected-recipient`;
 * everything else, and any other thrown value, to `unavailable`. The message must not contain the
 * message body (it carries a code).
 */
export class MailError extends Error {
  /**
   * @param {'rejected-recipient' | 'unavailable'} kind
   * @param {string} message
   */
  constructor(kind, message) {
    super(message);
    this.name = 'MailError';
    this.kind = kind;
  }
}
