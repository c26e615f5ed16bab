// Helpers of the browser suite (run.mjs): the server, the outbox, and the checks every page gets.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The repository's root. */
export const ROOT = path.resolve(HERE, '..', '..');
/** The `mfa-step` binary under test: $MFA_STEP_BIN, relative to the root, or the debug build. */
export const BIN = path.resolve(ROOT, process.env.MFA_STEP_BIN || 'target/debug/mfa-step');
/** Chromium: $CHROMIUM or Debian's. */
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const AXE_PATH = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

// The WCAG levels axe checks, and the impacts that fail the run.
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'];
const AXE_FAILING = new Set(['serious', 'critical']);

// The demo IdP's own nonce cookie belongs to the other party and is not held to the component's rules.
const DEMO_COOKIES = new Set(['demo-idp-nonce']);

/** Headless Chromium with one context, in US English. */
export async function launchChromium() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
  });
  // bypassCSP only so that axe-core can be injected into the pages (their CSP rightly forbids
  // foreign scripts). The CSP header itself is asserted on every /prompt response by checkHeaders,
  // so bypassing it here hides nothing.
  const context = await browser.newContext({ bypassCSP: true, locale: 'en-US' });
  return { browser, context };
}

/** Fails the whole run before anything starts: a missing tool is an error, not a skip. */
export function requireFile(file, what, hint) {
  if (!fs.existsSync(file)) {
    console.error(`browser: ${what} not found at ${file}\n  ${hint}`);
    process.exit(1);
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `mfa-step serve --demo` on `port` with `dataDir` and resolves once `/healthz` answers.
 * Keeps the last lines of its stderr (the request log) for a failure report.
 */
export async function startServe(dataDir, port) {
  const tail = [];
  const child = spawn(
    BIN,
    ['serve', '--demo', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir,
      // The console's users walk steps across hours of wrong-code delays (console_screens.mjs).
      '--test-clock-offset-file', path.join(dataDir, 'clock-offset')],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } },
  );
  const keep = (chunk) => {
    for (const line of chunk.toString().split('\n')) {
      if (line.trim()) tail.push(line);
    }
    tail.splice(0, Math.max(0, tail.length - 60));
  };
  child.stderr.on('data', keep);
  child.stdout.on('data', () => {}); // the demo walk-through: not needed, but drained
  let exited = null;
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => {
    exited = { code, signal };
    resolve();
  }));

  const base = `http://127.0.0.1:${port}`;
  // A debug build compiles the component at start-up: allow it a while on a 2-core machine.
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (exited) {
      throw new Error(`mfa-step serve exited at start (${JSON.stringify(exited)}):\n${tail.join('\n')}`);
    }
    try {
      const res = await fetch(`${base}/healthz`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`mfa-step serve did not answer /healthz within 180 s:\n${tail.join('\n')}`);
    }
    await sleep(200);
  }

  return {
    base,
    tail,
    get running() { return !exited; },
    /** SIGINT (serve's graceful shutdown), then SIGKILL after 5 s. */
    async stop() {
      if (exited) return;
      child.kill('SIGINT');
      await Promise.race([exit, sleep(5000)]);
      if (!exited) {
        child.kill('SIGKILL');
        await exit;
      }
    },
    killNow() {
      if (!exited) child.kill('SIGKILL');
    },
  };
}

/** The outbox's `.txt` files for `email`, oldest first (their names start with a growing number). */
export function outboxFor(dataDir, email) {
  const dir = path.join(dataDir, 'outbox');
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir)
    .filter((name) => name.endsWith('.txt') && !name.startsWith('.') && name.includes(email))
    .sort()
    .map((name) => path.join(dir, name));
}

/** The code in the newest email to `email`: the text part has it alone on a line. */
export function latestCode(dataDir, email) {
  const files = outboxFor(dataDir, email);
  assert.ok(files.length > 0, `no email to ${email} in ${path.join(dataDir, 'outbox')}`);
  const text = fs.readFileSync(files.at(-1), 'utf8');
  const match = text.match(/^[ \t]*(\d{6,8})[ \t]*$/m);
  assert.ok(match, `no line of 6 to 8 digits in ${files.at(-1)}:\n${text}`);
  return match[1];
}

/** Splits a CSP header into directive name → list of source expressions. */
export function parseCsp(header) {
  const directives = new Map();
  for (const part of header.split(';')) {
    const [name, ...values] = part.trim().split(/\s+/);
    if (name && !directives.has(name.toLowerCase())) {
      directives.set(name.toLowerCase(), values);
    }
  }
  return directives;
}

/**
 * The security headers of one /prompt response. A page (any non-redirect) must carry all of them;
 * a redirect only `Cache-Control: no-store` (it may set the prompt cookie or carry a signed result
 * URL, so it must not be cached either).
 */
