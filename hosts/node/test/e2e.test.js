// End to end: the example OpenID Provider (oidc-provider 9 + mfa-step) driven over real HTTP by a
// relying party using openid-client 6 (discovery, authorization code + PKCE, token exchange,
// id_token checks) and a cookie-keeping "browser" that follows the interaction pages.
//
// (a) password + the emailed code, "remember this browser" → amr ["pwd","otp","mfa"]
// (b) the same browser signs in again → no code asked, amr ["pwd","mfa"], the device cookie rotated
// (c) the same browser from another network (a second loopback SOURCE address, never a header)
//     → a code is asked again
// (d) a user no rule applies to → amr ["pwd"], no email
// (e) 20 wrong codes → the locked page, the sign-in refused (access_denied, no code, no tokens),
//     and the next sign-in of that user refused too
//
// On the memory store always, and on Redis when MFA_STEP_TEST_REDIS_URL (or MFA_STEP_TEST_REDIS, as
// .ci/servers.sh exports it) is set; with CI set and no Redis URL the Redis suite FAILS.
// The browser treats http://127.0.0.1 as a secure context (as browsers treat localhost), so it
// keeps the `__Host-`/Secure device cookie over plain HTTP.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';

import * as client from 'openid-client';

import { CLIENT_ID, startExampleOp } from '../example/op.js';
import { createMfaStep } from '../src/engine.js';
import { captureMailer } from '../src/mailers/capture.js';
import { memoryAudit } from '../src/audit/memory.js';
import { memoryStore } from '../src/stores/memory.js';
import { redisStore } from '../src/stores/redis.js';
import { redisAudit } from '../src/audit/redis.js';

const DEVICE_COOKIE = '__Host-mfa-device';
const OTHER_NETWORK = '127.1.0.1'; // another IPv4 /16 than 127.0.0.1, on the loopback interface

/** A browser: a cookie jar, a source address, and HTTP over node:http (no redirects followed). */
class Browser {
  /** @param {{ localAddress?: string, jar?: Map<string, { value: string, path: string }> }} [o] */
  constructor(o = {}) {
    this.localAddress = o.localAddress;
    this.jar = new Map(o.jar ?? []);
    this.userAgent = 'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0';
    /** @type {Record<string, string>} headers sent with every request */
    this.extraHeaders = {};
  }

  /** The same cookies, another source address: the same browser on another network. */
  onNetwork(localAddress) {
    return new Browser({ localAddress, jar: this.jar });
  }

  /** Keeps only the named cookies (the browser was closed; session cookies are gone). */
  keepOnly(names) {
    for (const name of [...this.jar.keys()]) if (!names.includes(name)) this.jar.delete(name);
  }

  cookie(name) {
    return this.jar.get(name)?.value;
  }

  /**
   * @param {string} method
   * @param {string | URL} url
   * @param {Record<string, string>} [form]
   * @returns {Promise<{ status: number, headers: import('node:http').IncomingHttpHeaders, body: string, url: URL }>}
   */
  request(method, url, form) {
    const u = new URL(url);
    const body = form ? new URLSearchParams(form).toString() : undefined;
    const cookies = [...this.jar]
      .filter(([, c]) => u.pathname.startsWith(c.path))
      .map(([k, c]) => `${k}=${c.value}`)
      .join('; ');
    const headers = { ...this.extraHeaders, 'user-agent': this.userAgent, 'accept-language': 'en-US,en;q=0.8' };
    if (cookies) headers.cookie = cookies;
    if (body !== undefined) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers['content-length'] = String(Buffer.byteLength(body));
      headers.origin = u.origin;
    }
    return new Promise((resolve, reject) => {
      const req = httpRequest(u, { method, headers, localAddress: this.localAddress }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          this.store(res.headers['set-cookie'] ?? []);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), url: u });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  store(setCookies) {
    for (const line of setCookies) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = '/';
      let gone = value === '';
      for (const a of attrs) {
        const [k, v = ''] = a.split('=');
        if (k.toLowerCase() === 'path') path = v;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) gone = true;
        if (k.toLowerCase() === 'expires' && Date.parse(v) < Date.now()) gone = true;
      }
      if (gone) this.jar.delete(name);
      else this.jar.set(name, { value, path });
    }
  }

  /**
   * Requests `url` and follows 3xx within the OP until a page answers or the redirect leaves for
   * `stopAt` (the client's redirect URI, returned unfetched).
   */
  async follow(method, url, form, stopAt) {
    let res = await this.request(method, url, form);
    for (let hops = 0; hops < 10; hops += 1) {
      if (res.status < 300 || res.status >= 400) return { page: res };
      const next = new URL(res.headers.location ?? '', res.url);
      if (next.href.startsWith(stopAt)) return { redirect: next, page: res };
      res = await this.request('GET', next);
    }
    throw new Error('too many redirects');
  }
}

