// The hosted pages in a real browser: the demo IdP sends headless Chromium through the component's
// /prompt pages and back, as a person would (issue 7's definition of done).
//
// What it checks, step by step (one line each, then a summary):
// - the sign-in flow: enrollment (the first code confirms the email), a code typed with spaces in
//   it, "remember this browser", a second sign-in that asks nothing, the devices page, revoking,
//   the code page again with a wrong code, resend and cancel;
// - a locked user sees the locked page; a tampered or replayed request is refused;
// - every /prompt page's security headers and the component's cookies;
// - axe-core on every distinct page: no serious or critical WCAG 2.2 AA violation;
// - an org admin's email preview page (a link from the REST API): a clinic's branded email in
//   Spanish, rendered by Chromium to a screenshot that must be a non-trivial PNG;
// - the org admin console's "Adoption and health" page after a scripted day of logins over the
//   REST API (enrollments, a trusted browser, a mail refusal, wrong codes up to a throttle): its
//   data tables and its SVG marks equal the counts this script kept itself, in English and Spanish,
//   axe-clean, and another organization's page is refused.
//
// It builds nothing: it runs the `mfa-step` binary at $MFA_STEP_BIN (default target/debug/mfa-step)
// with Chromium at $CHROMIUM (default /usr/bin/chromium), and fails (never skips) if either is missing.
// Screenshots go to tests/browser/artifacts/; with UPDATE_SCREENSHOTS=1 four of them are copied to
// docs/screenshots/ for the README. Exits non-zero on the first failure, printing serve's stderr tail
// and saving a screenshot of the failing page.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  BIN, CHROMIUM, ROOT, apiKey, checkAxe, checkCookies, checkHeaders, checkPng, freePort, latestCode,
  launchChromium, outboxFor, postApi, requireFile, sleep, startServe,
} from './lib.mjs';
import { consoleSteps } from './console.mjs';
import { consoleScreenSteps } from './console_screens.mjs';

const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');
const DOC_SCREENSHOTS = path.join(ROOT, 'docs', 'screenshots');

// The demo clinic that `serve --demo` seeds (host-harness/src/demo.rs).
const ORG = 'demo-clinic';
const address = (user) => `${user}@${ORG}.example`;

// A clinic with its own look that writes in Spanish by default: the branding the email tests use
// (tests/tests/e2e/emails.rs, `sunrise()`), set through the REST API as its admin would.
const SUNRISE = 'sunrise-clinic';
const SUNRISE_BRANDING = {
  display_name: 'Sunrise Family Clinic',
  logo_url: 'https://cdn.sunrise-clinic.example/logo.png',
  primary_color: '#b3461d',
  accent_color: '#fdf1e7',
  sender_name: 'Sunrise Family Clinic',
  support_contact: '+1 555 0100',
  footer_text: 'Sunrise Family Clinic, 12 Dawn Road',
  default_language: 'es',
};

// The component's cookies, as the contract names them.
const PROMPT_COOKIE = '__Host-mfa-prompt';
const DEVICE_COOKIE = '__Host-mfa-device';

// ---------------------------------------------------------------------------------------------
// The run: a step runner that stops at the first failure

const results = { passed: 0, failed: 0 };
let shotNumber = 0;
const shots = new Map(); // page name → screenshot path