export function checkHeaders(url, status, headers) {
  const where = `${new URL(url).pathname} (${status})`;
  const cacheControl = headers['cache-control'] ?? '';
  assert.ok(/(^|[\s,])no-store($|[\s,])/i.test(cacheControl),
    `${where}: Cache-Control must include no-store, was ${JSON.stringify(cacheControl)}`);
  if (status >= 300 && status < 400) return;

  const cspHeader = headers['content-security-policy'];
  assert.ok(cspHeader, `${where}: no Content-Security-Policy header`);
  const csp = parseCsp(cspHeader);
  assert.deepEqual(csp.get('frame-ancestors'), ["'none'"],
    `${where}: CSP must have frame-ancestors 'none', was ${JSON.stringify(cspHeader)}`);
  // Inline scripts are allowed unless script-src (or, without it, default-src) forbids them.
  const scriptSources = csp.get('script-src') ?? csp.get('default-src');
  assert.ok(scriptSources, `${where}: CSP has neither script-src nor default-src, so inline scripts run: ${cspHeader}`);
  assert.ok(!scriptSources.map((s) => s.toLowerCase()).includes("'unsafe-inline'"),
    `${where}: CSP allows inline scripts: ${cspHeader}`);
  assert.equal((headers['x-frame-options'] ?? '').toUpperCase(), 'DENY',
    `${where}: X-Frame-Options must be DENY`);
}

/**
 * The component's cookies on `base`: every one is `__Host-`, HttpOnly, Secure, SameSite=Lax and
 * Path=/, and each name in `required` is present.
 */
export async function checkCookies(context, base, required) {
  const cookies = (await context.cookies(base)).filter((c) => !DEMO_COOKIES.has(c.name));
  for (const name of required) {
    assert.ok(cookies.some((c) => c.name === name),
      `cookie ${name} missing; the browser holds: ${cookies.map((c) => c.name).join(', ') || 'none'}`);
  }
  for (const c of cookies) {
    assert.ok(c.name.startsWith('__Host-'), `cookie ${c.name}: the name must start with __Host-`);
    assert.equal(c.httpOnly, true, `cookie ${c.name} must be HttpOnly`);
    assert.equal(c.secure, true, `cookie ${c.name} must be Secure`);
    assert.equal(c.sameSite, 'Lax', `cookie ${c.name} must be SameSite=Lax`);
    assert.equal(c.path, '/', `cookie ${c.name} must have Path=/`);
  }
  return cookies;
}

/** Runs axe-core on the page and fails on any serious or critical violation, printing them all. */
export async function checkAxe(page, name) {
  // Injected as a script element: possible only because the context bypasses the page's CSP.
  await page.addScriptTag({ path: AXE_PATH });
  const result = await page.evaluate(
    (tags) => window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] }),
    AXE_TAGS,
  );
  const bad = result.violations.filter((v) => AXE_FAILING.has(v.impact));
  const minor = result.violations.length - bad.length;
  if (bad.length) {
    const lines = bad.flatMap((v) => [
      `  [${v.impact}] ${v.id}: ${v.help} (${v.helpUrl})`,
      ...v.nodes.slice(0, 5).map((n) => `      at ${n.target.join(' ')}: ${n.failureSummary?.replace(/\n/g, ' ')}`),
    ]);
    assert.fail(`axe on ${name}: ${bad.length} serious or critical violation(s):\n${lines.join('\n')}`);
  }
  return minor ? ` (axe: ${minor} minor/moderate)` : '';
}

/** The API key `serve` uses: $MFA_STEP_API_KEY if set, as serve reads it, else `<dataDir>/api.key`. */
export function apiKey(dataDir) {
  const fromEnv = process.env.MFA_STEP_API_KEY?.trim();
  if (fromEnv) return fromEnv;
  const file = path.join(dataDir, 'api.key');
  assert.ok(fs.existsSync(file), `serve wrote no API key at ${file}`);
  return fs.readFileSync(file, 'utf8').trim();
}

/** POSTs `body` as JSON to the REST API with the API key; resolves to { status, json }. */
export async function postApi(base, key, route, body) {
  const res = await fetch(`${base}${route}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    assert.fail(`${route} answered ${res.status} with no JSON: ${text.slice(0, 500)}`);
  }
  return { status: res.status, json };
}

/**
 * A screenshot someone can look at: a PNG file (its signature) bigger than `minBytes`, since a
 * blank or near-empty render compresses to a few hundred bytes.
 */
export function checkPng(file, minBytes) {
  assert.ok(fs.existsSync(file), `no screenshot at ${file}`);
  const bytes = fs.readFileSync(file);
  assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a],
    `${file} is not a PNG`);
  assert.ok(bytes.length > minBytes, `${file}: a near-empty screenshot (${bytes.length} bytes)`);
  return bytes.length;
}
