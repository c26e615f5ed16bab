// @ts-check
/**
 * @module @mfa-step/oidc-provider
 * The Node host of mfa-step: the component (`createMfaStep`), its stores, audit sinks and
 * mailers. See README.md, "The engine", for the backend contracts.
 */

export { createMfaStep, loadComponent } from './engine.js';
export { MfaError, StoreError, MailError } from './errors.js';
export { memoryStore } from './stores/memory.js';
export { redisStore } from './stores/redis.js';
export { memoryAudit } from './audit/memory.js';
export { redisAudit } from './audit/redis.js';
export { captureMailer } from './mailers/capture.js';
export { smtpMailer } from './mailers/smtp.js';
export { oidcMfa, ACR_MFA, ACR_PASSWORD, DEVICE_COOKIE, MFA_PROMPT } from './oidc.js';