/** The value of a hidden field or an attribute in a page. */
function field(html, name) {
  const m = new RegExp(`name="${name}" value="([^"]*)"`).exec(html);
  return m ? m[1] : undefined;
}

function formAction(html, suffix) {
  const m = new RegExp(`<form method="post" action="([^"]*${suffix})"`).exec(html);
  assert.ok(m, `a form posting to …${suffix}`);
  return m[1];
}

/** A wrong code: the right one plus one, so it is never right by chance. */
function wrongCode(right) {
  return String((Number(right ?? '0') + 1) % 1_000_000).padStart(6, '0');
}

/**
 * One store's suite.
 * @param {string} name
 * @param {(now: () => number) => Promise<{ store: any, audit: any, close?: () => Promise<void> }>} backends
 */
function suite(name, backends) {
  describe(`oidc-provider e2e (${name})`, () => {
    const run = randomBytes(4).toString('hex');
    const org = `clinic-${run}`;
    const password = 'correct horse battery';
    const users = {
      [`dr-${run}`]: { password, orgId: org, roles: ['clinician'], email: `dr-${run}@clinic.example` },
      [`coach-${run}`]: { password, orgId: org, roles: ['coach'], email: `coach-${run}@clinic.example` },
      [`lock-${run}`]: { password, orgId: org, roles: ['provider'], email: `lock-${run}@clinic.example` },
    };
    const mailer = captureMailer();
    let offsetMs = 0;
    let step;
    let op;
    let config;
    let extra;
    const browserA = new Browser();
    let signedInAt;

    before(async () => {
      // The store expires keys on the component's (test) clock.
      extra = await backends(() => Math.floor((Date.now() + offsetMs) / 1000));
      step = await createMfaStep({
        store: extra.store,
        audit: extra.audit,
        mailer,
        config: { hmac_key: randomBytes(32).toString('hex') },
        clock: () => Date.now() + offsetMs,
      });
      op = await startExampleOp({ step, port: 0, users });
      config = await client.discovery(new URL(op.issuer), CLIENT_ID, { token_endpoint_auth_method: 'none' }, client.None(), {
        execute: [client.allowInsecureRequests],
      });
    });

    after(async () => {
      await op?.close();
      await step?.close();
      await extra?.close?.();
    });

    /**
     * Starts a sign-in: authorization request → password page → password → the page after it.
     * @returns the flight (PKCE, state, nonce) and where the browser stands after the password
     */
    async function startSignIn(browser, user, extraParams = {}) {
      const verifier = client.randomPKCECodeVerifier();
      const flight = { verifier, state: client.randomState(), nonce: client.randomNonce() };
      const url = client.buildAuthorizationUrl(config, {
        redirect_uri: op.redirectUri,
        scope: 'openid email',
        code_challenge: await client.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        state: flight.state,
        nonce: flight.nonce,
        ...extraParams,
      });
      const login = await browser.follow('GET', url, undefined, op.redirectUri);
      assert.equal(login.page.status, 200, 'the password page');
      assert.match(login.page.body, /autocomplete="current-password"/);
      const action = formAction(login.page.body, '/login');
      const after = await browser.follow('POST', new URL(action, op.issuer), {
        csrf: field(login.page.body, 'csrf'),
        username: user,
        password: users[user].password,
      }, op.redirectUri);
      return { flight, after };
    }

    /** Exchanges the code the redirect carries; returns the id_token claims. */
    async function tokensFor(flight, redirect) {
      assert.ok(redirect, 'the browser is sent back to the client');
      assert.equal(redirect.searchParams.get('error'), null, redirect.searchParams.get('error_description') ?? '');
      const tokens = await client.authorizationCodeGrant(config, redirect, {
        pkceCodeVerifier: flight.verifier,
        expectedState: flight.state,
        expectedNonce: flight.nonce,
      });
      return tokens.claims();
    }

    /** Posts a form of the code page. */
    function post(browser, page, suffix, fields) {
      return browser.follow('POST', new URL(formAction(page.body, suffix), op.issuer), {
        csrf: field(page.body, 'csrf'),
        ...fields,
      }, op.redirectUri);
    }

    test('(a) password + the emailed code, remembered → amr pwd otp mfa', async () => {
      const user = `dr-${run}`;
      const tPassword = Math.floor(Date.now() / 1000);
      const { flight, after } = await startSignIn(browserA, user);
      assert.equal(after.redirect, undefined, 'a code is asked, not let through');
      const page = after.page;
      assert.equal(page.status, 200);
      assert.match(page.body, /autocomplete="one-time-code"/);
      assert.match(page.body, /name="remember"/);
      assert.match(page.body, /d\*\*\*@clinic\.example/, 'the masked address');
      const mail = mailer.last(users[user].email);
      assert.ok(mail, 'the code was emailed');
      const code = mailer.codeIn(mail);
      assert.ok(code);
      assert.ok(!page.body.includes(code), 'the page never shows the code');

      // A wrong code first: a clear, announced error, no redirect.
      const wrong = await post(browserA, page, '/mfa/verify', { code: wrongCode(code) });
      assert.equal(wrong.redirect, undefined);
      assert.equal(wrong.page.status, 400);
      assert.match(wrong.page.body, /role="alert"[^>]*>That code is not valid/);
      assert.match(wrong.page.body, /aria-invalid="true"/);

      // A forged form (no CSRF token) is refused and changes nothing.
      const forged = await browserA.follow('POST', new URL(formAction(page.body, '/mfa/verify'), op.issuer), { code }, op.redirectUri);
      assert.equal(forged.redirect, undefined);
      assert.equal(forged.page.status, 400);

      // "Send the email again": the same code while it lives, 3 emails in 5 minutes at most.
      const again1 = await post(browserA, wrong.page, '/mfa/resend', {});
      assert.equal(again1.page.status, 200);
      assert.match(again1.page.body, /role="status">We sent the same code again/);
      assert.equal(mailer.codeIn(mailer.last(users[user].email)), code);
      const again2 = await post(browserA, again1.page, '/mfa/resend', {});
      assert.equal(again2.page.status, 200);
      const spent = await post(browserA, again2.page, '/mfa/resend', {});
      assert.equal(spent.page.status, 429);
      assert.ok(Number(spent.page.headers['retry-after']) > 0, 'Retry-After');
      assert.match(spent.page.body, /role="alert">Too many emails were sent\. You can ask for another in \d+ minutes?/);
      assert.equal(mailer.messages.filter((m) => m.to === users[user].email).length, 3);

      const t0 = Math.floor(Date.now() / 1000);
      const done = await post(browserA, spent.page, '/mfa/verify', { code: code.replace(/(\d{3})/, '$1 '), remember: 'on' });
      const t1 = Math.ceil(Date.now() / 1000);
      const claims = await tokensFor(flight, done.redirect);
      assert.ok(t0 >= tPassword);
      assert.ok(claims.auth_time >= tPassword && claims.auth_time <= t1, 'auth_time: this sign-in\'s login');
      signedInAt = claims.auth_time;
      assert.equal(claims.sub, user);
      assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
      assert.equal(claims.acr, 'urn:mfa-step:mfa');
      assert.ok(browserA.cookie(DEVICE_COOKIE), 'the trusted-device cookie was set');
    });

    test('single sign-on within the session that passed the step asks nothing', async () => {
      const mails = mailer.messages.length;
      const verifier = client.randomPKCECodeVerifier();
      const flight = { verifier, state: client.randomState(), nonce: client.randomNonce() };
      const url = client.buildAuthorizationUrl(config, {
        redirect_uri: op.redirectUri,
        scope: 'openid email',
        code_challenge: await client.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        state: flight.state,
        nonce: flight.nonce,
      });
      const sso = await browserA.follow('GET', url, undefined, op.redirectUri);
      assert.ok(sso.redirect, `no page (got ${sso.page.status})`);
      const claims = await tokensFor(flight, sso.redirect);
      assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
      assert.equal(claims.auth_time, signedInAt, 'single sign-on: the session\'s login');
      assert.equal(mailer.messages.length, mails);
    });

    test('(b) the same browser again → no code, amr pwd mfa', async () => {
      const user = `dr-${run}`;
      const before = browserA.cookie(DEVICE_COOKIE);
      assert.ok(before, 'runs after (a)');
      browserA.keepOnly([DEVICE_COOKIE]); // a new browser session: only the persistent cookie
      const mails = mailer.messages.length;
      const tPassword = Math.floor(Date.now() / 1000);
      const { flight, after } = await startSignIn(browserA, user, { prompt: 'login' });
      assert.ok(after.redirect, `let through without a code page (got ${after.page.status})`);
      const claims = await tokensFor(flight, after.redirect);
      assert.deepEqual(claims.amr, ['pwd', 'mfa']);
      assert.equal(claims.acr, 'urn:mfa-step:mfa');
      // This login's time (so a client's max_age is met by the password just entered), never
      // the older time the code was entered on this browser.
      assert.ok(claims.auth_time >= tPassword, 'auth_time: this fresh login');
      assert.equal(mailer.messages.length, mails, 'no email');
      const rotated = browserA.cookie(DEVICE_COOKIE);
      assert.ok(rotated && rotated !== before, 'the device token was rotated');
    });

    test('(b) with max_age: the password just entered satisfies it, the trusted browser stands in for the code', async () => {
      const user = `dr-${run}`;
      assert.ok(browserA.cookie(DEVICE_COOKIE), 'runs after (b)');
      // Older than max_age: the OP asks for the password again, and the sign-in must then finish
      // (an auth_time taken from the browser's older code would ask for the password forever).
      await new Promise((resolve) => setTimeout(resolve, 2100));
      const tPassword = Math.floor(Date.now() / 1000);
      const { flight, after } = await startSignIn(browserA, user, { max_age: '1' });
      assert.ok(after.redirect, `back at the client after the password (got ${after.page.status})`);
      const claims = await tokensFor(flight, after.redirect);
      assert.deepEqual(claims.amr, ['pwd', 'mfa']);
      assert.ok(claims.auth_time >= tPassword, 'auth_time: the password just entered');
    });

    test('(c) the same browser from another network (its source address; headers ignored) → a code again', async () => {
      const user = `dr-${run}`;
      offsetMs += 301 * 1000; // past the send window (a) spent
      const away = browserA.onNetwork(OTHER_NETWORK);
      away.keepOnly([DEVICE_COOKIE]);
      // Claiming the home address in headers changes nothing: only the TCP peer counts.
      away.extraHeaders = { 'x-forwarded-for': '127.0.0.1', 'x-real-ip': '127.0.0.1', forwarded: 'for=127.0.0.1' };
      const mails = mailer.messages.length;
      const { flight, after } = await startSignIn(away, user);
      assert.equal(after.redirect, undefined, 'not let through on a new network');
      assert.equal(after.page.status, 200);
      assert.match(after.page.body, /autocomplete="one-time-code"/);
      assert.equal(mailer.messages.length, mails + 1, 'a code was emailed');
      // The component's explanation (rule device:new-network), shown as "why am I asked".
      assert.match(after.page.body, /id="why"><strong>Why am I asked\?<\/strong> You are signing in from a new network/);
      const code = mailer.codeIn(mailer.last(users[user].email));
      const done = await post(away, after.page, '/mfa/verify', { code });
      const claims = await tokensFor(flight, done.redirect);
      assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
    });

    test('(d) a user no rule applies to → amr pwd, no email', async () => {
      const user = `coach-${run}`;
      const mails = mailer.messages.length;
      const { flight, after } = await startSignIn(new Browser(), user);
      assert.ok(after.redirect, `let through (got ${after.page.status})`);
      const claims = await tokensFor(flight, after.redirect);
      assert.deepEqual(claims.amr, ['pwd']);
      assert.equal(claims.acr, 'urn:mfa-step:pwd');
      assert.equal(mailer.messages.length, mails);
    });

    test("the example's own relying party (/app) shows the id_token's amr and acr", async () => {
      const browser = new Browser();
      const start = await browser.follow('GET', `${op.issuer}/app/login`, undefined, 'never:');
      assert.equal(start.page.status, 200);
      const user = `coach-${run}`;
      const done = await browser.follow('POST', new URL(formAction(start.page.body, '/login'), op.issuer), {
        csrf: field(start.page.body, 'csrf'),
        username: user,
        password: users[user].password,
      }, 'never:');
      assert.equal(done.page.status, 200);
      assert.match(done.page.body, /<dd id="sub">coach-/);
      assert.match(done.page.body, /<dd id="amr">\[&quot;pwd&quot;\]<\/dd>/);
      assert.match(done.page.body, /<dd id="acr">urn:mfa-step:pwd<\/dd>/);
    });

    test('(e) 20 wrong codes → locked page, access_denied, no tokens', async () => {
      const user = `lock-${run}`;
      const browser = new Browser();
      const { flight, after } = await startSignIn(browser, user);
      let page = after.page;
      assert.match(page.body, /autocomplete="one-time-code"/);
      let rejected = 0;
      let locked;
      // Five wrong codes are free; the sixth at once is refused with the wait and counts for nothing.
      for (let i = 0; i < 5; i += 1) {
        const code = mailer.codeIn(mailer.last(users[user].email));
        const res = await post(browser, page, '/mfa/verify', { code: wrongCode(code) });
        assert.equal(res.page.status, 400);
        rejected += 1;
        page = res.page;
      }
      const tooFast = await post(browser, page, '/mfa/verify', { code: '123456' });
      assert.equal(tooFast.page.status, 429);
      assert.equal(tooFast.page.headers['retry-after'], '30');
      assert.match(tooFast.page.body, /role="alert">Too many wrong codes\. Wait 30 seconds, then enter the code again\./);
      for (let i = 0; i < 60 && !locked; i += 1) {
        // Past any guess delay (at most 1 h) and send window; the resend opens a new challenge
        // when the old one expired, as a user pressing "send the email again" would.
        offsetMs += 3601 * 1000;
        const resent = await post(browser, page, '/mfa/resend', {});
        assert.equal(resent.redirect, undefined);
        if (resent.page.status === 403) {
          locked = resent.page;
          break;
        }
        assert.equal(resent.page.status, 200, `resend ${i}: ${resent.page.status}`);
        page = resent.page;
        const code = mailer.codeIn(mailer.last(users[user].email));
        const res = await post(browser, page, '/mfa/verify', { code: wrongCode(code) });
        assert.equal(res.redirect, undefined, 'a wrong code never lets through');
        if (res.page.status === 403) locked = res.page;
        else {
          assert.equal(res.page.status, 400, `guess ${i}: ${res.page.status}`);
          rejected += 1;
          page = res.page;
        }
      }
      assert.ok(locked, 'locked');
      assert.equal(rejected, 20, 'the 20th wrong code is answered, and the user locked from then on');
      assert.match(locked.body, /<h1 id="locked">Sign-in locked<\/h1>/);
      assert.match(locked.body, /role="alert"/);
      const status = await step.status({
        userId: user, orgId: org, email: users[user].email, roles: users[user].roles,
        device: { traits: { userAgent: browser.userAgent }, ip: '127.0.0.1' },
      });
      assert.equal(status.locked, true);

      // The right code does nothing now.
      const right = mailer.codeIn(mailer.last(users[user].email));
      const late = await post(browser, page, '/mfa/verify', { code: right });
      assert.equal(late.redirect, undefined);
      assert.equal(late.page.status, 403);

      // "Return to the application": the client gets access_denied and no code.
      const back = await post(browser, locked, '/mfa/abort', {});
      assert.ok(back.redirect);
      assert.equal(back.redirect.searchParams.get('error'), 'access_denied');
      assert.equal(back.redirect.searchParams.get('code'), null);
      await assert.rejects(client.authorizationCodeGrant(config, back.redirect, {
        pkceCodeVerifier: flight.verifier,
        expectedState: flight.state,
        expectedNonce: flight.nonce,
      }));

      // A new sign-in of the locked user: refused after the password, no code sent.
      const mails = mailer.messages.length;
      const again = await startSignIn(new Browser(), user);
      assert.equal(again.after.redirect, undefined);
      assert.equal(again.after.page.status, 403);
      assert.match(again.after.page.body, /Sign-in (locked|refused)/);
      assert.equal(mailer.messages.length, mails, 'no email to a locked user');
    });
  });
}

suite('memory store', async (now) => ({ store: memoryStore({ now }), audit: memoryAudit() }));

const redisUrl = process.env.MFA_STEP_TEST_REDIS_URL ?? process.env.MFA_STEP_TEST_REDIS;
if (redisUrl) {
  suite('Redis', async () => {
    // A namespace of this run's own, so runs never see each other's users.
    const prefix = `mfa-step-e2e-${randomBytes(4).toString('hex')}`;
    const store = await redisStore(redisUrl, { prefix });
    const audit = await redisAudit(redisUrl, { prefix });
    return {
      store,
      audit,
      close: async () => {
        await store.close?.();
        await audit.close?.();
      },
    };
  });
} else if (process.env.CI) {
  test('oidc-provider e2e (Redis)', () => {
    assert.fail('CI is set but MFA_STEP_TEST_REDIS_URL is not: start Redis (.ci/servers.sh) and set it');
  });
} else {
  test('oidc-provider e2e (Redis)', { skip: 'MFA_STEP_TEST_REDIS_URL is not set (CI fails here)' }, () => {});
}
