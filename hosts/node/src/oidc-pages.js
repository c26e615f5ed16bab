// The second-factor pages an oidc-provider app shows during the `mfa` interaction.
//
// Server-rendered HTML, no script: every value is HTML-escaped, every form carries the
// interaction's CSRF token, errors are announced (`role="alert"`, `aria-invalid`) and the code
// field is `autocomplete="one-time-code"`. The pages say what happened and what to do; they never
// say whether an account or an address exists (the user already passed the password here, and a
// wrong, expired or used code all read the same), and never show a code, a token or a key.

import { randomBytes } from 'node:crypto';

/** Escapes text for HTML element content and quoted attribute values. */
export function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;',
    '<': '&lt;',
    '>': '&gt;',
    '"': '&quot;',
    "'": '&#39;',
  })[c]);
}

const STYLE = `*,*::before,*::after{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Arial,sans-serif;font-size:1.05rem;line-height:1.5;color:#1b1f24;background:#f4f6f8}
main{max-width:34rem;margin:24px auto;padding:24px;background:#fff;border:1px solid #c4cad1;border-radius:8px}
h1{font-size:1.5rem;line-height:1.25;margin:0 0 12px}
p{margin:0 0 12px}
label{display:block;font-weight:600;margin:16px 0 4px}
.hint{color:#4a525c;font-size:.95rem;margin:0 0 6px}
input#code{font-size:1.6rem;letter-spacing:.2em;padding:8px 10px;width:100%;max-width:14rem;border:2px solid #4a525c;border-radius:6px}
input#code[aria-invalid="true"]{border-color:#b3261e}
.check{display:flex;gap:10px;align-items:flex-start;margin:16px 0 0}
.check input{width:1.5rem;height:1.5rem;margin:3px 0 0;flex:none}
.check label{margin:0;font-weight:400}
button{font:inherit;font-weight:600;padding:10px 18px;border-radius:6px;border:2px solid #0b3d91;background:#0b3d91;color:#fff;cursor:pointer;min-height:44px}
button.secondary{background:#fff;color:#1b1f24;border-color:#4a525c}
button:focus-visible,input:focus-visible{outline:3px solid #1a5fb4;outline-offset:2px}
.actions{display:flex;flex-wrap:wrap;gap:12px;margin:20px 0 0}
.error{color:#b3261e;font-weight:600;border-left:4px solid #b3261e;padding:4px 0 4px 10px}
.notice{border-left:4px solid #1a5fb4;padding:4px 0 4px 10px}
.why{background:#f4f6f8;border-radius:6px;padding:10px 12px;font-size:.95rem}
.others{border-top:1px solid #c4cad1;margin:24px 0 0;padding:16px 0 0}`;

/**
 * A complete page: `{ status, headers, body }`. `formOrigins` are the origins a form's redirect
 * chain may end at (the client's redirect URI), added to the CSP's `form-action`.
 */
