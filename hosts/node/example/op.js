#!/usr/bin/env node
// An example OpenID Provider (oidc-provider 9) with email MFA and trusted browsers from mfa-step,
// and a tiny relying party at /app to try it. Development only: users, passwords, the HMAC key and
// the signing key are made up at start (or taken from the environment), and it serves plain HTTP.
//
//   npm run example                       # http://localhost:3000/app/
//   PORT=4000 REDIS_URL=redis://127.0.0.1:6379 SMTP_URL=smtp://127.0.0.1:2525 npm run example
//
// Without SMTP_URL the emails are kept in memory and shown at /dev/outbox (development only);
// SMTP_INSECURE_NO_TLS=1 lets it send to a local mail catcher that offers no STARTTLS.
// What an app really adds is in src/oidc.js; the rest here is the ordinary oidc-provider setup.

import { createHash, createHmac, generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';

import Provider, { interactionPolicy } from 'oidc-provider';

import { oidcMfa } from '../src/oidc.js';
import { escapeHtml } from '../src/oidc-pages.js';
import { readForm, sendPage } from '../src/oidc-http.js';
import { demoRelyingParty } from './rp.js';

/** The one client: a public client using PKCE (S256), as a browser or mobile app would. */
export const CLIENT_ID = 'example-app';

/**
 * The example's users: a clinician (a platform role that asks for a code) and a coach (no rule
 * asks for one). Passwords are compared as SHA-256 digests in constant time.
 */
export const EXAMPLE_USERS = {
  'dr-demo': {
    password: 'correct horse battery',
    orgId: 'demo-clinic',
    roles: ['clinician'],
    email: 'dr-demo@demo-clinic.example',
    locale: 'en',
  },
  'coach-demo': {
    password: 'correct horse battery',
    orgId: 'demo-clinic',
    roles: ['coach'],
    email: 'coach-demo@demo-clinic.example',
    locale: 'en',
  },
};

const digest = (s) => createHash('sha256').update(String(s)).digest();

/**
 * Starts the example OP.
 * @param {object} o
 * @param {any} o.step the engine (`createMfaStep`)
 * @param {number} [o.port] 0 picks a free port
 * @param {string} [o.host] where to listen (default 127.0.0.1)
 * @param {string} [o.publicHost] the host name in the issuer (default: `host`)
 * @param {Record<string, any>} [o.users] default EXAMPLE_USERS
 * @param {string[]} [o.trustedProxies] see `oidcMfa`
 * @param {{ messages: any[] } | undefined} [o.outbox] a capture mailer to show at /dev/outbox
 * @returns {Promise<{ issuer: string, redirectUri: string, port: number, close: () => Promise<void> }>}
 */
export async function startExampleOp(o) {
  const { step, host = '127.0.0.1', users = EXAMPLE_USERS, trustedProxies = [], outbox } = o;
  const server = createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, host, resolve);
  });
  const port = /** @type {import('node:net').AddressInfo} */ (server.address()).port;
  const issuer = `http://${o.publicHost ?? host}:${port}`;
  const redirectUri = `${issuer}/app/callback`;

  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'example', use: 'sig', alg: 'RS256' };
  const loginCsrfKey = randomBytes(32);

  // What an app adds for MFA: the prompt after `login`, its acr values, and the handler below.
  const mfa = oidcMfa({
    step,
    trustedProxies,
    // Failures by kind only (never a code, token, key or address).
    log: (event, detail) => process.stderr.write(`${JSON.stringify({ event, ...detail })}\n`),
    account: (accountId) => {
      const user = Object.hasOwn(users, accountId) ? users[accountId] : undefined;
      if (!user) throw new Error('no such account');
      return { orgId: user.orgId, roles: user.roles, email: user.email, locale: user.locale };
    },
  });
  const policy = interactionPolicy.base();
  policy.add(mfa.prompt, 1); // right after `login`, before `consent`
  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      token_endpoint_auth_method: 'none',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    claims: { openid: ['sub', ...mfa.idTokenClaims], email: ['email', 'email_verified'] },
    features: { devInteractions: { enabled: false } },
    pkce: { required: () => true },
    acrValues: mfa.acrValues,
    interactions: {
      policy,
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    async findAccount(ctx, sub) {
      const user = Object.hasOwn(users, sub) ? users[sub] : undefined;
      if (!user) return undefined;
      return { accountId: sub, claims: () => ({ sub, email: user.email, email_verified: true }) };
    },
    // A first-party client: its grant is implied (no consent page).
    async loadExistingGrant(ctx) {
      const { session, client, result } = ctx.oidc;
      const id = result?.consent?.grantId ?? session.grantIdFor(client.clientId);
      if (id) return ctx.oidc.provider.Grant.find(id);
      if (client.clientId !== CLIENT_ID || !session.accountId) return undefined;
      const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      grant.addOIDCScope('openid email');
      await grant.save();
      return grant;
    },
  });

  const handleMfa = mfa.handler(provider);

  const loginCsrf = (uid) => createHmac('sha256', loginCsrfKey).update(uid).digest('base64url');
  const callback = provider.callback();
  const rp = await demoRelyingParty({ issuer, clientId: CLIENT_ID, redirectUri });

  server.on('request', (req, res) => {
    route(req, res).catch(() => {
      if (!res.headersSent) {
        res.statusCode = 500;
        res.end('internal error\n');
      } else {
        res.destroy();
      }
    });
  });

  async function route(req, res) {
    if (await handleMfa(req, res)) return;
    const url = new URL(req.url ?? '/', issuer);
    const m = /^\/interaction\/([\w-]+)(\/login)?$/.exec(url.pathname);
    if (m) {
      await passwordLogin(req, res, m[1], Boolean(m[2]));
      return;
    }
    if (url.pathname === '/' && req.method === 'GET') {
      res.statusCode = 303;
      res.setHeader('Location', '/app/');
      res.end();
      return;
    }
    if (url.pathname === '/dev/outbox' && outbox) {
      sendPage(res, outboxPage(outbox));
      return;
    }
    if (await rp.handle(req, res)) return;
    callback(req, res);
  }

  /** The first factor: a user name and password form (the `login` prompt). */
  async function passwordLogin(req, res, uid, submitted) {
    let details;
    try {
      details = await provider.interactionDetails(req, res);
    } catch {
      sendPage(res, simplePage(400, 'This sign-in has expired', '<p role="alert">Start the sign-in again from the application.</p>'));
      return;
    }
    if (details.uid !== uid || details.prompt.name !== 'login') {
      sendPage(res, simplePage(400, 'This sign-in has expired', '<p role="alert">Start the sign-in again from the application.</p>'));
      return;
    }
    let error;
    if (submitted && req.method === 'POST') {
      const form = await readForm(req);
      const csrf = Buffer.from(form.get('csrf') ?? '');
      const want = Buffer.from(loginCsrf(uid));
      if (csrf.length !== want.length || !timingSafeEqual(csrf, want)) {
        sendPage(res, simplePage(400, 'This sign-in has expired', '<p role="alert">Start the sign-in again from the application.</p>'));
        return;
      }
      const name = form.get('username') ?? '';
      const user = Object.hasOwn(users, name) ? users[name] : undefined;
      // Same work and the same answer for an unknown user and a wrong password.
      const ok = timingSafeEqual(digest(user?.password ?? randomBytes(16)), digest(form.get('password') ?? ''));
      if (user && ok) {
        await provider.interactionFinished(req, res, { login: { accountId: name, amr: ['pwd'] } }, {
          mergeWithLastSubmission: false,
        });
        return;
      }
      error = 'The user name or the password is not right.';
    }
    const main = `<h1>Sign in</h1>
${error ? `<p class="error" id="login-error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<input type="hidden" name="csrf" value="${escapeHtml(loginCsrf(uid))}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" required${error ? ' aria-invalid="true" aria-describedby="login-error"' : ''}>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<div class="actions"><button type="submit">Sign in</button></div>
</form>`;
    let origin = [];
    try {
      origin = [new URL(details.params.redirect_uri).origin];
    } catch {
      origin = [];
    }
    sendPage(res, simplePage(error ? 401 : 200, 'Sign in', main, origin));
  }

  return {
    issuer,
    redirectUri,
    port,
    provider,
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

/** A page in the example's own style (the login form, the outbox). */
function simplePage(status, title, main, formOrigins = []) {
  const nonce = randomBytes(16).toString('base64');
  return {
    status,
    headers: {
      'Content-Type': 'text/html; charset=utf-8',
      'Cache-Control': 'no-store',
      'Content-Security-Policy': `default-src 'none'; style-src 'nonce-${nonce}'; form-action 'self' ${formOrigins.join(' ')}; frame-ancestors 'none'; base-uri 'none'`,
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
    },
    body: `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(title)}</title>
