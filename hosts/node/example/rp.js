// The example's relying party at /app: signs in at the example OP with the authorization code
// flow and PKCE (openid-client 6), and shows the id_token's `amr`, `acr` and `auth_time`.
// Development only: its sign-in state is kept in memory under a random cookie.

import { randomBytes } from 'node:crypto';

import * as client from 'openid-client';

import { escapeHtml } from '../src/oidc-pages.js';
import { readCookie, sendPage } from '../src/oidc-http.js';

const COOKIE = 'example-rp';

/**
 * @param {{ issuer: string, clientId: string, redirectUri: string }} o
 */
export async function demoRelyingParty({ issuer, clientId, redirectUri }) {
  /** @type {Promise<client.Configuration> | undefined} */
  let config;
  const discover = () => {
    config ??= client.discovery(new URL(issuer), clientId, { token_endpoint_auth_method: 'none' }, client.None(), {
      execute: [client.allowInsecureRequests],
    });
    config.catch(() => {
      config = undefined;
    });
    return config;
  };
  /** Sign-ins in flight, by cookie: PKCE verifier, state, nonce. */
  const pending = new Map();

  async function handle(req, res) {
    const url = new URL(req.url ?? '/', issuer);
    if (url.pathname === '/app/' && req.method === 'GET') {
      sendPage(res, page('Example app', `<h1>Example app</h1>
<p>Sign in at the example OpenID Provider. dr-demo is asked for an emailed code (see <a href="/dev/outbox">the outbox</a>); coach-demo is not.</p>
<p><a href="/app/login">Sign in</a></p>`));
      return true;
    }
    if (url.pathname === '/app/login' && req.method === 'GET') {
      const cfg = await discover();
      const verifier = client.randomPKCECodeVerifier();
      const state = client.randomState();
      const nonce = client.randomNonce();
      const id = randomBytes(16).toString('base64url');
      pending.set(id, { verifier, state, nonce });
      if (pending.size > 1000) pending.delete(pending.keys().next().value);
      const params = {
        redirect_uri: redirectUri,
        scope: 'openid email',
        code_challenge: await client.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        state,
        nonce,
      };
      // "Sign in again" forces the password: the trusted browser then skips only the code.
      if (url.searchParams.get('again') === '1') params.prompt = 'login';
      res.statusCode = 303;
      res.setHeader('Set-Cookie', `${COOKIE}=${id}; HttpOnly; SameSite=Lax; Path=/app; Max-Age=600`);
      res.setHeader('Location', client.buildAuthorizationUrl(cfg, params).href);
      res.end();
      return true;
    }
    if (url.pathname === '/app/callback' && req.method === 'GET') {
      const id = readCookie(req, COOKIE);
      const flight = id ? pending.get(id) : undefined;
      if (id) pending.delete(id);
      if (!flight) {
        sendPage(res, page('Not signed in', '<h1>Not signed in</h1><p>This browser started no sign-in here. <a href="/app/login">Sign in</a></p>', 400));
        return true;
      }
      if (url.searchParams.has('error')) {
        sendPage(res, page('Sign-in refused', `<h1>Sign-in refused</h1><p role="alert">${escapeHtml(url.searchParams.get('error'))}: ${escapeHtml(url.searchParams.get('error_description') ?? '')}</p><p><a href="/app/login">Sign in</a></p>`, 403));
        return true;
      }
      const tokens = await client.authorizationCodeGrant(await discover(), url, {
        pkceCodeVerifier: flight.verifier,
        expectedState: flight.state,
        expectedNonce: flight.nonce,
      });
      const c = tokens.claims() ?? {};
      sendPage(res, page('Signed in', `<h1>Signed in</h1>
<dl>
<dt>sub</dt><dd id="sub">${escapeHtml(c.sub)}</dd>
<dt>amr</dt><dd id="amr">${escapeHtml(JSON.stringify(c.amr ?? null))}</dd>
<dt>acr</dt><dd id="acr">${escapeHtml(c.acr ?? '')}</dd>
<dt>auth_time</dt><dd>${escapeHtml(c.auth_time ? new Date(Number(c.auth_time) * 1000).toISOString() : '')}</dd>
</dl>
<p><a href="/app/login?again=1">Sign in again</a> (the password again; a remembered browser is not asked for a code)</p>`));
      return true;
    }
    return false;
  }

  return { handle };
}

function page(title, main, status = 200) {
  const nonce = randomBytes(16).toString('base64');
  return {
    status,
    headers: {
      'Content-Type': 'text/html; charset=utf-8',
      'Cache-Control': 'no-store',
      'Content-Security-Policy': `default-src 'none'; style-src 'nonce-${nonce}'; frame-ancestors 'none'; base-uri 'none'`,
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
    },
    body: `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(title)}</title>
<style nonce="${nonce}">body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;line-height:1.5}dt{font-weight:600}</style>
</head><body><main>${main}</main></body></html>\n`,
  };
}
