// @ts-check
/**
 * @module mailers/capture
 * `captureMailer()`: keeps every message in memory instead of sending it, for tests and the
 * example. The messages carry one-time codes: never log them.
 */

/**
 * One email as the component renders it (the WIT `mailer.message`).
 * @typedef {object} MailMessage
 * @property {string} to
 * @property {string | undefined} [senderName]
 * @property {string} subject
 * @property {string} html
 * @property {string} text
 */

/**
 * The async mailer a Node host provides (the WIT `mailer` in JS). Resolving means the mail
 * service accepted the message; a `MailError('rejected-recipient', …)` refuses the address; any
 * other throw or rejection is `unavailable`.
 * @typedef {object} Mailer
 * @property {(message: MailMessage) => Promise<unknown>} send
 */

/**
 * @returns {Mailer & { messages: MailMessage[], last(to?: string): MailMessage | undefined, codeIn(message: MailMessage | undefined): string | null, clear(): void }}
 */
export function captureMailer() {
  /** @type {MailMessage[]} */
  const messages = [];
  return {
    messages,
    async send(message) {
      messages.push({ ...message });
    },
    last(to) {
      for (let i = messages.length - 1; i >= 0; i -= 1) {
        if (to === undefined || messages[i].to === to) return messages[i];
      }
      return undefined;
    },
    codeIn(message) {
      // The code stands on a line of its own in the text part.
      const m = message ? /^\s*(\d{6,9})\s*$/m.exec(message.text) : null;
      return m ? m[1] : null;
    },
    clear() {
      messages.length = 0;
    },
  };
}
