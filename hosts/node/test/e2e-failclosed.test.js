// Fail closed, end to end, over real HTTP: a store, audit or account failure at any step of the
// `mfa` interaction shows the "try again" page (503) and never lets the sign-in through; once the
// failure is gone the same interaction completes. Plus the client-address rules (a header counts
// only from a trusted proxy) and the page's web-security headers.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';

import { startExampleOp } from '../example/op.js';
import { createMfaStep } from '../src/engine.js';
import { memoryAudit } from '../src/audit/memory.js';
import { captureMailer } from '../src/mailers/capture.js';
import { memoryStore } from '../src/stores/memory.js';
import { clientIp } from '../src/oidc-http.js';

/** A backend whose every method throws while `broken.on` is set. */
function breakable(backend, broken) {
  return new Proxy(backend, {
    get(target, prop) {
      const value = Reflect.get(target, prop);
      if (typeof value !== 'function') return value;
      return async (...args) => {
        if (broken.on) throw new Error('injected failure');
        return value.apply(target, args);
      };
    },
  });
}

/** One HTTP exchange with a cookie header kept by the caller. */
function http(method, url, { cookies, form, headers = {} } = {}) {
  const u = new URL(url);
  const body = form ? new URLSearchParams(form).toString() : undefined;
  const h = { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0', ...headers };
  if (cookies.size) h.cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  if (body !== undefined) h['content-type'] = 'application/x-www-form-urlencoded';
  return new Promise((resolve, reject) => {
    const req = httpRequest(u, { method, headers: h }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        for (const line of res.headers['set-cookie'] ?? []) {
          const [pair] = line.split(';');
          const eq = pair.indexOf('=');
          const value = pair.slice(eq + 1);
          if (value === '' || /max-age=0/i.test(line)) cookies.delete(pair.slice(0, eq));
          else cookies.set(pair.slice(0, eq), value);
        }
        resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('oidc-provider e2e: fail closed', () => {
  const run = randomBytes(4).toString('hex');
  const user = `dr-${run}`;
  const users = {
    [user]: { password: 'pw', orgId: `clinic-${run}`, roles: ['clinician'], email: `${user}@clinic.example` },
  };
  const storeBroken = { on: false };
  const auditBroken = { on: false };
  const accountBroken = { on: false };
  const mailBroken = { on: false };
  const mailer = captureMailer();
  let step;
  let op;

  before(async () => {
    step = await createMfaStep({
      store: breakable(memoryStore(), storeBroken),
      audit: breakable(memoryAudit(), auditBroken),
      mailer: breakable(mailer, mailBroken),
      config: { hmac_key: randomBytes(32).toString('hex') },
    });
    const proxied = new Proxy(users, {
      get(target, prop) {
        if (accountBroken.on && prop === user) throw new Error('directory down');
        return Reflect.get(target, prop);
      },
    });
    op = await startExampleOp({ step, port: 0, users: proxied });
  });

  after(async () => {
    await op?.close();
    await step?.close();
  });

  /** An authorization request's URL. */
  function authUrl(extra = {}) {
    const auth = new URL(`${op.issuer}/auth`);
    auth.search = new URLSearchParams({
      client_id: 'example-app',
      response_type: 'code',
      scope: 'openid',
      redirect_uri: op.redirectUri,
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      code_challenge_method: 'S256',
      state: 'abc',
      ...extra,
    }).toString();
    return auth;
  }

  /** Authorization request and password: returns the cookies and the `mfa` interaction's URL. */
  async function toMfaPage() {
    const cookies = new Map();
    let res = await http('GET', authUrl(), { cookies });
    assert.equal(res.status, 303);
    const loginUrl = new URL(res.headers.location, op.issuer);
    res = await http('GET', loginUrl, { cookies });
    const csrf = /name="csrf" value="([^"]+)"/.exec(res.body)[1];
    res = await http('POST', `${loginUrl}/login`, { cookies, form: { csrf, username: user, password: 'pw' } });
    assert.equal(res.status, 303);
    res = await http('GET', new URL(res.headers.location, op.issuer), { cookies });
    assert.equal(res.status, 303);
    const mfaUrl = new URL(res.headers.location, op.issuer);
    assert.match(mfaUrl.pathname, /^\/interaction\//);
    return { cookies, mfaUrl };
  }

  function assertTryAgain(res, what) {
    assert.equal(res.status, 503, what);
    assert.equal(res.headers.location, undefined, `${what}: no redirect`);
    assert.match(res.body, /nothing was changed/);
    assert.ok(!(res.headers['set-cookie'] ?? []).some((c) => c.startsWith('__Host-mfa-device=')), `${what}: no device cookie`);
  }

  test('store, account, mail and audit failures: 503, never a login; then it completes', async () => {
    const { cookies, mfaUrl } = await toMfaPage();

    storeBroken.on = true;
    assertTryAgain(await http('GET', mfaUrl, { cookies }), 'store down at begin');
    storeBroken.on = false;

    accountBroken.on = true;
    assertTryAgain(await http('GET', mfaUrl, { cookies }), 'account callback throws');
    accountBroken.on = false;

    mailBroken.on = true;
    assertTryAgain(await http('GET', mfaUrl, { cookies }), 'mail down at the first send');
    mailBroken.on = false;
    assert.equal(mailer.messages.length, 0);

    // While the second factor is pending, the session gives no tokens without interaction.
    const silent = await http('GET', authUrl({ prompt: 'none' }), { cookies });
    assert.equal(silent.status, 303);
    const silentBack = new URL(silent.headers.location);
    assert.equal(silentBack.searchParams.get('error'), 'interaction_required');
    assert.equal(silentBack.searchParams.get('code'), null);

    // Reloading the page once the failures are gone sends the email and shows the code page.
    const page = await http('GET', mfaUrl, { cookies });
    assert.equal(page.status, 200);
    assert.equal(mailer.messages.length, 1);
    const reload = await http('GET', mfaUrl, { cookies });
    assert.equal(reload.status, 200);
    assert.equal(mailer.messages.length, 1, 'a reload sends no second email');
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.body)[1];
    const code = mailer.codeIn(mailer.last(users[user].email));
    assert.ok(code);

    // The page's web security.
    assert.match(page.headers['content-security-policy'], /default-src 'none'/);
    assert.match(page.headers['content-security-policy'], /frame-ancestors 'none'/);
    assert.equal(page.headers['cache-control'], 'no-store');
    assert.equal(page.headers['x-frame-options'], 'DENY');
    // Browsers send the real Origin with a same-origin form only under this policy (not no-referrer).
    assert.equal(page.headers['referrer-policy'], 'same-origin');

    // A form from another origin is refused.
    const foreign = await http('POST', `${mfaUrl}/mfa/verify`, {
      cookies, form: { csrf, code }, headers: { origin: 'https://evil.example' },
    });
    assert.equal(foreign.status, 403);
    assert.equal(foreign.headers.location, undefined);

    auditBroken.on = true;
    assertTryAgain(await http('POST', `${mfaUrl}/mfa/verify`, { cookies, form: { csrf, code, remember: 'on' } }), 'audit down at verify');
    storeBroken.on = true;
    assertTryAgain(await http('POST', `${mfaUrl}/mfa/verify`, { cookies, form: { csrf, code, remember: 'on' } }), 'store and audit down at verify');
    storeBroken.on = false;
    auditBroken.on = false;

    // The code was given back: the same code completes the sign-in now.
    const done = await http('POST', `${mfaUrl}/mfa/verify`, { cookies, form: { csrf, code, remember: 'on' } });
    assert.equal(done.status, 303);
    assert.ok((done.headers['set-cookie'] ?? []).some((c) => c.startsWith('__Host-mfa-device=')));
    const resume = await http('GET', new URL(done.headers.location, op.issuer), { cookies });
    assert.equal(resume.status, 303);
    const back = new URL(resume.headers.location);
    assert.equal(back.origin + back.pathname, op.redirectUri);
    assert.ok(back.searchParams.get('code'), 'an authorization code');
  });
});

describe('the client address', () => {
  const req = (peer, xff) => ({ socket: { remoteAddress: peer }, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } });

  test('is the TCP peer by default, whatever the headers say', () => {
    assert.equal(clientIp(req('203.0.113.7', '198.51.100.1'), new Set()), '203.0.113.7');
  });

  test('comes from X-Forwarded-For only through a trusted proxy, right-most untrusted hop', () => {
    const proxies = new Set(['10.0.0.2', '10.0.0.3']);
    assert.equal(clientIp(req('10.0.0.2', '198.51.100.9, 203.0.113.5, 10.0.0.3'), proxies), '203.0.113.5');
    assert.equal(clientIp(req('10.0.0.2'), proxies), '10.0.0.2');
    assert.equal(clientIp(req('10.0.0.9', '203.0.113.5'), proxies), '10.0.0.9');
  });
});