function page({ status, title, main, formOrigins = [], headers = {} }) {
  const nonce = randomBytes(16).toString('base64');
  const formAction = ["'self'", ...new Set(formOrigins)].join(' ');
  const body = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>${escapeHtml(title)}</title>
<style nonce="${nonce}">${STYLE}</style>
</head>
<body>
<main>
${main}
</main>
</body>
</html>
`;
  return {
    status,
    headers: {
      'Content-Type': 'text/html; charset=utf-8',
      'Cache-Control': 'no-store',
      'Content-Security-Policy': `default-src 'none'; style-src 'nonce-${nonce}'; form-action ${formAction}; frame-ancestors 'none'; base-uri 'none'`,
      'X-Frame-Options': 'DENY',
      'X-Content-Type-Options': 'nosniff',
      // Not `no-referrer`: under it browsers send `Origin: null` with the forms, and the forms'
      // origin is checked. `same-origin` still keeps the interaction's URL from other sites.
      'Referrer-Policy': 'same-origin',
      ...headers,
    },
    body,
  };
}

/** A hidden CSRF field. */
function csrfField(csrf) {
  return `<input type="hidden" name="csrf" value="${escapeHtml(csrf)}">`;
}

/** "Return to the application" (ends the interaction with `access_denied`). */
function returnForm(base, csrf, label = 'Return to the application') {
  return `<form method="post" action="${escapeHtml(base)}/mfa/abort">
${csrfField(csrf)}
<button type="submit" id="return" class="secondary">${escapeHtml(label)}</button>
</form>`;
}

/** Says how long `seconds` is in words a person reads at a glance. */
export function waitWords(seconds) {
  const s = Math.max(1, Math.ceil(Number(seconds) || 1));
  if (s < 60) return `${s} second${s === 1 ? '' : 's'}`;
  const m = Math.ceil(s / 60);
  if (m < 60) return `${m} minute${m === 1 ? '' : 's'}`;
  const h = Math.ceil(m / 60);
  return `${h} hour${h === 1 ? '' : 's'}`;
}

/**
 * The code page.
 * @param {object} o
 * @param {string} o.base the interaction's path, e.g. `/interaction/<uid>`
 * @param {string} o.csrf the interaction's CSRF token
 * @param {string} o.maskedEmail where the code went, masked by the component
 * @param {string} o.purpose `login`, `enrollment` or `email-change`
 * @param {string} o.why the component's explanation (`why.message`)
 * @param {boolean} o.rememberOffered whether "remember this browser" is shown
 * @param {string} [o.notice] a status line (e.g. "we sent the email again")
 * @param {string} [o.error] an error line (wrong code, too fast…)
 * @param {number} [o.status] HTTP status (200 unless an error says otherwise)
 * @param {number} [o.retryAfter] seconds, sent as `Retry-After`
 * @param {string[]} [o.formOrigins] see `page`
 */
export function codePage(o) {
  const enrollment = o.purpose === 'enrollment';
  const heading = enrollment ? 'Confirm your email address' : 'Enter the code we emailed you';
  // The component decides the code's length and lifetime and the trust period: no number here.
  const sentTo = `We sent a code to ${o.maskedEmail}. It works once, for a few minutes.`;
  const notice = o.notice
    ? `<p class="notice" id="code-notice" role="status">${escapeHtml(o.notice)}</p>\n`
    : '';
  const error = o.error
    ? `<p class="error" id="code-error" role="alert">${escapeHtml(o.error)}</p>\n`
    : '';
  const described = [o.notice ? 'code-notice' : '', 'code-hint', o.error ? 'code-error' : '']
    .filter(Boolean)
    .join(' ');
  const remember = o.rememberOffered
    ? `<div class="check"><input type="checkbox" id="remember" name="remember" value="on" aria-describedby="remember-hint"><div><label for="remember">Remember this browser</label><span class="hint" id="remember-hint">For up to 30 days, and only on a device you alone use. A new browser or network asks for a code again.</span></div></div>\n`
    : '';
  const main = `<h1 id="code-heading">${escapeHtml(heading)}</h1>
${notice}<p>${escapeHtml(sentTo)}</p>
<form method="post" action="${escapeHtml(o.base)}/mfa/verify">
${csrfField(o.csrf)}
<label for="code">Code</label>
<p class="hint" id="code-hint">The code is on its own line in the email. Spaces are ignored.</p>
${error}<input id="code" name="code" type="text" autocomplete="one-time-code" inputmode="numeric" maxlength="17" spellcheck="false" autocapitalize="off" required autofocus${o.error ? ' aria-invalid="true"' : ''} aria-describedby="${described}">
${remember}<div class="actions"><button type="submit" id="verify">Continue</button></div>
</form>
<p class="why" id="why"><strong>Why am I asked?</strong> ${escapeHtml(o.why)}</p>
<div class="others">
<form method="post" action="${escapeHtml(o.base)}/mfa/resend">
${csrfField(o.csrf)}
<button type="submit" id="resend" class="secondary">Send the email again</button>
</form>
<div class="actions">${returnForm(o.base, o.csrf, 'Cancel sign-in')}</div>
</div>`;
  return page({
    status: o.status ?? 200,
    title: heading,
    main,
    formOrigins: o.formOrigins,
    headers: o.retryAfter ? { 'Retry-After': String(Math.ceil(o.retryAfter)) } : {},
  });
}

/**
 * A page that ends the sign-in or asks to retry: locked, refused, unavailable, expired.
 * @param {object} o
 * @param {'locked'|'denied'|'unavailable'|'expired'|'forbidden'} o.kind
 * @param {string} [o.base] the interaction's path (for the return button)
 * @param {string} [o.csrf] the interaction's CSRF token (for the return button)
 * @param {string} [o.message] the component's explanation, when it gave one
 * @param {string[]} [o.formOrigins] see `page`
 */
export function statusPage(o) {
  const texts = {
    locked: {
      status: 403,
      title: 'Sign-in locked',
      body: 'Too many wrong codes were entered, so signing in with an email code is locked for this account. Ask your administrator to unlock it.',
    },
    denied: {
      status: 403,
      title: 'Sign-in refused',
      body: 'This sign-in cannot continue.',
    },
    unavailable: {
      status: 503,
      title: 'Please try again',
      body: 'Something went wrong on our side and nothing was changed. Reload this page in a moment; if it keeps happening, start the sign-in again from the application.',
    },
    forbidden: {
      status: 403,
      title: 'This form came from elsewhere',
      body: 'This form was sent from another site, so nothing was done. Go back to the sign-in page and try again.',
    },
    expired: {
      status: 400,
      title: 'This sign-in has expired',
      body: 'This sign-in page is no longer valid (it expired, or it was opened in another browser). Start the sign-in again from the application.',
    },
  }[o.kind];
  const extra = o.message && (o.kind === 'denied' || o.kind === 'locked')
    ? `<p id="why">${escapeHtml(o.message)}</p>\n`
    : '';
  const back = o.base && o.csrf && o.kind !== 'unavailable'
    ? `<div class="actions">${returnForm(o.base, o.csrf)}</div>`
    : '';
  return page({
    status: texts.status,
    title: texts.title,
    main: `<h1 id="${o.kind}">${escapeHtml(texts.title)}</h1>
<p role="alert">${escapeHtml(texts.body)}</p>
${extra}${back}`,
    formOrigins: o.formOrigins,
    headers: o.kind === 'unavailable' ? { 'Retry-After': '5' } : {},
  });
}
