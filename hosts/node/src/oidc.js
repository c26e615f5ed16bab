/**
 * @module oidc
 * Email MFA with trusted browsers in an `oidc-provider` (v9) OpenID Provider.
 *
 * What an app adds (see README.md, "In an existing oidc-provider app"):
 *
 * ```text
 * authorization request ─▶ login prompt (the app's password page) ─▶ mfa prompt (this module)
 *   GET  <prefix>/<uid>             begin: allow ─▶ finish at once (rotated device cookie set)
 *                                          challenge ─▶ the code is emailed, code page
 *                                          deny ─▶ refused page
 *   POST <prefix>/<uid>/mfa/verify  right code ─▶ finish (device cookie set when "remember" ticked)
 *   POST <prefix>/<uid>/mfa/resend  the same code while it lives, else a new one
 *   POST <prefix>/<uid>/mfa/abort   finish with access_denied (no tokens)
 * finish: login { amr: [first factor…, …component's amr], acr, ts } ─▶ id_token amr, acr, auth_time
 * ```
 *
 * Wiring: `const mfa = oidcMfa({ step, account })`; `policy.add(mfa.prompt, 1)` before
 * `new Provider(...)` (the Provider copies its policy); `acrValues: mfa.acrValues`;
 * `claims: { openid: ['sub', ...mfa.idTokenClaims] }`; then `mfa.handler(provider)` answers the
 * pages ahead of the app's own interaction routes.
 *
 * Guarantees:
 * - The adapter decides nothing: whether a code is asked, whether a browser is trusted, for how
 *   long, and the `amr` come from the component; the adapter only maps its answers (`acr` is
 *   `acrMfa` exactly when the component's `amr` contains `mfa`).
 * - Fail closed: only a component `allow` or a successful `verify` finishes the interaction with a
 *   login. Any failure (the component's `unavailable`, the account callback throwing, a missing
 *   email, a bug) shows a "try again" page (503) and never finishes the interaction with a login.
 * - The `mfa` prompt is asked after every fresh login and for any session whose last login has
 *   not been through this step (a session whose second factor was abandoned is not SSO'd).
 * - The browser's IP is the TCP peer unless the peer is a configured trusted proxy: a client
 *   header is never trusted by default.
 * - Forms carry a per-interaction random CSRF token, compared in constant time, and a form from
 *   another origin is refused; the interaction itself is bound to the browser by oidc-provider's
 *   interaction cookie.
 * - No code, device token or key is logged, rendered or put in an error.
 */

import { randomBytes, timingSafeEqual } from 'node:crypto';

import { interactionPolicy } from 'oidc-provider';

import {
  BadRequest,
  appendSetCookie,
  browserTraits,
  clientIp,
  readCookie,
  readForm,
  sendPage,
} from './oidc-http.js';
import { codePage, statusPage, waitWords } from './oidc-pages.js';

const { Prompt, Check } = interactionPolicy;

/** The prompt's name in the interaction policy. */
export const MFA_PROMPT = 'mfa';
/** Default `acr` when the component's `amr` contains `mfa`. */
export const ACR_MFA = 'urn:mfa-step:mfa';
/** Default `acr` when it does not (no rule asked for a code). */
export const ACR_PASSWORD = 'urn:mfa-step:pwd';
/** The component's `why.rule` when it refuses a locked user. */
const LOCKED_RULE = 'user:locked';
/** The trusted-device cookie the component sets (`set-cookie`). */
export const DEVICE_COOKIE = '__Host-mfa-device';

/**
 * @typedef {object} AccountMfaInfo What the app knows of a user, for the component's rules.
 * @property {string} orgId the user's organization (its canonical id)
 * @property {string[]} roles the user's roles
 * @property {string} email where codes go (an enrolled user's confirmed address wins)
 * @property {string} [locale] the user's language tag
 */

/**
 * @typedef {object} OidcMfaOptions
 * @property {any} step the engine from `createMfaStep(...)`
 * @property {(accountId: string) => Promise<AccountMfaInfo> | AccountMfaInfo} account
 *   the user's org, roles, email and locale; throwing fails the step closed (503 page)
 * @property {string} [prefix] the interaction path prefix, as in `interactions.url` (`/interaction`)
 * @property {string} [acrMfa] `acr` when the component's `amr` contains `mfa`
 * @property {string} [acrPassword] `acr` otherwise
 * @property {string[]} [trustedProxies] TCP peers whose `X-Forwarded-For` is believed (exact IPs)
 * @property {string} [deviceCookie] the trusted-device cookie's name
 * @property {string[]} [firstFactorAmr] `amr` of the app's login when it states none (`["pwd"]`)
 * @property {(event: string, detail: object) => void} [log] notes failures (kinds only, no secrets)
 */

