// @ts-check
/**
 * @module mailers/smtp
 * `smtpMailer(options)`: delivers the component's messages over SMTP with nodemailer. The host
 * picks the `From` address; the component's `senderName` becomes its display name. Bodies carry
 * one-time codes: nothing here logs them, and failures are reported by SMTP status only.
 */

import nodemailer from 'nodemailer';
import { MailError } from '../errors.js';

/**
 * @typedef {object} SmtpOptions
 * @property {string} from the sender address, e.g. `mfa@clinic.example`
 * @property {string} [url] an `smtp://` / `smtps://` URL (alternative to host/port/auth)
 * @property {string} [host]
 * @property {number} [port]
 * @property {boolean} [secure] TLS from the start (port 465)
 * @property {{ user: string, pass: string }} [auth]
 * @property {number} [timeoutMs] connection, greeting and socket timeout (default 10000)
 * @property {boolean} [insecureNoTls] send even when the server offers no TLS (codes then cross
 *   the network in clear text): for a local test server only. Default: TLS is required
 *   (`secure`/`smtps://` from the start, else STARTTLS).
 */

/**
 * @param {SmtpOptions} options
 * @returns {import('./capture.js').Mailer & { close(): void }}
 */
export function smtpMailer(options) {
  if (!options || typeof options.from !== 'string' || !options.from.includes('@')) {
    throw new TypeError('smtpMailer: `from` must be the sender address');
  }
  const timeout = options.timeoutMs ?? 10000;
  const implicitTls = options.secure ?? (options.url ? options.url.startsWith('smtps:') : false);
  const transport = nodemailer.createTransport({
    ...(options.url ? { url: options.url } : { host: options.host, port: options.port, auth: options.auth }),
    secure: implicitTls,
    requireTLS: !implicitTls && !options.insecureNoTls,
    connectionTimeout: timeout,
    greetingTimeout: timeout,
    socketTimeout: timeout,
    logger: false,
    debug: false,
  });
  return {
    async send(message) {
      try {
        await transport.sendMail({
          from: { name: message.senderName ?? '', address: options.from },
          to: message.to,
          subject: message.subject,
          text: message.text,
          html: message.html,
        });
      } catch (error) {
        const e = /** @type {{ responseCode?: number, code?: string }} */ (error ?? {});
        const status = typeof e.responseCode === 'number' ? `SMTP ${e.responseCode}` : (e.code ?? 'no SMTP status');
        // 550-553: the server refused the recipient (RFC 5321); anything else may pass later.
        if (typeof e.responseCode === 'number' && e.responseCode >= 550 && e.responseCode <= 553) {
          throw new MailError('rejected-recipient', `the mail server refused the recipient (${status})`);
        }
        throw new MailError('unavailable', `the mail server did not take the message (${status})`);
      }
    },
    close() {
      transport.close();
    },
  };
}
