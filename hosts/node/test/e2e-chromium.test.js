// The example OP's MFA pages in a real browser (headless Chromium through playwright-core), with
// their CSP enforced: the password, a wrong code, the right code with "remember this browser",
// the app's page showing the id_token's amr/acr, then a second sign-in from the same browser
// asking no code. What only a browser proves: the `__Host-`/Secure cookie is kept on
// http://localhost, the forms pass the Origin check (Referrer-Policy), no CSP violation, and
// axe-core finds no WCAG 2.2 AA violation on the code page, its error state and the status pages.
//
// Chromium: $CHROMIUM or /usr/bin/chromium. Missing, this FAILS when CI is set, and is reported as
// skipped (with the reason) otherwise.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { after, before, describe, test } from 'node:test';

import { startExampleOp } from '../example/op.js';
import { createMfaStep } from '../src/engine.js';
import { memoryAudit } from '../src/audit/memory.js';
import { captureMailer } from '../src/mailers/capture.js';
import { memoryStore } from '../src/stores/memory.js';
import { statusPage } from '../src/oidc-pages.js';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const present = existsSync(CHROMIUM);
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'];

if (!present && process.env.CI) {
  test('oidc-provider pages in Chromium', () => {
    assert.fail(`CI is set but Chromium is not at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
  });
}

describe('oidc-provider pages in Chromium', { skip: present ? false : `no Chromium at ${CHROMIUM}` }, () => {
  const mailer = captureMailer();
  const run = randomBytes(4).toString('hex');
  const user = `dr-${run}`;
  const users = {
    [user]: { password: 'correct horse battery', orgId: `clinic-${run}`, roles: ['clinician'], email: `${user}@clinic.example` },
  };
  let step;
  let op;
  let browser;
  let context;
  let axeContext;
  const cspErrors = [];

  before(async () => {
    const { chromium } = await import('playwright-core');
    step = await createMfaStep({
      store: memoryStore(),
      audit: memoryAudit(),
      mailer,
      config: { hmac_key: randomBytes(32).toString('hex') },
    });
    op = await startExampleOp({ step, port: 0, publicHost: 'localhost', users });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
    });
    context = await browser.newContext({ locale: 'en-US' });
    // axe-core is injected into a copy of each page's markup in a context that bypasses the CSP
    // (which rightly forbids foreign scripts); the pages themselves run with it enforced.
    axeContext = await browser.newContext({ locale: 'en-US', bypassCSP: true });
  });

  after(async () => {
    await browser?.close();
    await op?.close();
    await step?.close();
  });

  /** Serious or critical WCAG 2.2 AA violations axe-core finds in `html`. */
  async function axe(html) {
    const page = await axeContext.newPage();
    try {
      await page.setContent(html);
      const source = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
      await page.addScriptTag({ content: source });
      return await page.evaluate(async (tags) => {
        const result = await globalThis.axe.run(document, { runOnly: tags });
        return result.violations
          .filter((v) => v.impact === 'serious' || v.impact === 'critical')
          .map((v) => `${v.id}: ${v.help}`);
      }, AXE_TAGS);
    } finally {
      await page.close();
    }
  }

  async function signIn(page, again) {
    await page.goto(`${op.issuer}/app/login${again ? '?again=1' : ''}`);
    await page.fill('#username', user);
    await page.fill('#password', users[user].password);
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  }

  test('code, remember, and the same browser again', async () => {
    const page = await context.newPage();
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) cspErrors.push(m.text());
    });

    await signIn(page, false);
    assert.equal(await page.textContent('h1'), 'Confirm your email address');
    assert.deepEqual(await axe(await page.content()), [], 'the code page');

    await page.fill('#code', '000000');
    await Promise.all([page.waitForNavigation(), page.click('#verify')]);
    assert.match(await page.textContent('[role=alert]'), /That code is not valid/);
    assert.equal(await page.getAttribute('#code', 'aria-invalid'), 'true');
    assert.deepEqual(await axe(await page.content()), [], 'the code page with its error');

    const code = mailer.codeIn(mailer.last(users[user].email));
    await page.fill('#code', code);
    await page.check('#remember');
    await Promise.all([page.waitForNavigation(), page.click('#verify')]);
    assert.equal(new URL(page.url()).pathname, '/app/callback');
    assert.equal(await page.textContent('#amr'), '["pwd","otp","mfa"]');
    assert.equal(await page.textContent('#acr'), 'urn:mfa-step:mfa');
    const device = (await context.cookies()).find((c) => c.name === '__Host-mfa-device');
    assert.ok(device, 'Chromium kept the trusted-browser cookie');
    assert.equal(device.secure, true);
    assert.equal(device.httpOnly, true);

    const emails = mailer.messages.length;
    await signIn(page, true);
    assert.equal(new URL(page.url()).pathname, '/app/callback', 'no code page');
    assert.equal(await page.textContent('#amr'), '["pwd","mfa"]');
    assert.equal(mailer.messages.length, emails, 'no email');
    assert.deepEqual(cspErrors, [], 'no CSP violation');
    await page.close();
  });

  test('the status pages pass axe-core', async () => {
    for (const kind of ['locked', 'denied', 'unavailable', 'expired', 'forbidden']) {
      const html = statusPage({ kind, base: '/interaction/x', csrf: 't', message: 'The reason.' }).body;
      assert.deepEqual(await axe(html), [], kind);
    }
  });
});