/**
 * The `mfa` prompt, its pages, and the `acr` values to advertise.
 * @param {OidcMfaOptions} options
 */
export function oidcMfa(options) {
  const {
    step,
    account,
    prefix = '/interaction',
    acrMfa = ACR_MFA,
    acrPassword = ACR_PASSWORD,
    trustedProxies = [],
    deviceCookie = DEVICE_COOKIE,
    firstFactorAmr = ['pwd'],
    log = () => {},
  } = options;
  if (!step || typeof account !== 'function') {
    throw new TypeError('oidcMfa needs { step, account }');
  }
  if (acrMfa === acrPassword) throw new TypeError('acrMfa and acrPassword must differ');
  const proxies = new Set(trustedProxies);
  const decided = new Set([acrMfa, acrPassword]);
  const base = prefix.replace(/\/+$/, '');

  const prompt = new Prompt(
    { name: MFA_PROMPT, requestable: false },
    new Check(
      'mfa_step_pending',
      'the second factor has not been decided for this login',
      'interaction_required',
      (ctx) => {
        const { session, result } = ctx.oidc;
        if (!session.accountId) return Check.NO_NEED_TO_PROMPT; // the login prompt comes first
        if (result?.mfaStep) return Check.NO_NEED_TO_PROMPT; // this very step just finished
        if (result?.login) return Check.REQUEST_PROMPT; // a fresh login
        return decided.has(session.acr) ? Check.NO_NEED_TO_PROMPT : Check.REQUEST_PROMPT;
      },
    ),
  );

  /**
   * The handler of the `mfa` interaction's requests for `provider` (the Provider built with a
   * policy holding `prompt`): `(req, res) => Promise<boolean>`, `false` for any other request.
   * @param {import('oidc-provider').default} provider
   */
  function handler(provider) {
    /** The login-context of this request for `accountId`. */
    async function loginContext(req, accountId) {
      const info = await account(accountId);
      if (!info || typeof info.email !== 'string' || typeof info.orgId !== 'string') {
        throw new Error('the account callback gave no orgId or email');
      }
      return {
        userId: accountId,
        orgId: info.orgId,
        email: info.email,
        roles: Array.isArray(info.roles) ? info.roles.map(String) : [],
        locale: info.locale ?? undefined,
        device: {
          cookie: readCookie(req, deviceCookie),
          traits: browserTraits(req),
          ip: clientIp(req, proxies),
        },
      };
    }

    /** Origins a form's redirect chain may reach: the client's redirect URI. */
    function formOrigins(details) {
      try {
        return [new URL(details.params.redirect_uri).origin];
      } catch {
        return [];
      }
    }

    /**
     * Finishes the interaction with a login carrying the component's `amr`. `auth_time` is the
     * first factor's time (the login this interaction finished), as OpenID Connect defines it:
     * taking a trusted browser's older `secondFactorAt` would make every client's `max_age` ask
     * for the password again and again (the session would never look fresh). A trusted browser
     * standing in for the code within its trust period is the component's rule, stated by `amr`.
     */
    async function finishLogin(req, res, details, answer) {
      const componentAmr = Array.isArray(answer.amr) ? answer.amr : [];
      const firstLogin = details.lastSubmission?.login;
      const first = firstLogin?.amr ?? details.session?.amr ?? firstFactorAmr;
      const amr = [...new Set([...first, ...componentAmr])];
      const acr = componentAmr.includes('mfa') ? acrMfa : acrPassword;
      const ts = Number.isSafeInteger(firstLogin?.ts) ? firstLogin.ts : undefined;
      const setCookie = answer.setCookie;
      if (setCookie) appendSetCookie(res, setCookie);
      await provider.interactionFinished(
        req,
        res,
        {
          login: {
            accountId: details.session.accountId,
            amr,
            acr,
            ts,
            remember: details.lastSubmission?.login?.remember ?? true,
          },
          mfaStep: { acr },
        },
        { mergeWithLastSubmission: false },
      );
    }

    /** Ends the interaction without a login: the client gets `access_denied`, no tokens. */
    async function finishDenied(req, res, description) {
      await provider.interactionFinished(
        req,
        res,
        { error: 'access_denied', error_description: description },
        { mergeWithLastSubmission: false },
      );
    }

    /** Our state in the interaction (persisted with it). */
    function stateOf(details) {
      return details.prompt?.details?.mfaStep;
    }

    async function saveState(details, state) {
      details.prompt.details = { ...details.prompt.details, mfaStep: state };
      await details.persist();
    }

    /** Begins the step: finishes at once, or sends the code and shows the page. */
    async function start(req, res, details) {
      const ctx = await loginContext(req, details.session.accountId);
      const decision = await step.begin(ctx);
      if (decision.tag === 'allow') {
        await finishLogin(req, res, details, decision.val);
        return;
      }
      const csrf = stateOf(details)?.csrf ?? randomBytes(32).toString('base64url');
      if (decision.tag === 'deny') {
        await saveState(details, { csrf, denied: true });
        sendPage(res, statusPage({
          kind: decision.val.why?.rule === LOCKED_RULE ? 'locked' : 'denied',
          message: decision.val.why?.message,
          base: `${base}/${details.uid}`,
          csrf,
          formOrigins: formOrigins(details),
        }));
        return;
      }
      if (decision.tag !== 'challenge') throw new Error('unknown decision from the component');
      const ch = decision.val;
      const state = {
        csrf,
        challengeId: ch.challengeId,
        purpose: ch.purpose,
        maskedEmail: ch.maskedEmail,
        why: ch.why?.message ?? '',
      };
      await saveState(details, state);
      await send(req, res, details, state, ctx, false);
    }

    /** Sends (or resends) the code and shows the code page with the outcome. */
    async function send(req, res, details, state, ctx, resend) {
      try {
        const sent = await step.sendCode(ctx, state.challengeId);
        if (!state.sent) {
          // Remembered so that a reload after a failed first send sends it, and after a good one
          // only shows the page.
          state.sent = true;
          await saveState(details, state);
        }
        showCode(res, details, state, {
          notice: resend
            ? sent.resent
              ? 'We sent the same code again. Check your inbox and spam folder.'
              : 'We sent a new code. Only the newest code works.'
            : undefined,
        });
      } catch (err) {
        if (kindOf(err) === 'throttled') {
          const wait = err.retryAfterSeconds ?? 60;
          showCode(res, details, state, {
            error: `Too many emails were sent. You can ask for another in ${waitWords(wait)}. A code we already sent works until it expires.`,
            status: 429,
            retryAfter: wait,
          });
          return;
        }
        if (kindOf(err) === 'rejected' && resend) {
          // The challenge ended (expired or replaced): open a new one (`start` keeps the CSRF token).
          await start(req, res, details);
          return;
        }
        throw err;
      }
    }

    function showCode(res, details, state, extra = {}) {
      sendPage(res, codePage({
        base: `${base}/${details.uid}`,
        csrf: state.csrf,
        maskedEmail: state.maskedEmail,
        purpose: state.purpose,
        why: state.why,
        rememberOffered: state.purpose !== 'email-change',
        formOrigins: formOrigins(details),
        ...extra,
      }));
    }

    /** POST verify. */
    async function verify(req, res, details, state, form) {
      const ctx = await loginContext(req, details.session.accountId);
      const code = form.get('code') ?? '';
      const remember = form.get('remember') === 'on';
      let verified;
      try {
        verified = await step.verify(ctx, state.challengeId, code.replace(/\s+/g, ''), remember);
      } catch (err) {
        const kind = kindOf(err);
        // A malformed code reads like a wrong one; bad input elsewhere is the app's error (503).
        if (kind === 'invalid-input' && err.field !== 'code') throw err;
        switch (kind) {
          case 'rejected':
          case 'invalid-input':
            showCode(res, details, state, {
              error: 'That code is not valid. Check the newest email, or ask for the email again.',
              status: 400,
            });
            return;
          case 'throttled': {
            const wait = err.retryAfterSeconds ?? 30;
            showCode(res, details, state, {
              error: `Too many wrong codes. Wait ${waitWords(wait)}, then enter the code again.`,
              status: 429,
              retryAfter: wait,
            });
            return;
          }
          case 'locked':
            sendPage(res, statusPage({
              kind: 'locked',
              message: err.message,
              base: `${base}/${details.uid}`,
              csrf: state.csrf,
              formOrigins: formOrigins(details),
            }));
            return;
          default:
            throw err;
        }
      }
      await finishLogin(req, res, details, verified);
    }

    /**
     * Handles the `mfa` interaction's requests; resolves `false` for any other request (the app's
     * own login page, oidc-provider's routes), which the app then serves as before.
     * @param {import('node:http').IncomingMessage} req
     * @param {import('node:http').ServerResponse} res
     * @returns {Promise<boolean>}
     */
    async function handle(req, res) {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (!url.pathname.startsWith(`${base}/`)) return false;
      const rest = url.pathname.slice(base.length + 1).split('/');
      const [uid, ns, action] = rest;
      const isPage = rest.length === 1 && req.method === 'GET';
      const isAction = rest.length === 3 && ns === 'mfa' && req.method === 'POST'
        && ['verify', 'resend', 'abort'].includes(action);
      if (!uid || (!isPage && !isAction)) return false;

      let details;
      try {
        details = await provider.interactionDetails(req, res);
      } catch {
        if (!isAction) return false; // the app's page answers an unknown interaction its own way
        sendPage(res, statusPage({ kind: 'expired' }));
        return true;
      }
      if (details.uid !== uid) {
        sendPage(res, statusPage({ kind: 'expired' }));
        return true;
      }
      if (details.prompt?.name !== MFA_PROMPT) return false;

      try {
        if (isPage) {
          const state = stateOf(details);
          if (!state?.challengeId || state.denied) await start(req, res, details);
          else if (!state.sent) await send(req, res, details, state, await loginContext(req, details.session.accountId), false);
          else showCode(res, details, state);
          return true;
        }
        const origin = req.headers.origin;
        if (origin !== undefined && origin !== new URL(provider.issuer).origin) {
          sendPage(res, statusPage({ kind: 'forbidden' }));
          return true;
        }
        const form = await readForm(req);
        const state = stateOf(details);
        if (!state || !csrfMatches(state.csrf, form.get('csrf'))) {
          sendPage(res, statusPage({ kind: 'expired' }));
          return true;
        }
        if (action === 'abort') {
          await finishDenied(req, res, 'the second factor was not completed');
        } else if (state.denied || !state.challengeId) {
          await start(req, res, details);
        } else if (action === 'verify') {
          await verify(req, res, details, state, form);
        } else {
          const ctx = await loginContext(req, details.session.accountId);
          await send(req, res, details, state, ctx, true);
        }
        return true;
      } catch (err) {
        if (res.headersSent) {
          res.destroy();
          return true;
        }
        if (err instanceof BadRequest) {
          res.statusCode = err.status;
          res.setHeader('Content-Type', 'text/plain; charset=utf-8');
          res.end(`${err.message}\n`);
          return true;
        }
        if (kindOf(err) === 'locked') {
          sendPage(res, statusPage({
            kind: 'locked',
            message: err.message,
            base: `${base}/${details.uid}`,
            csrf: stateOf(details)?.csrf,
            formOrigins: formOrigins(details),
          }));
          return true;
        }
        log('mfa_step_unavailable', { kind: kindOf(err) ?? 'error', name: err?.name });
        // Nothing may be let through: drop any device cookie set before the failure.
        res.removeHeader('Set-Cookie');
        sendPage(res, statusPage({ kind: 'unavailable' }));
        return true;
      }
    }

    return handle;
  }

  return {
    /** Add to the interaction policy right after `login`: `policy.add(mfa.prompt, 1)`. */
    prompt,
    /** The `acr` values this step produces, for the Provider's `acrValues`. */
    acrValues: [acrMfa, acrPassword],
    /**
     * Claims to list under the `openid` scope in the Provider's `claims`, so that every id_token
     * carries them (oidc-provider otherwise includes `acr`/`amr` only when the client asks):
     * `claims: { openid: ['sub', ...mfa.idTokenClaims] }`.
     */
    idTokenClaims: ['acr', 'amr', 'auth_time'],
    handler,
    /**
     * Connect/Express middleware over `handler(provider)`.
     * @param {import('oidc-provider').default} provider
     */
    middleware(provider) {
      const handle = handler(provider);
      return (req, res, next) => {
        handle(req, res).then((done) => (done ? undefined : next()), next);
      };
    },
  };
}

/** The component's error kind of a thrown value, if it is an MfaError. */
function kindOf(err) {
  return err && typeof err === 'object' && typeof err.kind === 'string' && err.name === 'MfaError'
    ? err.kind
    : undefined;
}

/** Constant-time comparison of the form's CSRF token with the interaction's. */
function csrfMatches(expected, given) {
  if (typeof expected !== 'string' || typeof given !== 'string') return false;
  const a = Buffer.from(expected);
  const b = Buffer.from(given);
  return a.length === b.length && timingSafeEqual(a, b);
}