async function screenshot(page, name) {
  shotNumber += 1;
  const file = path.join(ARTIFACTS, `${String(shotNumber).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  shots.set(name, file);
  return file;
}

async function main() {
  requireFile(BIN, 'the mfa-step binary', 'build it first (cargo build -p host-harness) or set MFA_STEP_BIN');
  requireFile(CHROMIUM, 'Chromium', 'install it (apt-get install chromium) or set CHROMIUM');
  fs.rmSync(ARTIFACTS, { recursive: true, force: true });
  fs.mkdirSync(ARTIFACTS, { recursive: true });

  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfa-step-browser-'));
  const port = await freePort();
  let serve = null;
  let browser = null;
  let page = null;
  // On any exit (even an uncaught error) the server must not outlive the run.
  process.on('exit', () => serve?.killNow());
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => { serve?.killNow(); process.exit(130); });
  }

  // Every /prompt navigation response (redirects included), checked at the end of each step.
  const promptResponses = [];
  const navigations = []; // { path, status } of every main-frame navigation response, in order
  let checkedPages = 0;

  async function step(name, body) {
    try {
      const note = (await body()) ?? '';
      // Header checks for the /prompt responses this step caused.
      for (const response of promptResponses.splice(0)) {
        checkHeaders(response.url(), response.status(), await response.allHeaders());
        checkedPages += 1;
      }
      results.passed += 1;
      console.log(`ok   ${String(results.passed).padStart(2)} ${name}${note}`);
    } catch (error) {
      results.failed += 1;
      console.log(`FAIL ${String(results.passed + 1).padStart(2)} ${name}`);
      console.log(String(error?.stack ?? error).replace(/^/gm, '     '));
      if (page) {
        const file = path.join(ARTIFACTS, `fail-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}.png`);
        try {
          await page.screenshot({ path: file, fullPage: true });
          console.log(`     page: ${page.url()}\n     screenshot: ${path.relative(ROOT, file)}`);
        } catch (e) {
          console.log(`     (no screenshot: ${e.message})`);
        }
      }
      if (serve) console.log(`     serve stderr, last lines:\n${serve.tail.map((l) => `       ${l}`).join('\n')}`);
      console.log(`     data dir kept: ${dataDir}`);
      throw error;
    }
  }

  // Helpers bound to the page -------------------------------------------------------------------

  /** Clicks something that submits a form and waits for the page that ends the redirects. */
  async function submit(selector) {
    const [response] = await Promise.all([
      page.waitForNavigation({ waitUntil: 'load' }),
      page.locator(selector).click(),
    ]);
    return response;
  }

  /** The demo IdP's form: choose the user and press Sign in or Manage trusted browsers. */
  async function demoStart(user, button = '#sign-in') {
    await page.goto(`${serve.base}/demo/`);
    await page.selectOption('#user', user);
    await page.selectOption('#locale', 'en');
    return submit(button);
  }

  const pathOf = () => new URL(page.url()).pathname;

  /** The demo IdP's result page: the outcome and amr it verified. */
  async function demoResult() {
    assert.equal(pathOf(), '/demo/return', `expected the demo result page, at ${page.url()}`);
    return {
      title: (await page.locator('h1#result').textContent())?.trim(),
      outcome: (await page.locator('#outcome').textContent())?.trim(),
      amr: (await page.locator('#amr').textContent())?.trim(),
    };
  }

  /**
   * The code page's controls, as the contract names them. It is GET /prompt/step, or the answer to
   * the POST that rendered it again (a wrong code, a resend).
   */
  async function checkCodePage(at = '/prompt/step') {
    assert.equal(pathOf(), at, `expected the code page at ${at}, at ${page.url()}`);
    const code = page.locator('input#code');
    assert.equal(await code.count(), 1, 'no <input id="code">');
    assert.equal(await code.getAttribute('name'), 'code');
    assert.equal(await code.getAttribute('autocomplete'), 'one-time-code');
    assert.equal(await code.getAttribute('inputmode'), 'numeric');
    assert.equal(await page.locator('label[for="code"]').count(), 1, 'no <label for="code">');
    assert.equal(await page.locator('input#remember[type="checkbox"][name="remember"]').count(), 1, 'no remember checkbox');
    assert.equal(await page.locator('label[for="remember"]').count()
      + await page.locator('label:has(#remember)').count() > 0, true, 'the remember checkbox has no label');
    for (const id of ['verify', 'resend', 'cancel']) {
      assert.equal(await page.locator(`button#${id}`).count(), 1, `no <button id="${id}">`);
    }
    assert.equal(await page.locator('p#why').count(), 1, 'no <p id="why">');
    await checkLandmarks();
    return (await page.locator('h1').textContent())?.trim();
  }

  /** Every page: <html lang>, one <h1>, a <main>. */
  async function checkLandmarks() {
    assert.ok(await page.locator('html').getAttribute('lang'), '<html> has no lang');
    assert.equal(await page.locator('h1').count(), 1, 'a page has exactly one <h1>');
    assert.equal(await page.locator('main').count(), 1, 'a page has one <main>');
  }

  try {
    // -----------------------------------------------------------------------------------------
    await step(`start mfa-step serve --demo (${path.relative(ROOT, BIN) || BIN}) and Chromium`, async () => {
      serve = await startServe(dataDir, port);
      let context;
      ({ browser, context } = await launchChromium());
      page = await context.newPage();
      // Pages answer in milliseconds: a missing element should fail fast, not after 30 s.
      page.setDefaultTimeout(10_000);
      page.on('response', (response) => {
        const request = response.request();
        if (!request.isNavigationRequest() || request.frame() !== page.mainFrame()) return;
        const { pathname } = new URL(response.url());
        navigations.push({ path: pathname, status: response.status() });
        if (pathname === '/prompt' || pathname.startsWith('/prompt/')) promptResponses.push(response);
      });
      return ` (${serve.base}, Chromium ${browser.version()})`;
    });
    const context = page.context();

    // -----------------------------------------------------------------------------------------
    await step('demo IdP form', async () => {
      const response = await page.goto(`${serve.base}/demo/`);
      assert.equal(response.status(), 200);
      for (const selector of ['select#user', 'select#locale', 'button#sign-in', 'button#manage-devices']) {
        assert.equal(await page.locator(selector).count(), 1, `/demo/ has no ${selector}`);
      }
      await screenshot(page, 'demo-form');
      return checkAxe(page, 'the demo form');
    });

    const dr = address('dr-demo');
    let enrollmentTitle;
    await step('Sign in as dr-demo: the enrollment page (the first code confirms the email)', async () => {
      await demoStart('dr-demo');
      enrollmentTitle = await checkCodePage();
      assert.equal(outboxFor(dataDir, dr).length, 1, `one email to ${dr} expected`);
      await checkCookies(context, serve.base, [PROMPT_COOKIE]);
      await screenshot(page, 'enrollment');
      return checkAxe(page, 'the enrollment page');
    });

    await step('type the code with a space in it, remember this browser, verify: signed in', async () => {
      const code = latestCode(dataDir, dr);
      // A pasted or typed code with spaces must be accepted (WCAG 3.3.8: no transcription burden).
      const half = Math.ceil(code.length / 2);
      await page.locator('#code').fill(`${code.slice(0, half)} ${code.slice(half)}`);
      await page.locator('#remember').check();
      await submit('#verify');
      const result = await demoResult();
      assert.equal(result.outcome, 'success', `outcome: ${JSON.stringify(result)}`);
      assert.match(result.amr, /\botp\b/, `amr should contain otp: ${JSON.stringify(result)}`);
      await checkCookies(context, serve.base, [DEVICE_COOKIE]);
      await screenshot(page, 'demo-result');
      return checkAxe(page, 'the demo result page');
    });

    await step('Sign in again: back at once, no code page and no email (trusted browser)', async () => {
      const emails = outboxFor(dataDir, dr).length;
      const from = navigations.length;
      await demoStart('dr-demo');
      const result = await demoResult();
      assert.equal(result.outcome, 'success', `outcome: ${JSON.stringify(result)}`);
      const steps = navigations.slice(from);
      assert.ok(steps.some((n) => n.path === '/prompt/step' && n.status === 303),
        `the sign-in did not pass through /prompt/step: ${JSON.stringify(steps)}`);
      const shown = steps.filter((n) => n.path.startsWith('/prompt') && n.status < 300);
      assert.deepEqual(shown, [], 'a trusted browser must not be shown any /prompt page');
      assert.equal(outboxFor(dataDir, dr).length, emails, 'a trusted browser must not be sent an email');
    });

    await step('Manage trusted browsers: one device, marked current', async () => {
      await demoStart('dr-demo', '#manage-devices');
      assert.equal(pathOf(), '/prompt/devices', `expected /prompt/devices, at ${page.url()}`);
      assert.equal(await page.locator('h1#devices').count(), 1, 'no <h1 id="devices">');
      await checkLandmarks();
      const devices = page.locator('li.device');
      assert.equal(await devices.count(), 1, 'one trusted device expected');
      assert.match(await devices.first().getAttribute('class'), /\bcurrent\b/, 'the device is not marked current');
      assert.ok(await devices.first().getAttribute('data-device-id'), 'the device has no data-device-id');
      assert.equal(await page.locator('button#revoke-all').count(), 1, 'no <button id="revoke-all">');
      assert.equal(await page.locator('button#done').count(), 1, 'no <button id="done">');
      await screenshot(page, 'devices');
      return checkAxe(page, 'the devices page');
    });

    await step('revoke it: the list is empty; Done: back at the demo result', async () => {
      await submit('li.device button');
      assert.equal(pathOf(), '/prompt/devices', `expected /prompt/devices after revoking, at ${page.url()}`);
      assert.equal(await page.locator('li.device').count(), 0, 'the revoked device is still listed');
      await screenshot(page, 'devices-empty');
      const note = await checkAxe(page, 'the empty devices page');
      await submit('#done');
      const result = await demoResult();
      assert.equal(result.outcome, 'success', `outcome: ${JSON.stringify(result)}`);
      return note;
    });

    let code;
    await step('Sign in again: asked for a code again (the browser is no longer trusted)', async () => {
      const emails = outboxFor(dataDir, dr).length;
      await demoStart('dr-demo');
      const title = await checkCodePage();
      assert.notEqual(title, enrollmentTitle, 'an enrolled user should see the code page, not the enrollment page');
      assert.equal(outboxFor(dataDir, dr).length, emails + 1, 'a new email expected');
      code = latestCode(dataDir, dr);
      await screenshot(page, 'code');
      return checkAxe(page, 'the code page');
    });

    await step('a wrong code: #code-error announced (role=alert), the input aria-invalid', async () => {
      const last = code.at(-1);
      const wrong = code.slice(0, -1) + String((Number(last) + 1) % 10);
      await page.locator('#code').fill(wrong);
      const response = await submit('#verify');
      assert.equal(response.status(), 200, 'a wrong code answers the code page again with 200');
      const error = page.locator('p#code-error');
      assert.equal(await error.count(), 1, 'no <p id="code-error">');
      assert.equal(await error.getAttribute('role'), 'alert');
      assert.ok((await error.textContent()).trim(), '#code-error is empty');
      assert.equal(await page.locator('#code').getAttribute('aria-invalid'), 'true');
      await checkCodePage('/prompt/verify');
      await screenshot(page, 'code-error');
      return checkAxe(page, 'the code page with an error');
    });

    await step('Resend: the same code sent again, and a notice that says so', async () => {
      const emails = outboxFor(dataDir, dr).length;
      await submit('#resend');
      await checkCodePage('/prompt/resend');
      // A status message: a live region the screen reader reads out (WCAG 4.1.3).
      const notices = await page.locator('[role="status"]').allTextContents();
      const notice = notices.map((t) => t.trim()).filter(Boolean).join(' | ');
      // This is the user's third email in the window (enrollment, this sign-in, this resend): it
      // must go, and with the same code while that code lives. (Throttling is the core's tests'.)
      assert.equal(outboxFor(dataDir, dr).length - emails, 1, 'Resend must send one email');
      assert.equal(latestCode(dataDir, dr), code, 'a resend within the code lifetime sends the same code');
      assert.match(notice, /sent the email again/i, `the notice does not say it was sent again: ${notice}`);
      await screenshot(page, 'resend');
      await checkAxe(page, 'the code page after a resend');
      return ` ("${notice}")`;
    });

    await step('Cancel: the demo result says cancelled', async () => {
      await submit('#cancel');
      const result = await demoResult();
      assert.equal(result.outcome, 'cancelled', `outcome: ${JSON.stringify(result)}`);
    });

    // -----------------------------------------------------------------------------------------
    // A locked user. The lock is the consecutive-failure counter of the user's current streak,
    // `v1:failures:<org>:<user>:<streak>` (core/src/kernel/keys.rs; a user who never had a success
    // or a reset is in streak 0), reaching LOCK_AT (core/src/engine/throttle.rs); counters are rows of the
    // `counters` table in the SQLite store (host-harness/src/backends/store.rs). Writing it with
    // serve stopped, then restarting on the same data dir, also shows the lock survives a restart.
    await step('lock coach-demo in the store (serve stopped, counter written, serve restarted)', async () => {
      const throttle = fs.readFileSync(path.join(ROOT, 'core/src/engine/throttle.rs'), 'utf8');
      const lockAt = Number(throttle.match(/pub const LOCK_AT: i64 = (\d+);/)?.[1]);
      assert.ok(lockAt > 0, 'LOCK_AT not found in core/src/engine/throttle.rs');
      const keys = fs.readFileSync(path.join(ROOT, 'core/src/kernel/keys.rs'), 'utf8');
      assert.ok(keys.includes('format!("v1:failures:{org}:{user}:{streak}")'),
        'the failures key changed in core/src/kernel/keys.rs: update this step');
      await serve.stop();
      execFileSync('python3', ['-c', [
        'import sqlite3, sys',
        'db = sqlite3.connect(sys.argv[1], timeout=10)',
        'db.execute("INSERT INTO counters (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (sys.argv[2], int(sys.argv[3])))',
        'db.commit()',
      ].join('\n'), path.join(dataDir, 'mfa-step.sqlite'), `v1:failures:${ORG}:coach-demo:0`, String(lockAt)]);
      serve = await startServe(dataDir, port);
      return ` (failures = ${lockAt})`;
    });

    await step('Sign in as coach-demo: the locked page, and no way through', async () => {
      await demoStart('coach-demo');
      assert.equal(pathOf(), '/prompt/step', `expected /prompt/step, at ${page.url()}`);
      assert.equal(await page.locator('h1#locked').count(), 1, 'no <h1 id="locked">');
      await checkLandmarks();
      assert.equal(await page.locator('input#code').count(), 0, 'a locked user is offered a code field');
      assert.equal(outboxFor(dataDir, address('coach-demo')).length, 0, 'a locked user was sent an email');
      await sleep(1000); // no refresh or script may carry the browser on to the IdP by itself
      assert.equal(pathOf(), '/prompt/step', `the locked page moved on by itself to ${page.url()}`);
      await screenshot(page, 'locked');
      const note = await checkAxe(page, 'the locked page');
      // If the page offers a way back to the IdP (a cancel form), the IdP must hear "refused" (denied).
      const back = 'button#cancel, form[action$="/prompt/cancel"] button';
      if (await page.locator(back).count() > 0) {
        await submit(`${back} >> nth=0`);
        const result = await demoResult();
        assert.equal(result.outcome, 'denied', `a locked user's result: ${JSON.stringify(result)}`);
        return `${note} (returned: ${result.outcome})`;
      }
      return note;
    });

    // -----------------------------------------------------------------------------------------
    await step('a tampered request is refused (403), the real one works once, a replay is refused', async () => {
      // The signed request the demo IdP issues, without following its redirect: the demo form's
      // fields posted through the context's request client, which shares the browser's cookies.
      await page.goto(`${serve.base}/demo/`);
      await page.selectOption('#user', 'admin-demo');
      await page.selectOption('#locale', 'en');
      const fields = await page.locator('form:has(#sign-in)').evaluate((form) =>
        Object.fromEntries(new FormData(form).entries()));
      const started = await context.request.post(`${serve.base}/demo/start`, {
        form: { ...fields, purpose: 'login' },
        maxRedirects: 0,
      });
      assert.equal(started.status(), 303, '/demo/start answers 303');
      const issued = new URL(started.headers().location, serve.base);
      assert.equal(issued.pathname, '/prompt');
      const jwt = issued.searchParams.get('request');
      assert.equal(jwt?.split('.').length, 3, `not a JWT: ${jwt}`);

      // One character in the middle of the signature (the last one may only hold padding bits).
      const [header, payload, signature] = jwt.split('.');
      const i = Math.floor(signature.length / 2);
      const swapped = signature[i] === 'A' ? 'B' : 'A';
      const tampered = new URL(issued);
      tampered.searchParams.set('request', [header, payload, signature.slice(0, i) + swapped + signature.slice(i + 1)].join('.'));

      const refusedPage = async (response, why) => {
        assert.equal(response.status(), 403, `${why}: status`);
        assert.equal(await page.locator('h1#refused').count(), 1, `${why}: no <h1 id="refused">`);
        assert.equal(await page.locator('p[role="alert"]').count(), 1, `${why}: no <p role="alert">`);
        await checkLandmarks();
      };
      await refusedPage(await page.goto(tampered.href), 'tampered signature');
      await screenshot(page, 'refused');
      const note = await checkAxe(page, 'the refused page');

      const first = await page.goto(issued.href);
      assert.equal(first.status(), 200, 'the untouched request is accepted');
      assert.equal(pathOf(), '/prompt/step', `the untouched request leads to /prompt/step, at ${page.url()}`);
      await refusedPage(await page.goto(issued.href), 'replayed request');
      return note;
    });

    // -----------------------------------------------------------------------------------------
    // The email as a browser renders it. The org admin's preview page shows the HTML part in a
    // sandboxed frame, with the sample code; Sunrise's default language makes it Spanish.
    await step('the branded Spanish email on the preview page, rendered to a screenshot', async () => {
      const key = apiKey(dataDir);
      const actor = {
        user_id: `${SUNRISE}-admin`, org_id: SUNRISE, roles: ['org-admin'],
        ip: '198.51.100.4', user_agent: 'admin console',
      };
      const set = await postApi(serve.base, key, '/v1/admin/branding/set',
        { actor, org_id: SUNRISE, branding: SUNRISE_BRANDING });
      assert.equal(set.status, 200, `branding/set: ${JSON.stringify(set.json)}`);
      const link = await postApi(serve.base, key, '/v1/admin/branding/preview-link', { actor, org_id: SUNRISE });
      assert.equal(link.status, 200, `branding/preview-link: ${JSON.stringify(link.json)}`);
      assert.match(link.json.url ?? '', /^\/admin\/branding\/preview\?token=/, `no preview link: ${JSON.stringify(link.json)}`);

      const response = await page.goto(`${serve.base}${link.json.url}`);
      assert.equal(response.status(), 200, 'the preview page answers 200');
      const subject = (await page.locator('p.subject').textContent())?.trim();
      assert.match(subject, /Tu código de verificación de Sunrise Family Clinic/, `subject: ${subject}`);
      const frame = page.locator('iframe[title="The email as HTML"]');
      assert.equal(await frame.count(), 1, 'no <iframe title="The email as HTML">');
      const email = frame.contentFrame();
      assert.equal(await email.locator('html').getAttribute('lang'), 'es', 'the email is not in Spanish');
      const body = await email.locator('body').innerText();
      assert.match(body, /\b123456\b/, `the sample code is not in the rendered email:\n${body}`);
      assert.match(body, /Sunrise Family Clinic, 12 Dawn Road/, `the footer is not in the rendered email:\n${body}`);

      const file = path.join(ARTIFACTS, 'email-sunrise-es.png');
      await frame.screenshot({ path: file });
      const bytes = checkPng(file, 5_000);
      await screenshot(page, 'email-preview');
      return ` (${path.relative(ROOT, file)}, ${bytes} bytes)`;
    });

    // -----------------------------------------------------------------------------------------
    // The org admin console, in a browser context of its own (its cookie is SameSite=Strict).
    await consoleSteps({
      step, serve, browser, dataDir, screenshot,
      setPage: (p) => { page = p; },
    });
    await consoleScreenSteps({
      step, serve, browser, dataDir, screenshot,
      setPage: (p) => { page = p; },
    });

    if (process.env.UPDATE_SCREENSHOTS === '1') {
      await step('copy screenshots to docs/screenshots/ (UPDATE_SCREENSHOTS=1)', async () => {
        fs.mkdirSync(DOC_SCREENSHOTS, { recursive: true });
        const chosen = {
          code: 'prompt-code.png', devices: 'prompt-devices.png', locked: 'prompt-locked.png', 'demo-result': 'demo-result.png',
          'console-health': 'console-health.png', 'console-users': 'console-users.png', 'console-user': 'console-user.png',
          'console-policy': 'console-policy.png', 'console-branding': 'console-branding.png', 'console-audit': 'console-audit.png',
        };
        for (const [name, target] of Object.entries(chosen)) {
          assert.ok(shots.has(name), `no screenshot of ${name}`);
          fs.copyFileSync(shots.get(name), path.join(DOC_SCREENSHOTS, target));
        }
        return ` (${Object.values(chosen).join(', ')})`;
      });
    }

    console.log(`\n/prompt responses header-checked: ${checkedPages}; screenshots: ${path.relative(ROOT, ARTIFACTS)}/`);
    fs.rmSync(dataDir, { recursive: true, force: true });
  } finally {
    await browser?.close().catch(() => {});
    await serve?.stop();
  }
}

main()
  .catch((error) => {
    // A failing step has printed its report already; anything else is printed here.
    if (results.failed === 0) {
      results.failed = 1;
      console.log(String(error?.stack ?? error));
    }
  })
  .finally(() => {
    console.log(`browser: ${results.passed} passed, ${results.failed} failed`);
    process.exitCode = results.failed ? 1 : 0;
  });
