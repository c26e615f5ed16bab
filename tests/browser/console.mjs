// The org admin console in a real browser (issue 19, first screen): a scripted day of logins over
// the REST API for a clinic of its own, then the console link an IdP's admin console would ask for,
// opened in Chromium. The "Adoption and health" page's data tables AND its SVG marks must equal the
// counts this script kept itself, in English and in Spanish; axe finds nothing serious; another
// organization's page and a used link are refused.
//
// What the script cannot do against a real clock: lock a user (20 consecutive wrong codes, with
// delays that grow to an hour between them). Lockouts are 0 here and checked as 0; the core's and
// the end-to-end tests lock users with a test clock (tests/tests/e2e/console.rs).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { apiKey, checkAxe, checkHeaders, checkPng, latestCode, postApi } from './lib.mjs';

const ORG = 'console-clinic';
const address = (user) => `${user}@${ORG}.example`;
const CONSOLE_COOKIE = '__Host-mfa-console';

/** Today's UTC date, as the page names days. */
const utcToday = () => new Date().toISOString().slice(0, 10);

/** A share in percent with one decimal, rounded half up (as the page states it). */
function share(part, whole) {
  const tenths = Math.floor((part * 2000 + whole) / (2 * whole));
  return `${Math.floor(tenths / 10)}.${tenths % 10}`;
}

