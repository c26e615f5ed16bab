//! The web layer: what a browser sees. The hosted prompt's protocol with the identity provider
//! ([`prompt`]), the hosted pages a clinician walks between the IdP's password page and its return
//! ([`hosted`]), the page where an organization's admin previews its email ([`preview`]), and the
//! organization admin's console ([`console`]). Their
//! templates are `core/templates/web/` (askama compiles them in and type-checks them against the
//! views here).
//!
//! Every decision a page shows is made below, by the engine's concerns; this layer turns browser
//! requests into engine calls and answers into pages, and defends what only the web has: signed
//! links and tokens, session cookies, CSRF tokens, a script-free content security policy. Nothing
//! below names it.

pub mod console;
pub mod hosted;
pub mod preview;
pub mod prompt;