<style nonce="${nonce}">body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;line-height:1.5}label{display:block;font-weight:600;margin:1rem 0 .25rem}input{font:inherit;padding:.4rem;width:100%}button{font:inherit;font-weight:600;padding:.6rem 1.1rem;margin-top:1rem}.error{color:#b3261e;font-weight:600}pre{white-space:pre-wrap;background:#f4f6f8;padding:.75rem}</style>
</head><body><main>${main}</main></body></html>\n`,
  };
}

/** The captured emails, newest first (development only: they carry codes). */
function outboxPage(outbox) {
  const items = [...outbox.messages].reverse().slice(0, 20).map((m) => `<article>
<h2>${escapeHtml(m.subject ?? '')}</h2><p>To: ${escapeHtml(m.to ?? '')}</p><pre>${escapeHtml(m.text ?? m.textBody ?? '')}</pre></article>`);
  return simplePage(200, 'Outbox (development only)', `<h1>Outbox (development only)</h1>
<p>The emails the example sent, newest first. A real deployment sends them by SMTP (SMTP_URL).</p>
${items.join('\n') || '<p>No email yet.</p>'}`);
}

/** `npm run example`. */
async function main() {
  const { createMfaStep, memoryStore, memoryAudit, redisStore, redisAudit, captureMailer, smtpMailer } = await import('../src/index.js');
  const redisUrl = process.env.REDIS_URL;
  const smtpUrl = process.env.SMTP_URL;
  const outbox = smtpUrl ? undefined : captureMailer();
  const step = await createMfaStep({
    store: redisUrl ? await redisStore(redisUrl) : memoryStore(),
    audit: redisUrl ? await redisAudit(redisUrl) : memoryAudit(),
    mailer: smtpUrl
      ? smtpMailer({
        url: smtpUrl,
        from: process.env.SMTP_FROM ?? 'mfa@example.test',
        // A local mail catcher (Mailpit, MailHog) offers no STARTTLS: allow it only by name.
        insecureNoTls: process.env.SMTP_INSECURE_NO_TLS === '1',
      })
      : outbox,
    config: { hmac_key: process.env.MFA_STEP_HMAC_KEY ?? randomBytes(32).toString('hex') },
  });
  const op = await startExampleOp({
    step,
    port: Number(process.env.PORT ?? 3000),
    host: process.env.HOST ?? '127.0.0.1',
    publicHost: process.env.PUBLIC_HOST ?? 'localhost',
    outbox,
  });
  const lines = [
    `example OP: ${op.issuer}  (discovery: ${op.issuer}/.well-known/openid-configuration)`,
    `try it:     ${op.issuer}/app/   users dr-demo (asked for a code) and coach-demo (no rule asks), password "correct horse battery"`,
    smtpUrl ? `emails:     sent through ${new URL(smtpUrl).host}` : `emails:     ${op.issuer}/dev/outbox (kept in memory; set SMTP_URL to send them)`,
    `store:      ${redisUrl ? 'Redis' : 'memory (development only; set REDIS_URL for Redis)'}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  const stop = async () => {
    await op.close();
    await step.close();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    process.stderr.write(`example: ${err?.message ?? err}\n`);
    process.exit(1);
  });
}