export async function consoleSteps({ step, serve, browser, dataDir, screenshot, setPage }) {
  const key = apiKey(dataDir);
  const api = (route, body) => postApi(serve.base, key, route, body);
  /** date → what happened that day, as this script saw it. */
  const days = new Map();
  const day = () => {
    const date = utcToday();
    if (!days.has(date)) {
      days.set(date, {
        reached: 0, required: 0, sent: 0, refused: 0, verified: 0, enrolled: 0, trusted: 0, throttled: 0, locked: 0,
      });
    }
    return days.get(date);
  };
  const total = () => {
    const t = { reached: 0, required: 0, sent: 0, refused: 0, verified: 0, enrolled: 0, trusted: 0, throttled: 0, locked: 0 };
    for (const d of days.values()) for (const k of Object.keys(t)) t[k] += d[k];
    return t;
  };
  const context = (user, cookie = null) => ({
    user_id: user, org_id: ORG, email: address(user), roles: ['provider'], locale: 'en',
    device: { ip: '203.0.113.50', cookie, traits: { user_agent: 'Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0' } },
  });

  async function begin(user, cookie) {
    const r = await api('/v1/login/begin', { context: context(user, cookie) });
    assert.equal(r.status, 200, `begin ${user}: ${JSON.stringify(r.json)}`);
    day().reached += 1;
    if (r.json.outcome === 'challenge') day().required += 1;
    if (r.json.outcome === 'allow' && r.json.why?.rule === 'device:trusted') day().trusted += 1;
    return r.json;
  }
  async function send(user, id) {
    const r = await api('/v1/login/send-code', { context: context(user), challenge_id: id });
    if (r.status === 200) day().sent += 1;
    else if (r.status === 503) day().refused += 1;
    else if (r.status === 429) day().throttled += 1;
    else assert.fail(`send-code ${user}: ${r.status} ${JSON.stringify(r.json)}`);
    return r;
  }
  async function verify(user, id, code, { remember = false, enrolling = false } = {}) {
    const r = await api('/v1/login/verify', { context: context(user), challenge_id: id, code, remember_device: remember });
    if (r.status === 200) {
      day().verified += 1;
      if (enrolling) day().enrolled += 1;
    } else if (r.status === 429) day().throttled += 1;
    else if (r.status === 423) day().locked += 1;
    else assert.equal(r.status, 403, `verify ${user}: ${r.status} ${JSON.stringify(r.json)}`);
    return r;
  }
  const wrong = (code) => code.slice(0, -1) + String((Number(code.at(-1)) + 1) % 10);

  await step(`a scripted day of logins for ${ORG} over the REST API`, async () => {
    // Three clinicians enroll: the first code confirms the address.
    for (const user of ['nurse-a', 'nurse-b', 'nurse-c']) {
      const d = await begin(user);
      assert.equal(d.outcome, 'challenge', `${user}: ${JSON.stringify(d)}`);
      assert.equal(d.purpose, 'enrollment', `${user}: ${JSON.stringify(d)}`);
      assert.equal((await send(user, d.challenge_id)).status, 200);
      const r = await verify(user, d.challenge_id, latestCode(dataDir, address(user)), { enrolling: true });
      assert.equal(r.status, 200, `${user}: ${JSON.stringify(r.json)}`);
    }
    // nurse-a signs in with a code, asks to be remembered, and comes back trusted.
    let d = await begin('nurse-a');
    assert.equal(d.purpose, 'login');
    await send('nurse-a', d.challenge_id);
    const v = await verify('nurse-a', d.challenge_id, latestCode(dataDir, address('nurse-a')), { remember: true });
    assert.equal(v.status, 200);
    const device = v.json.set_cookie?.split(';')[0].split('=').slice(1).join('=');
    assert.ok(device, `no device cookie: ${JSON.stringify(v.json)}`);
    d = await begin('nurse-a', device);
    assert.equal(d.outcome, 'allow', `a trusted browser: ${JSON.stringify(d)}`);
    assert.equal(d.why.rule, 'device:trusted');
    // nurse-d: the mail service refuses the first email (the outbox folder is briefly a file, so the
    // outbox mailer cannot write); the second goes out and is used.
    d = await begin('nurse-d');
    const outbox = path.join(dataDir, 'outbox');
    fs.renameSync(outbox, `${outbox}.kept`);
    fs.writeFileSync(outbox, 'not a folder');
    let r;
    try {
      r = await send('nurse-d', d.challenge_id);
    } finally {
      fs.rmSync(outbox);
      fs.renameSync(`${outbox}.kept`, outbox);
    }
    assert.equal(r.status, 503, `the refused email: ${JSON.stringify(r.json)}`);
    assert.equal((await send('nurse-d', d.challenge_id)).status, 200);
    assert.equal((await verify('nurse-d', d.challenge_id, latestCode(dataDir, address('nurse-d')), { enrolling: true })).status, 200);
    // nurse-e: five wrong codes, then a sixth at once: slowed down (a throttle). Then asks for the
    // email again until the send window says wait (another throttle).
    d = await begin('nurse-e');
    await send('nurse-e', d.challenge_id);
    const code = latestCode(dataDir, address('nurse-e'));
    for (let i = 0; i < 5; i += 1) {
      assert.equal((await verify('nurse-e', d.challenge_id, wrong(code))).status, 403);
    }
    assert.equal((await verify('nurse-e', d.challenge_id, wrong(code))).status, 429, 'the sixth wrong code at once waits');
    let sends = 0;
    while ((await send('nurse-e', d.challenge_id)).status !== 429) {
      sends += 1;
      assert.ok(sends < 10, 'the send window never said wait');
    }
    const t = total();
    assert.equal(t.refused, 1);
    assert.equal(t.trusted, 1);
    assert.equal(t.throttled, 2);
    return ` (${JSON.stringify(t)})`;
  });

  // The console in a context of its own: its cookie is SameSite=Strict, the prompt's are Lax.
  const context2 = await browser.newContext({ bypassCSP: true, locale: 'en-US' });
  const page = await context2.newPage();
  page.setDefaultTimeout(10_000);
  setPage(page);
  const consoleResponses = [];
  page.on('response', (response) => {
    const request = response.request();
    if (request.isNavigationRequest() && request.frame() === page.mainFrame()) consoleResponses.push(response);
  });
  const checkConsoleHeaders = async () => {
    for (const response of consoleResponses.splice(0)) {
      checkHeaders(response.url(), response.status(), await response.allHeaders());
      const csp = (await response.allHeaders())['content-security-policy'] ?? '';
      assert.ok(!/script-src/.test(csp), `the console allows scripts: ${csp}`);
    }
  };
  const actor = { user_id: 'console-admin', org_id: ORG, roles: ['org-admin'], ip: '198.51.100.4', user_agent: 'admin console' };
  const rows = (id) => page.locator(`table#${id} tbody tr`).evaluateAll((trs) =>
    trs.map((tr) => [...tr.children].map((c) => c.textContent.trim())));
  const marks = (chart) => page.locator(`#${chart}-chart .mark`).evaluateAll((ms) =>
    ms.map((m) => ({ series: m.dataset.series, day: m.dataset.day ?? '', value: m.dataset.value })));
  let linkUrl;

  /** The page's tables and marks against the script's counts; `stages` names the funnel's rows. */
  async function checkFigures(stages, noLogins) {
    const t = total();
    const funnel = await rows('funnel-table');
    const want = [t.reached, t.required, t.sent, t.verified, t.enrolled];
    assert.deepEqual(funnel, stages.map((name, i) => [name, String(want[i])]), 'the funnel table');
    assert.deepEqual((await marks('funnel')).map((m) => Number(m.value)), want, 'the funnel bars');
    const codes = await rows('codes-table');
    const security = await rows('security-table');
    const trusted = await rows('trusted-table');
    const codeMarks = await marks('codes');
    const securityMarks = await marks('security');
    const shareMarks = await marks('trusted');
    assert.equal(codeMarks.length, codes.length * 3, 'three bars a day');
    assert.equal(securityMarks.length, security.length * 2, 'two bars a day');
    const zero = { reached: 0, sent: 0, refused: 0, verified: 0, trusted: 0, throttled: 0, locked: 0 };
    for (const [date, ...cells] of codes) {
      const d = days.get(date) ?? zero;
      assert.deepEqual(cells, [d.sent, d.verified, d.refused].map(String), `codes on ${date}`);
      for (const [series, value] of [['sent', d.sent], ['verified', d.verified], ['refused', d.refused]]) {
        const mark = codeMarks.find((m) => m.series === series && m.day === date);
        assert.equal(mark?.value, String(value), `the ${series} bar on ${date}`);
      }
    }
    for (const [date, ...cells] of security) {
      const d = days.get(date) ?? zero;
      assert.deepEqual(cells, [d.locked, d.throttled].map(String), `lockouts and throttles on ${date}`);
      for (const [series, value] of [['locked', d.locked], ['throttled', d.throttled]]) {
        const mark = securityMarks.find((m) => m.series === series && m.day === date);
        assert.equal(mark?.value, String(value), `the ${series} bar on ${date}`);
      }
    }
    for (const [date, ...cells] of trusted) {
      const d = days.get(date) ?? zero;
      assert.deepEqual(cells.slice(0, 2), [String(d.trusted), String(d.reached)], `trusted on ${date}`);
      const point = shareMarks.find((m) => m.day === date);
      if (d.reached > 0) {
        assert.equal(cells[2], `${share(d.trusted, d.reached)} %`, `the share on ${date}`);
        assert.equal(point?.value, share(d.trusted, d.reached), `the share's point on ${date}`);
      } else {
        assert.equal(cells[2], noLogins, `no logins on ${date}`);
        assert.equal(point, undefined, `a point on ${date}, a day without logins`);
      }
    }
    return codes.length;
  }

  await step('open the console link in Chromium: the health page equals the script\'s counts, axe', async () => {
    const link = await api('/v1/admin/console-link', { actor, org_id: ORG });
    assert.equal(link.status, 200, `console-link: ${JSON.stringify(link.json)}`);
    assert.match(link.json.url ?? '', /^\/admin\/console\?token=/);
    linkUrl = `${serve.base}${link.json.url}`;
    await page.goto(linkUrl);
    // The opening page refreshes to the console on this site (so the Strict cookie goes along).
    await page.waitForURL(/\/admin\/console\/health/);
    await page.waitForLoadState('load');
    await checkConsoleHeaders();
    const cookies = await context2.cookies(serve.base);
    const session = cookies.find((c) => c.name === CONSOLE_COOKIE);
    assert.ok(session, `no ${CONSOLE_COOKIE}: ${cookies.map((c) => c.name).join(', ')}`);
    assert.equal(session.httpOnly, true);
    assert.equal(session.secure, true);
    assert.equal(session.sameSite, 'Strict');
    assert.equal(session.path, '/');
    assert.equal(await page.locator('html').getAttribute('lang'), 'en');
    assert.equal(await page.locator('h1#health').count(), 1, 'no <h1 id="health">');
    assert.equal(await page.locator('main').count(), 1);
    for (const id of ['funnel', 'codes', 'security', 'trusted']) {
      const svg = page.locator(`#${id}-chart svg[role="img"]`);
      assert.equal(await svg.count(), 1, `the ${id} chart is not an image`);
      assert.equal(await svg.getAttribute('aria-labelledby'), `${id}-title ${id}-desc`);
      assert.ok((await page.locator(`#${id}-title`).textContent()).trim(), `${id}: empty title`);
      assert.ok((await page.locator(`#${id}-desc`).textContent()).trim(), `${id}: empty description`);
    }
    assert.match(await page.locator('#bounces-note').textContent(), /not counted/);
    const shown = await checkFigures(['Reached MFA', 'Code required', 'Code sent', 'Code verified', 'Enrolled'], 'no logins');
    assert.equal(shown, 14, '14 days by default');
    const file = await screenshot(page, 'console-health');
    const bytes = checkPng(file, 20_000);
    const note = await checkAxe(page, 'the console health page');
    return `${note} (${bytes} bytes)`;
  });

  await step('the console in Spanish, then 7 days: the same numbers, axe', async () => {
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.locator('nav.lang a[hreflang="es"]').click()]);
    await checkConsoleHeaders();
    assert.equal(await page.locator('html').getAttribute('lang'), 'es');
    await checkFigures(['Llegaron a la MFA', 'Código requerido', 'Código enviado', 'Código verificado', 'Inscritos'], 'sin inicios de sesión');
    assert.match(await page.locator('#bounces-note').textContent(), /no se cuentan/);
    await screenshot(page, 'console-health-es');
    const note = await checkAxe(page, 'the console health page in Spanish');
    await page.selectOption('#days', '7');
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.locator('.controls button[type="submit"]').click()]);
    await checkConsoleHeaders();
    assert.equal(await page.locator('html').getAttribute('lang'), 'es', 'the language stays');
    const shown = await checkFigures(['Llegaron a la MFA', 'Código requerido', 'Código enviado', 'Código verificado', 'Inscritos'], 'sin inicios de sesión');
    assert.equal(shown, 7);
    return note;
  });

  await step('the console refuses another organization\'s page and a used link (403), axe', async () => {
    const other = await page.goto(`${serve.base}/admin/console/health?org=demo-clinic`);
    assert.equal(other.status(), 403);
    assert.equal(await page.locator('h1#wrong-org').count(), 1, 'no <h1 id="wrong-org">');
    assert.equal(await page.locator('[data-value]').count(), 0, 'a refused page shows figures');
    const note = await checkAxe(page, 'the console\'s refused page');
    const again = await page.goto(linkUrl);
    assert.equal(again.status(), 403, 'a used link opens nothing');
    assert.equal(await page.locator('h1#link-refused').count(), 1);
    await checkConsoleHeaders();
    await context2.close();
    return note;
  });
}
