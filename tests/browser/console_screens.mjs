// The org admin console's screens in a real browser (issue 19): after console.mjs's scripted day
// and health page, an admin of the same clinic walks the other screens the way they would:
// users (find the locked user, unlock them with a reset; revoke a trusted browser), policy
// (tighten it, read the preview of who will be asked, save), branding (edit it beside the live
// email, save) and the audit trail (filter it, export it as CSV and JSONL). Each page is checked
// with axe; a session for this clinic never shows another's data.
//
// Locking a user takes 20 wrong codes in a row with delays that grow to an hour between them: the
// script steps serve's test clock (`--test-clock-offset-file`, lib.mjs) across them instead of
// waiting, so the component sees the hours pass; the browser and this script keep real time.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { apiKey, checkAxe, checkHeaders, latestCode, postApi, sleep } from './lib.mjs';

export const ORG = 'console-clinic';
const address = (user) => `${user}@${ORG}.example`;

export async function consoleScreenSteps({ step, serve, browser, dataDir, screenshot, setPage }) {
  const key = apiKey(dataDir);
  const api = (route, body) => postApi(serve.base, key, route, body);
  const actor = { user_id: 'console-admin', org_id: ORG, roles: ['org-admin'], ip: '198.51.100.4', user_agent: 'admin console' };
  const context = (user, cookie = null) => ({
    user_id: user, org_id: ORG, email: address(user), roles: ['provider'], locale: 'en',
    device: { ip: '203.0.113.50', cookie, traits: { user_agent: 'Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0' } },
  });
  let offset = 0;
  /** Moves serve's clock `seconds` ahead (the component's time; see lib.mjs) and waits for it. */
  const advance = async (seconds) => {
    offset += seconds;
    fs.writeFileSync(path.join(dataDir, 'clock-offset'), String(offset));
    await sleep(300);
  };

  await step('lock nurse-locked: 20 wrong codes in a row, serve\'s clock stepped across the delays', async () => {
    const user = 'nurse-locked';
    let r = await api('/v1/login/begin', { context: context(user) });
    assert.equal(r.json.purpose, 'enrollment', JSON.stringify(r.json));
    assert.equal((await api('/v1/login/send-code', { context: context(user), challenge_id: r.json.challenge_id })).status, 200);
    r = await api('/v1/login/verify', {
      context: context(user), challenge_id: r.json.challenge_id, code: latestCode(dataDir, address(user)), remember_device: false,
    });
    assert.equal(r.status, 200, `enrolled: ${JSON.stringify(r.json)}`);
    r = await api('/v1/login/begin', { context: context(user) });
    assert.equal(r.json.purpose, 'login', JSON.stringify(r.json));
    const id = r.json.challenge_id;
    assert.equal((await api('/v1/login/send-code', { context: context(user), challenge_id: id })).status, 200);
    const code = latestCode(dataDir, address(user));
    const wrong = code.slice(0, -1) + String((Number(code.at(-1)) + 1) % 10);
    const statuses = [];
    for (let i = 0; i < 20; i += 1) {
      if (i >= 5) await advance(3601);
      const v = await api('/v1/login/verify', { context: context(user), challenge_id: id, code: wrong, remember_device: false });
      statuses.push(v.status);
    }
    const locked = await api('/v1/login/begin', { context: context(user) });
    assert.equal(locked.json.outcome, 'deny', `after 20 wrong codes: ${JSON.stringify(locked.json)} (${statuses.join(' ')})`);
    assert.equal(locked.json.why?.rule, 'user:locked');
    // The identity provider tells mfa-step about a clinician who never logged in.
    const synced = await api('/v1/admin/sync-roster', {
      actor, org_id: ORG, add: [{ user_id: 'dr-roster', roles: ['clinician'] }],
    });
    assert.equal(synced.status, 200, JSON.stringify(synced.json));
    assert.deepEqual(synced.json, { added: 1, removed: 0 });
    return ` (clock +${offset} s; verify answers ${statuses.join(' ')})`;
  });

  // A console session of its own, opened after the clock moved (a session lives 15 minutes of the
  // component's time).
  const context2 = await browser.newContext({ bypassCSP: true, locale: 'en-US' });
  const page = await context2.newPage();
  page.setDefaultTimeout(10_000);
  setPage(page);
  const responses = [];
  page.on('response', (response) => {
    const request = response.request();
    if (request.isNavigationRequest() && request.frame() === page.mainFrame()) responses.push(response);
  });
  const checkConsoleHeaders = async () => {
    for (const response of responses.splice(0)) {
      checkHeaders(response.url(), response.status(), await response.allHeaders());
      const csp = (await response.allHeaders())['content-security-policy'] ?? '';
      assert.ok(!/script-src/.test(csp), `the console allows scripts: ${csp}`);
    }
  };
  const navigate = async (action) => {
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), action()]);
    await checkConsoleHeaders();
  };

  await step('open the console again and find the locked user on the users screen, axe', async () => {
    const link = await api('/v1/admin/console-link', { actor, org_id: ORG });
    assert.equal(link.status, 200, JSON.stringify(link.json));
    await page.goto(`${serve.base}${link.json.url}`);
    await page.waitForURL(/\/admin\/console\/health/);
    await page.waitForLoadState('load');
    await checkConsoleHeaders();
    await navigate(() => page.locator('nav.screens a', { hasText: 'Users' }).click());
    assert.equal(await page.locator('h1#users').count(), 1, 'no <h1 id="users">');
    assert.equal(await page.locator('nav.screens a[aria-current="page"]').textContent(), 'Users');
    // Everyone the script made in this clinic: five enrolled at the scripted day's start or later
    // (nurse-a…d, nurse-locked), nurse-e who never confirmed an address, and the roster's dr-roster.
    const summary = (await page.locator('#users-summary').textContent()).trim();
    assert.equal(summary, '7 users: 1 locked, 4 enrolled, 0 in their grace period, 2 not enrolled yet.');
    const states = await page.locator('#users-table tbody tr').evaluateAll((trs) =>
      trs.map((tr) => [tr.dataset.user, tr.dataset.state]));
    assert.deepEqual(states, [
      ['dr-roster', 'not-enrolled'], ['nurse-a', 'enrolled'], ['nurse-b', 'enrolled'], ['nurse-c', 'enrolled'],
      ['nurse-d', 'enrolled'], ['nurse-e', 'not-enrolled'], ['nurse-locked', 'locked'],
    ]);
    const note = await checkAxe(page, 'the console users screen');
    await page.selectOption('#status', 'locked');
    await navigate(() => page.locator('form.controls button[type="submit"]').click());
    const locked = await page.locator('#users-table tbody tr').evaluateAll((trs) => trs.map((tr) => tr.dataset.user));
    assert.deepEqual(locked, ['nurse-locked']);
    await screenshot(page, 'console-users');
    return note;
  });

  await step('unlock nurse-locked with a reset; revoke nurse-a\'s trusted browser, axe', async () => {
    await navigate(() => page.locator('#users-table a', { hasText: 'nurse-locked' }).click());
    assert.equal((await page.locator('h1#user').textContent()).trim(), 'User nurse-locked');
    const state = () => page.locator('#state-table tbody tr').first().locator('td').textContent();
    assert.equal(await state(), 'Locked');
    const note = await checkAxe(page, 'the console user page');
    await screenshot(page, 'console-user');
    await navigate(() => page.locator('button#reset').click());
    assert.match(await page.locator('#done').textContent(), /MFA was reset/);
    assert.equal(await state(), 'Not enrolled yet', 'unlocked, to enroll again');
    const begin = await api('/v1/login/begin', { context: context('nurse-locked') });
    assert.equal(begin.json.outcome, 'challenge', `unlocked: ${JSON.stringify(begin.json)}`);
    assert.equal(begin.json.purpose, 'enrollment');
    // nurse-a's trusted browser (console.mjs's scripted day), revoked from the console.
    await page.goto(`${serve.base}/admin/console/user?id=nurse-a&lang=en`);
    await checkConsoleHeaders();
    assert.equal(await page.locator('#devices-table tbody tr').count(), 1, 'nurse-a has one trusted browser');
    await navigate(() => page.locator('#devices-table button', { hasText: 'Revoke' }).click());
    assert.match(await page.locator('#done').textContent(), /Trusted browsers revoked: 1/);
    assert.equal(await page.locator('#no-devices').count(), 1);
    return note;
  });

  await step('the audit trail: a user\'s history from their page, filtered, exported as CSV and JSONL, axe', async () => {
    // A record whose user agent a spreadsheet would run as a formula (the IdP's sync call's).
    const formula = '=HYPERLINK("http://evil.example","x")';
    const synced = await api('/v1/admin/sync-roster', {
      actor: { ...actor, user_agent: formula }, org_id: ORG, add: [{ user_id: 'dr-roster-2' }],
    });
    assert.equal(synced.status, 200, JSON.stringify(synced.json));
    await page.goto(`${serve.base}/admin/console/user?id=nurse-locked&lang=en`);
    await checkConsoleHeaders();
    await navigate(() => page.locator('a#history').click());
    assert.equal(await page.locator('h1#audit').count(), 1, 'no <h1 id="audit">');
    assert.equal(await page.locator('#audit-fallback').count(), 0, 'serve filled in the records');
    const chain = page.locator('#chain-status');
    assert.equal(await chain.getAttribute('class'), 'ok', await chain.textContent());
    const rows = () => page.locator('#audit-table tbody tr').evaluateAll((trs) =>
      trs.map((tr) => [...tr.children].map((c) => c.textContent.trim())));
    const history = await rows();
    const actions = new Set(history.map((r) => r[2]));
    for (const a of ['challenge_started', 'code_sent', 'enrolled', 'code_rejected', 'user_locked', 'access_denied', 'mfa_reset']) {
      assert.ok(actions.has(a), `${a} in nurse-locked's history: ${[...actions]}`);
    }
    assert.ok(history.every((r) => r[4] === 'nurse-locked' || r[5] === 'nurse-locked'), 'only their records');
    const seqs = history.map((r) => Number(r[0]));
    assert.deepEqual(seqs, [...seqs].sort((a, b) => b - a), 'newest first');
    let note = await checkAxe(page, 'the console audit trail');
    await screenshot(page, 'console-audit');
    // Filtered to the reset: one record, the admin as actor.
    await page.selectOption('#action', 'mfa_reset');
    await navigate(() => page.locator('form button[type="submit"].primary').click());
    const reset = await rows();
    assert.equal(reset.length, 1, JSON.stringify(reset));
    assert.deepEqual([reset[0][2], reset[0][3], reset[0][4], reset[0][5]], ['mfa_reset', 'success', 'console-admin', 'nurse-locked']);
    // Exported as CSV, with the same filter: a header row and the one record.
    const download = async (id) => {
      const href = await page.locator(`a#${id}`).getAttribute('href');
      const response = await context2.request.get(`${serve.base}${href}`);
      assert.equal(response.status(), 200, `${id}: ${response.status()}`);
      assert.match(response.headers()['content-disposition'] ?? '', /^attachment; filename="audit-console-clinic-/);
      assert.equal(response.headers()['x-mfa-step-audit-query'], undefined, 'the query header reached the client');
      return { type: response.headers()['content-type'], text: await response.text() };
    };
    const csv = await download('export-csv');
    assert.match(csv.type, /^text\/csv/);
    const lines = csv.text.trim().split('\r\n');
    assert.equal(lines.length, 2, csv.text);
    assert.match(lines[0], /^v,id,seq,at,org,actor,subject,action,outcome,reason,ip,user_agent,/);
    assert.match(lines[1], /,"console-admin","nurse-locked","mfa_reset","success",/);
    // JSONL: the stored lines, byte for byte, one per record of the filter.
    await page.selectOption('#action', '');
    await navigate(() => page.locator('form button[type="submit"].primary').click());
    const jsonl = await download('export-jsonl');
    const records = jsonl.text.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(records.length, (await rows()).length);
    assert.ok(records.every((r) => r.org === ORG && typeof r.hash === 'string' && r.hash.length === 64));
    // The formula in the roster call's user agent is neutralized in the CSV.
    await page.goto(`${serve.base}/admin/console/audit?action=roster_synced&lang=en`);
    await checkConsoleHeaders();
    const synced2 = await download('export-csv');
    assert.ok(synced2.text.includes(`"'=HYPERLINK(""http://evil.example"",""x"")"`), synced2.text);
    assert.ok(!/(^|,)=HYPERLINK/m.test(synced2.text), 'a cell starts with =');
    // A time range with nothing in it.
    await page.goto(`${serve.base}/admin/console/audit?to=2000-01-01&lang=en`);
    assert.equal(await page.locator('#audit-empty').count(), 1);
    note += await checkAxe(page, 'the console audit trail, nothing matching');
    // Another organization's trail: refused, nothing exported.
    const other = await page.goto(`${serve.base}/admin/console/audit?org=demo-clinic`);
    assert.equal(other.status(), 403);
    const otherExport = await context2.request.get(`${serve.base}/admin/console/audit/export?format=jsonl&org=demo-clinic`);
    assert.equal(otherExport.status(), 403);
    assert.ok(!(await otherExport.text()).includes('"org":"demo-clinic"'));
    await checkConsoleHeaders();
    return note;
  });

  await step('the users screen refuses another organization (403) and shows none of its users', async () => {
    const other = await page.goto(`${serve.base}/admin/console/users?org=demo-clinic`);
    assert.equal(other.status(), 403);
    assert.equal(await page.locator('h1#wrong-org').count(), 1);
    assert.equal(await page.locator('#users-table').count(), 0);
    // The demo clinic's users are not listed by id either: the session's organization is used.
    await page.goto(`${serve.base}/admin/console/users?q=demo`);
    assert.equal(await page.locator('#users-table').count(), 0, 'another clinic\'s user listed');
    await checkConsoleHeaders();
    return '';
  });

  await step('tighten the policy: the preview explains each change and who will be asked, then save, axe', async () => {
    await navigate(() => page.locator('nav.screens a', { hasText: 'Policy' }).click());
    assert.equal(await page.locator('h1#policy').count(), 1, 'no <h1 id="policy">');
    // The platform's roles include provider and clinician: every user the clinic has but
    // dr-roster-2, who holds no role.
    const now = (await page.locator('#who-now').textContent()).replace(/\s+/g, ' ').trim();
    assert.match(now, /That is 7 users\.$/, now);
    const hint = await page.locator('#trust_days-hint').textContent();
    assert.match(hint, /30 \(the platform's limit\)/, `the limit beside the field: ${hint}`);
    let note = await checkAxe(page, 'the console policy screen');
    await page.locator('#mandate-everyone').check();
    await page.locator('#trust_days').fill('7');
    await navigate(() => page.locator('button[name="step"][value="preview"]').click());
    const changes = await page.locator('#changes li').evaluateAll((lis) =>
      lis.map((li) => [li.dataset.field, li.dataset.effect]));
    assert.deepEqual(changes, [['mandate', 'tightens'], ['trust_days', 'tightens']], JSON.stringify(changes));
    assert.match(await page.locator('#changes li[data-field="trust_days"]').textContent(), /30 days → 7 days/);
    const after = (await page.locator('#who-after').textContent()).replace(/\s+/g, ' ').trim();
    // Everyone: the seven, and dr-roster-2 (on the roster with no role; the audit step added it).
    assert.match(after, /everyone in the organization: 8 users\./, after);
    // Nothing is saved by a preview.
    const before = await api('/v1/admin/policy/get', { actor, org_id: ORG });
    assert.equal(before.status, 200, JSON.stringify(before.json));
    assert.equal(before.json.trust_days, 30, 'a preview saved the policy');
    await screenshot(page, 'console-policy');
    note += await checkAxe(page, 'the console policy preview');
    await navigate(() => page.locator('button[name="step"][value="save"]').click());
    assert.equal(await page.locator('h1#policy-saved').count(), 1, 'no <h1 id="policy-saved">');
    const saved = await api('/v1/admin/policy/get', { actor, org_id: ORG });
    assert.equal(saved.json.trust_days, 7);
    assert.equal(saved.json.mandate, 'everyone');
    return note;
  });

  await step('edit the branding beside its live email, save it: the console takes the new look, axe', async () => {
    await navigate(() => page.locator('nav.screens a', { hasText: 'Branding' }).click());
    assert.equal(await page.locator('h1#branding').count(), 1, 'no <h1 id="branding">');
    let note = await checkAxe(page, 'the console branding screen');
    await page.locator('#display_name').fill('Console Clinic Care');
    await page.locator('#primary_color').fill('#0b6e4f');
    await page.locator('#footer_text').fill('Console Clinic, 1 Test Street');
    await navigate(() => page.locator('button[name="step"][value="preview"]').click());
    assert.equal(await page.locator('#draft-note').count(), 1, 'the preview says it is a draft');
    assert.match(await page.locator('#email-subject').textContent(), /Console Clinic Care/);
    const email = page.frameLocator('#email-frame');
    const body = await email.locator('body').innerText();
    assert.match(body, /\b123456\b/, `the sample code in the email:\n${body}`);
    assert.match(body, /Console Clinic, 1 Test Street/, `the draft footer in the email:\n${body}`);
    assert.match(await page.locator('#email-text').textContent(), /123456/);
    const stored = await api('/v1/admin/branding/get', { actor, org_id: ORG });
    assert.notEqual(stored.json.display_name, 'Console Clinic Care', 'a preview saved the branding');
    await screenshot(page, 'console-branding');
    note += await checkAxe(page, 'the console branding preview');
    await navigate(() => page.locator('button[name="step"][value="save"]').click());
    assert.equal(await page.locator('h1#branding-saved').count(), 1, 'no <h1 id="branding-saved">');
    const header = await page.locator('header').evaluate((h) => getComputedStyle(h).backgroundColor);
    assert.equal(header, 'rgb(11, 110, 79)', 'the console wears the new primary color');
    assert.equal((await page.locator('header .org').textContent()).trim(), 'Console Clinic Care');
    return note;
  });

  await step('the branding email frame under the real CSP (no bypass): it renders, styled, only inside the console', async () => {
    // Axe needs the CSP bypassed in the walking context; this one keeps the headers as sent.
    const strict = await browser.newContext({ locale: 'en-US' });
    await strict.addCookies(await context2.cookies(serve.base));
    const p = await strict.newPage();
    const response = await p.goto(`${serve.base}/admin/console/branding?lang=en`);
    assert.equal(response.status(), 200);
    const csp = response.headers()['content-security-policy'] ?? '';
    assert.match(csp, /frame-src 'self'/, csp);
    const frame = p.frameLocator('#email-frame');
    const body = await frame.locator('body').innerText();
    assert.match(body, /\b123456\b/, `the email did not render under the CSP:\n${body}`);
    // The email's own inline styles apply (its frame has a CSP of its own that allows them).
    const colors = await frame.locator('body *').evaluateAll((els) =>
      els.map((e) => getComputedStyle(e).backgroundColor));
    assert.ok(colors.includes('rgb(11, 110, 79)'), `no element of the email in the primary color: ${[...new Set(colors)]}`);
    // Opened on its own, the frame's URL may not be framed by another origin.
    const src = await p.locator('#email-frame').getAttribute('src');
    const alone = await p.goto(`${serve.base}${src}`);
    assert.match(alone.headers()['content-security-policy'] ?? '', /frame-ancestors 'self'/);
    assert.equal(alone.headers()['x-frame-options'], 'SAMEORIGIN');
    await strict.close();
    return '';
  });

  await context2.close();
}

