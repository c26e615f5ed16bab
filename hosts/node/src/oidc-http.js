// What the oidc-provider adapter reads from and writes to a Node HTTP exchange.
//
// Defends against: a client choosing its own IP (a forwarding header counts only when the TCP peer
// is a proxy the operator named), oversized or malformed form bodies (bounded, refused), and a
// Set-Cookie header of the app being overwritten (cookies are appended).

/** The largest form body read (a code form is a few hundred bytes). */
const MAX_FORM_BYTES = 16 * 1024;
/** The component's bound on each browser trait. */
const MAX_TRAIT_BYTES = 512;

/** An Error for a request we refuse to read; `status` is the HTTP status to answer. */
export class BadRequest extends Error {
  constructor(message, status = 400) {
    super(message);
    this.name = 'BadRequest';
    this.status = status;
  }
}

/**
 * The client's IP: the TCP peer, unless the peer is one of `trustedProxies` (exact addresses, as
 * Node reports them), in which case the right-most `X-Forwarded-For` entry that is not itself a
 * trusted proxy. A header from anyone else is ignored, so by default no header is ever trusted.
 * @param {import('node:http').IncomingMessage} req
 * @param {ReadonlySet<string>} trustedProxies
 * @returns {string}
 */
export function clientIp(req, trustedProxies) {
  const peer = stripZone(req.socket?.remoteAddress ?? '');
  if (!trustedProxies.has(peer)) return peer;
  const header = req.headers['x-forwarded-for'];
  const hops = (Array.isArray(header) ? header.join(',') : header ?? '')
    .split(',')
    .map((h) => stripZone(h.trim()))
    .filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i -= 1) {
    if (!trustedProxies.has(hops[i])) return hops[i];
  }
  return peer;
}

/** `fe80::1%eth0` → `fe80::1` (the component takes an address, not a zone). */
function stripZone(ip) {
  const at = ip.indexOf('%');
  return at === -1 ? ip : ip.slice(0, at);
}

/** Cuts a header value to the component's bound, on a character boundary. */
function bounded(value) {
  if (typeof value !== 'string' || value === '') return undefined;
  let out = value;
  while (Buffer.byteLength(out) > MAX_TRAIT_BYTES) out = out.slice(0, -1);
  return out;
}

/**
 * The browser traits the host observes: the user agent and the first `Accept-Language` tag. The
 * component derives the browser family and platform from the user agent itself.
 */
export function browserTraits(req) {
  const lang = (req.headers['accept-language'] ?? '').split(',')[0].split(';')[0].trim();
  return {
    userAgent: bounded(req.headers['user-agent']) ?? '',
    browserFamily: undefined,
    browserMajor: undefined,
    platform: undefined,
    language: /^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$/.test(lang) ? lang : undefined,
    timeZone: undefined,
    screenClass: undefined,
  };
}

/** The value of cookie `name` in the request, if sent (the first one, as browsers order them). */
export function readCookie(req, name) {
  const header = req.headers.cookie;
  if (typeof header !== 'string') return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() === name) {
      const value = part.slice(eq + 1).trim();
      return value === '' ? undefined : value;
    }
  }
  return undefined;
}

/** Appends a `Set-Cookie` header, keeping those already set on the response. */
export function appendSetCookie(res, value) {
  const prior = res.getHeader('Set-Cookie');
  const list = prior === undefined ? [] : Array.isArray(prior) ? prior : [String(prior)];
  res.setHeader('Set-Cookie', [...list, value]);
}

/**
 * The urlencoded form of a POST, as a Map (first value of each name). Uses `req.body` when a
 * framework already parsed it; refuses other content types and bodies over 16 KiB.
 * @returns {Promise<Map<string, string>>}
 */
export async function readForm(req) {
  if (req.body && typeof req.body === 'object' && !Buffer.isBuffer(req.body)) {
    return new Map(
      Object.entries(req.body).map(([k, v]) => [k, Array.isArray(v) ? String(v[0]) : String(v)]),
    );
  }
  const type = String(req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    throw new BadRequest('the form must be sent as application/x-www-form-urlencoded', 415);
  }
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) throw new BadRequest('the form is too large', 413);
    chunks.push(chunk);
  }
  const form = new Map();
  for (const [k, v] of new URLSearchParams(Buffer.concat(chunks).toString('utf8'))) {
    if (!form.has(k)) form.set(k, v);
  }
  return form;
}

/** Writes a page made by `oidc-pages.js`. */
export function sendPage(res, { status, headers, body }) {
  res.statusCode = status;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}
