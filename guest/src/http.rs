//! The REST API, as the component's `wasi:http/incoming-handler` export. Presentation only: it parses
//! JSON, calls the same service path as the function exports, and maps the core's answers and errors
//! to HTTP. Every `/v1/` route is server-to-server (it carries the IdP's word about the user), so it
//! requires `Authorization: Bearer <api_key>`; without it the request gets 401 before its body is read.
//!
//! | status | when |
//! |---|---|
//! | 200 | success |
//! | 400 `invalid-input` | malformed JSON or field (`field` names it) |
//! | 401 `unauthorized` | missing or wrong API key |
//! | 403 `rejected` / `forbidden` | wrong, expired or used code, unknown challenge; not allowed |
//! | 404, 405, 413 | unknown route; wrong method (with `Allow`, from [`ROUTES`]); body over 64 KiB |
//! | 423 `locked` | too many wrong codes |
//! | 429 `throttled` | with `Retry-After` |
//! | 500 `misconfigured`, 501 `not-implemented`, 503 `unavailable` | host-side problems |

use mfa_step_core::email::branding::Branding;
use mfa_step_core::kernel::secret::api_key_matches;
use mfa_step_core::policy::OrgPolicy;
use mfa_step_core::roster::RosterUser;
use mfa_step_core::web::console::is_console_path;
use mfa_step_core::web::hosted::{WebMethod, WebRequest};
use mfa_step_core::web::prompt::PromptConfig;
use mfa_step_core::{Actor, CredentialChange, Error, LoginContext};
use serde::Deserialize;
use serde_json::json;

use crate::bindings::Component;
use crate::bindings::exports::wasi::http::incoming_handler;
use crate::bindings::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::service;

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// The OpenAPI document of this API, served at `GET /openapi.json`: the contract clients are generated
/// from. `tests/tests/e2e/openapi.rs` checks every route here against it.
const OPENAPI: &str = include_str!("../openapi.json");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextBody {
    context: LoginContext,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeEmailBody {
    context: LoginContext,
    /// The step-up token the sign-in's `verify` returned.
    step_up: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChallengeBody {
    context: LoginContext,
    challenge_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorBody {
    actor: Actor,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    actor: Actor,
    device_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialBody {
    actor: Actor,
    org_id: String,
    user_id: String,
    change: CredentialChange,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesBody {
    actor: Actor,
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgBody {
    actor: Actor,
    org_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RosterBody {
    actor: Actor,
    org_id: String,
    #[serde(default)]
    add: Vec<RosterUser>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    actor: Actor,
    org_id: String,
    policy: OrgPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    actor: Actor,
    org_id: String,
    user_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BrandingBody {
    actor: Actor,
    org_id: String,
    branding: Branding,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    actor: Actor,
    org_id: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    time_zone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    context: LoginContext,
    challenge_id: String,
    code: String,
    #[serde(default)]
    remember_device: bool,
}

/// An HTTP answer: status, JSON body, extra headers.
struct Reply {
    status: u16,
    body: serde_json::Value,
    headers: Vec<(&'static str, String)>,
    /// A page instead of JSON.
    html: Option<String>,
}

impl Reply {
    fn ok(body: serde_json::Value) -> Self {
        Self {
            status: 200,
            body,
            headers: Vec::new(),
            html: None,
        }
    }

    fn problem(status: u16, kind: &str, message: &str) -> Self {
        let body = json!({ "error": { "kind": kind, "message": message, "field": null, "retry_after_seconds": null } });
        Self {
            status,
            body,
            headers: Vec::new(),
            html: None,
        }
    }

    fn from_error(e: &Error) -> Self {
        let message = e.to_string();
        let (status, kind) = match e {
            Error::InvalidInput { .. } => (400, "invalid-input"),
            Error::Rejected => (403, "rejected"),
            Error::Forbidden(_) => (403, "forbidden"),
            Error::Locked => (423, "locked"),
            Error::Throttled { .. } => (429, "throttled"),
            Error::Misconfigured(_) => (500, "misconfigured"),
            Error::NotImplemented(_) => (501, "not-implemented"),
            Error::Store(_) | Error::Mail(_) | Error::Audit(_) => (503, "unavailable"),
        };
        let field = match e {
            Error::InvalidInput { field, .. } => Some(*field),
            _ => None,
        };
        let retry = match e {
            Error::Throttled { retry_after } => Some(*retry_after),
            _ => None,
        };
        let body = json!({ "error": { "kind": kind, "message": message, "field": field, "retry_after_seconds": retry } });
        let headers = retry
            .map(|r| vec![("retry-after", r.to_string())])
            .unwrap_or_default();
        Self {
            status,
            body,
            headers,
            html: None,
        }
    }

    /// The same answer with one more header.
    fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A page, or a plain page saying why it cannot be shown.
    fn page(r: mfa_step_core::Result<String>) -> Self {
        let (status, html) = match r {
            Ok(html) => (200, html),
            Err(e) => {
                let status = Self::from_error(&e).status;
                let message = e
                    .to_string()
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;");
                let html = format!(
                    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Page unavailable</title></head>\n<body><main><h1 id=\"unavailable\">This page cannot be shown</h1><p role=\"alert\">{message}</p></main></body></html>\n"
                );
                (status, html)
            }
        };
        Self {
            status,
            body: serde_json::Value::Null,
            headers: Vec::new(),
            html: Some(html),
        }
    }

    fn result<T: serde::Serialize>(r: mfa_step_core::Result<T>) -> Self {
        match r {
            Ok(v) => Self::ok(serde_json::to_value(v).unwrap_or_default()),
            Err(e) => Self::from_error(&e),
        }
    }
}

impl incoming_handler::Guest for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let reply = route(&request);
        respond(response_out, &reply);
    }
}

/// A method a route takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
}

impl Verb {
    fn of(method: &Method) -> Option<Self> {
        match method {
            Method::Get => Some(Self::Get),
            Method::Post => Some(Self::Post),
            _ => None,
        }
    }

    /// The method as HTTP spells it, for `Allow`.
    const fn name(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

/// What answers a route.
enum Serve {
    /// A `/v1/` call, once its API key is checked: the JSON body in, the answer out.
    Api(fn(&[u8]) -> Reply),
    /// A document or page of the component's own: the query string in, the answer out.
    Own(fn(&str) -> Reply),
    /// A hosted sign-in page: `core::web::hosted` answers it (the rows here are its routes, so that
    /// its 405 pages get the same `Allow` as every other 405).
    Hosted,
    /// An admin console page: `core::web::console` answers it (the rows here are its routes).
    Console,
}

/// One route: a method on a path, and what answers it.
struct Route {
    verb: Verb,
    path: &'static str,
    serve: Serve,
}

impl Route {
    const fn get(path: &'static str, serve: Serve) -> Self {
        Self {
            verb: Verb::Get,
            path,
            serve,
        }
    }

    const fn post(path: &'static str, serve: Serve) -> Self {
        Self {
            verb: Verb::Post,
            path,
            serve,
        }
    }
}

/// Every route the component serves: dispatch reads this table, and so does the `Allow` header of
/// every 405 (a path's methods are its rows). `tests/tests/e2e/openapi.rs` reads it from this
/// source and checks it against the OpenAPI document, and its hosted rows against the core's.
const ROUTES: &[Route] = &[
    Route::get(
        "/healthz",
        Serve::Own(|_| Reply::ok(json!({ "status": "ok" }))),
    ),
    Route::get("/openapi.json", Serve::Own(openapi)),
    Route::get("/admin/branding/preview", Serve::Own(preview_page)),
    Route::get("/prompt", Serve::Hosted),
    Route::get("/prompt/step", Serve::Hosted),
    Route::post("/prompt/verify", Serve::Hosted),
    Route::post("/prompt/resend", Serve::Hosted),
    Route::post("/prompt/cancel", Serve::Hosted),
    Route::get("/prompt/devices", Serve::Hosted),
    Route::post("/prompt/devices/revoke", Serve::Hosted),
    Route::post("/prompt/devices/revoke-all", Serve::Hosted),
    Route::post("/prompt/done", Serve::Hosted),
    Route::get("/admin/console", Serve::Console),
    Route::get("/admin/console/health", Serve::Console),
    Route::get("/admin/console/policy", Serve::Console),
    Route::post("/admin/console/policy", Serve::Console),
    Route::get("/admin/console/branding", Serve::Console),
    Route::post("/admin/console/branding", Serve::Console),
    Route::get("/admin/console/branding/email", Serve::Console),
    Route::get("/admin/console/users", Serve::Console),
    Route::get("/admin/console/user", Serve::Console),
    Route::post("/admin/console/user", Serve::Console),
    Route::get("/admin/console/audit", Serve::Console),
    Route::get("/admin/console/audit/export", Serve::Console),
    Route::post("/admin/console/sign-out", Serve::Console),
    Route::post(
        "/v1/login/begin",
        Serve::Api(|body| {
            with_body::<ContextBody>(body, |b| {
                Reply::result(service::with_engine(|e, now, rng| {
                    e.begin(&b.context, now, rng)
                }))
            })
        }),
    ),
    Route::post(
        "/v1/login/send-code",
        Serve::Api(|body| {
            with_body::<ChallengeBody>(body, |b| {
                Reply::result(service::with_engine(|e, now, rng| {
                    e.send_code(&b.context, &b.challenge_id, now, rng)
                }))
            })
        }),
    ),
    Route::post(
        "/v1/login/verify",
        Serve::Api(|body| {
            with_body::<VerifyBody>(body, |b| {
                Reply::result(service::with_engine(|e, now, rng| {
                    e.verify(
                        &b.context,
                        &b.challenge_id,
                        &b.code,
                        b.remember_device,
                        now,
                        rng,
                    )
                }))
            })
        }),
    ),
    Route::post(
        "/v1/login/enroll",
        Serve::Api(|body| {
            with_body::<ContextBody>(body, |b| {
                Reply::result(service::with_engine(|e, now, rng| {
                    e.enroll(&b.context, now, rng)
                }))
            })
        }),
    ),
    Route::post(
        "/v1/login/change-email",
        Serve::Api(|body| {
            with_body::<ChangeEmailBody>(body, |b| {
                Reply::result(service::with_engine(|e, now, rng| {
                    e.change_email(&b.context, &b.step_up, now, rng)
                }))
            })
        }),
    ),
    Route::post(
        "/v1/login/status",
        Serve::Api(|body| {
            with_body::<ContextBody>(body, |b| {
                Reply::result(service::with_engine(|e, now, _| e.status(&b.context, now)))
            })
        }),
    ),
    Route::post(
        "/v1/devices/list",
        Serve::Api(|body| {
            with_body::<ActorBody>(body, |b| {
                Reply::result(
                    service::with_engine(|e, now, _| e.list_devices(&b.actor, now))
                        .map(|devices| json!({ "devices": devices })),
                )
            })
        }),
    ),
    Route::post(
        "/v1/devices/revoke",
        Serve::Api(|body| {
            with_body::<DeviceBody>(body, |b| {
                Reply::result(
                    service::with_engine(|e, now, rng| {
                        e.revoke_device(&b.actor, &b.device_id, now, rng)
                    })
                    .map(|()| json!({ "revoked": 1 })),
                )
            })
        }),
    ),
    Route::post(
        "/v1/devices/revoke-all",
        Serve::Api(|body| {
            with_body::<ActorBody>(body, |b| {
                Reply::result(
                    service::with_engine(|e, now, rng| e.revoke_all_devices(&b.actor, now, rng))
                        .map(|n| json!({ "revoked": n })),
                )
            })
        }),
    ),
    Route::post(
        "/v1/admin/credential-changed",
        Serve::Api(|body| {
            with_body::<CredentialBody>(body, |b| {
                Reply::result(
                    service::with_engine(|e, now, rng| {
                        e.credential_changed(&b.actor, &b.org_id, &b.user_id, b.change, now, rng)
                    })
                    .map(|n| json!({ "revoked": n })),
                )
            })
        }),
    ),
    Route::post(
        "/v1/admin/policy/get",
        Serve::Api(|body| {
            with_body::<OrgBody>(body, |b| {
                Reply::result(service::with_engine(|e, now, rng| {
                    e.get_policy(&b.actor, &b.org_id, now, rng)
                }))
            })
        }),
    ),
    Route::post(
        "/v1/admin/policy/set",
        Serve::Api(|body| {
            with_body::<PolicyBody>(body, |b| {
                Reply::result(
                    service::with_engine(|e, now, rng| {
                        e.set_policy(&b.actor, &b.org_id, &b.policy, now, rng)
                    })
                    .map(|()| json!({ "updated": true })),
                )
            })
        }),
    ),
    Route::post(
        "/v1/admin/platform-roles/get",
        Serve::Api(|body| {
            with_body::<ActorBody>(body, |b| {
                Reply::result(
                    service::with_engine(|e, now, rng| e.get_platform_roles(&b.actor, now, rng))
                        .map(|roles| json!({ "roles": roles })),
                )
            })
        }),
    ),
    Route::post(
        "/v1/admin/platform-roles/set",
        Serve::Api(|body| {
            with_body::<RolesBody>(body, |b| {
                Reply::result(
                    service::with_engine(|e, now, rng| {
                        e.set_platform_roles(&b.actor, &b.roles, now, rng)
                    })
                    .map(|()| json!({ "updated": true })),
                )
            })
        }),
    ),
    Route::post(
        "/v1/admin/reset-user",
        Serve::Api(|body| {
            with_body::<UserBody>(body, |b| {
                Reply::result(
                    service::with_engine(|e, now, rng| {
                        e.reset_user(&b.actor, &b.org_id, &b.user_id, now, rng)
                    })
                    .map(|()| json!({ "reset": true })),
                )
            })
        }),
    ),
    Route::post(
        "/v1/admin/user-status",
        Serve::Api(|body| {
            with_body::<UserBody>(body, |b| {
                Reply::result(service::with_engine(|e, now, rng| {
                    e.user_status_for(&b.actor, &b.org_id, &b.user_id, now, rng)
                }))
            })
        }),
    ),
    Route::post(
        "/v1/admin/branding/get",
        Serve::Api(|body| {
            with_body::<OrgBody>(body, |b| {
                Reply::result(service::with_engine(|e, now, rng| {
                    e.get_branding(&b.actor, &b.org_id, now, rng)
                }))
            })
        }),
    ),
    Route::post(
        "/v1/admin/branding/set",
        Serve::Api(|body| {
            with_body::<BrandingBody>(body, |b| {
                Reply::result(
                    service::with_engine(|e, now, rng| {
                        e.set_branding(&b.actor, &b.org_id, &b.branding, now, rng)
                    })
                    .map(|()| json!({ "updated": true })),
                )
            })
        }),
    ),
    Route::post(
        "/v1/admin/branding/preview-link",
        Serve::Api(|body| {
            with_body::<OrgBody>(body, |b| {
                Reply::result(service::with_engine(|e, now, rng| {
                    e.preview_link(&b.actor, &b.org_id, now, rng)
                }))
            })
        }),
    ),
    Route::post(
        "/v1/admin/console-link",
        Serve::Api(|body| {
            with_body::<OrgBody>(body, |b| {
                Reply::result(service::with_engine(|e, now, rng| {
                    e.console_link(&b.actor, &b.org_id, now, rng)
                }))
            })
        }),
    ),
    Route::post(
        "/v1/admin/sync-roster",
        Serve::Api(|body| {
            with_body::<RosterBody>(body, |b| {
                Reply::result(service::with_engine(|e, now, rng| {
                    e.sync_roster(&b.actor, &b.org_id, &b.add, &b.remove, now, rng)
                }))
            })
        }),
    ),
    Route::post(
        "/v1/admin/branding/preview",
        Serve::Api(|body| {
            with_body::<PreviewBody>(body, |b| {
                Reply::result(
                    service::with_engine(|e, now, rng| {
                        e.preview_email(
                            &b.actor,
                            &b.org_id,
                            b.language.as_deref(),
                            b.time_zone.as_deref(),
                            now,
                            rng,
                        )
                    })
                    .map(|m| json!({ "subject": m.subject, "html": m.html, "text": m.text })),
                )
            })
        }),
    ),
];

/// Answers one request from [`ROUTES`]; every 405, whoever gave it, carries the path's `Allow`.
fn route(request: &IncomingRequest) -> Reply {
    let path_and_query = request.path_with_query().unwrap_or_default();
    let path = path_and_query.split('?').next().unwrap_or_default();
    let method = request.method();
    let reply = dispatch(request, path, &path_and_query, &method);
    if reply.status == 405 {
        // Whoever refused the method (this table, or the hosted pages' own routing), the path's
        // methods are its rows in the table.
        reply.with_header("allow", allowed(path))
    } else {
        reply
    }
}

/// The methods `path` takes, as `Allow` lists them: its rows in [`ROUTES`].
fn allowed(path: &str) -> String {
    ROUTES
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.verb.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The API key first on `/v1/`; then the path's row for this method, the hosted pages' own
/// routing, 405 for a path in the table that does not take the method, or 404.
fn dispatch(request: &IncomingRequest, path: &str, path_and_query: &str, method: &Method) -> Reply {
    if path.starts_with("/v1/")
        && let Some(denied) = authorize(request)
    {
        return denied;
    }
    let verb = Verb::of(method);
    let found = ROUTES
        .iter()
        .find(|r| r.path == path && Some(r.verb) == verb);
    match found.map(|r| &r.serve) {
        Some(Serve::Api(answer)) => match read_body(request) {
            Ok(body) => answer(&body),
            Err(reply) => reply,
        },
        Some(Serve::Own(answer)) => answer(path_and_query.split_once('?').map_or("", |(_, q)| q)),
        // The hosted pages route among themselves: an unknown page and a method a page does not
        // take get the core's own pages.
        Some(Serve::Hosted) => hosted(request, path, path_and_query, method),
        None if is_hosted_page(path) => hosted(request, path, path_and_query, method),
        Some(Serve::Console) => console(request, path, path_and_query, method),
        None if is_console_path(path) => console(request, path, path_and_query, method),
        None if ROUTES.iter().any(|r| r.path == path) => Reply::problem(
            405,
            "method-not-allowed",
            "this path does not take this method; the Allow header lists those it takes",
        ),
        None if path.starts_with("/v1/") => Reply::problem(404, "not-found", "no such route"),
        None => Reply::problem(404, "not-found", "no such route; the API lives under /v1/"),
    }
}

/// `GET /openapi.json`: the document clients are generated from.
fn openapi(_query: &str) -> Reply {
    serde_json::from_str(OPENAPI).map_or_else(
        |_| Reply::problem(500, "misconfigured", "the OpenAPI document does not parse"),
        Reply::ok,
    )
}

/// `GET /admin/branding/preview?token=…&lang=…&tz=…`: the page a preview link opens.
fn preview_page(query: &str) -> Reply {
    let param = |name: &str| query_param(query, name);
    let token = param("token").unwrap_or_default();
    let (lang, tz) = (param("lang"), param("tz"));
    Reply::page(service::with_engine(|e, now, rng| {
        e.preview_page(&token, lang.as_deref(), tz.as_deref(), now, rng)
    }))
}

/// The hosted pages live under `/prompt`; `core::web::hosted` routes among them.
fn is_hosted_page(path: &str) -> bool {
    path == "/prompt" || path.starts_with("/prompt/")
}

/// A hosted page (`/prompt…`): the request as the core's [`WebRequest`], its answer as a reply.
fn hosted(request: &IncomingRequest, path: &str, path_and_query: &str, method: &Method) -> Reply {
    browser_page(request, path, path_and_query, method, |web| {
        PromptConfig::from_lookup(service::setting).and_then(|config| {
            service::with_engine(|e, now, rng| Ok(e.hosted_page(config.as_ref(), web, now, rng)))
        })
    })
}

/// An admin console page (`/admin/console…`): the request as the core's [`WebRequest`], its
/// answer as a reply.
fn console(request: &IncomingRequest, path: &str, path_and_query: &str, method: &Method) -> Reply {
    browser_page(request, path, path_and_query, method, |web| {
        service::with_engine(|e, now, rng| Ok(e.console_page(web, now, rng)))
    })
}

/// A page a browser asks for: its request as the core's [`WebRequest`] (cookies, form, client
/// address, languages), handed to `answer`, and the core's page back as a reply.
fn browser_page(
    request: &IncomingRequest,
    path: &str,
    path_and_query: &str,
    method: &Method,
    answer: impl FnOnce(
        &WebRequest<'_>,
    ) -> mfa_step_core::Result<mfa_step_core::web::hosted::WebResponse>,
) -> Reply {
    let headers = request.headers();
    let header = |name: &str| -> String {
        headers
            .get(name)
            .iter()
            .filter_map(|v| std::str::from_utf8(v).ok())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let web_method = match method {
        // Not HEAD: opening a request spends it, and a probe must not.
        Method::Get => WebMethod::Get,
        Method::Post => WebMethod::Post,
        _ => WebMethod::Other,
    };
    let form = if web_method == WebMethod::Post {
        match read_body(request) {
            Ok(body) => body,
            // A page, not the API's JSON: a person is reading it.
            Err(reply) => {
                return Reply::page(Err(Error::InvalidInput {
                    field: "body",
                    reason: format!("the form could not be read (HTTP {})", reply.status),
                }));
            }
        }
    } else {
        Vec::new()
    };
    // The host names the header that carries the client's address (serve: `x-mfa-client-ip`,
    // which it overwrites; Spin: `spin-client-addr`, `ip:port`). Anything unparsable is no address.
    let ip_header = service::setting("client_ip_header")
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "x-mfa-client-ip".to_owned());
    let raw_ip = header(ip_header.trim());
    let client_ip = raw_ip
        .parse::<std::net::IpAddr>()
        .or_else(|_| raw_ip.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let (cookies, user_agent, accept_language) = (
        header("cookie"),
        header("user-agent"),
        header("accept-language"),
    );
    let web = WebRequest {
        method: web_method,
        path,
        query: path_and_query.split_once('?').map_or("", |(_, q)| q),
        form: &form,
        cookies: &cookies,
        user_agent: &user_agent,
        client_ip: &client_ip,
        accept_language: &accept_language,
    };
    match answer(&web) {
        Ok(page) => Reply {
            status: page.status,
            body: serde_json::Value::Null,
            headers: page.headers,
            html: Some(page.html.unwrap_or_default()),
        },
        // The host's configuration is its operator's business, not the visitor's: the page says
        // only that the service is not set up.
        Err(Error::Misconfigured(_)) => Reply::page(Err(Error::Misconfigured(
            "the hosted sign-in is not set up correctly on this service; tell its operator".into(),
        ))),
        Err(e) => Reply::page(Err(e)),
    }
}

/// A body that did not parse. Its message says where, never what: a value may be a code.
struct BadBody(String);

impl BadBody {
    fn into_reply(self) -> Reply {
        Reply::from_error(&Error::InvalidInput {
            field: "body",
            reason: self.0,
        })
    }
}

/// Parses the body as `T` and runs `f`, or answers 400.
fn with_body<T: for<'de> Deserialize<'de>>(body: &[u8], f: impl FnOnce(T) -> Reply) -> Reply {
    match parse::<T>(body) {
        Ok(parsed) => f(parsed),
        Err(bad) => bad.into_reply(),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, BadBody> {
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "is not valid JSON"
            }
            _ => "has a missing, unknown or mistyped field for this route",
        };
        BadBody(format!(
            "the request body {what} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

fn authorize(request: &IncomingRequest) -> Option<Reply> {
    let Some(configured) = service::setting("api_key").filter(|k| !k.is_empty()) else {
        return Some(Reply::from_error(&Error::Misconfigured(
            "api_key is not set: the REST API is closed until the host provides one".to_owned(),
        )));
    };
    let values = request.headers().get("authorization");
    let presented = match values.as_slice() {
        [one] => std::str::from_utf8(one)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or(""),
        _ => "",
    };
    if api_key_matches(presented, &configured) {
        None
    } else {
        let mut reply = Reply::problem(
            401,
            "unauthorized",
            "present the API key as `Authorization: Bearer <api_key>`",
        );
        reply
            .headers
            .push(("www-authenticate", "Bearer".to_owned()));
        Some(reply)
    }
}

fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, Reply> {
    let unreadable = || Reply::problem(400, "invalid-input", "the request body could not be read");
    let body = request.consume().map_err(|()| unreadable())?;
    let stream = body.stream().map_err(|()| unreadable())?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(16 * 1024) {
            Ok(chunk) => {
                if bytes.len() + chunk.len() > MAX_BODY {
                    return Err(Reply::problem(
                        413,
                        "too-large",
                        "the request body is over 64 KiB",
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => return Err(unreadable()),
        }
    }
    drop(stream);
    drop(IncomingBody::finish(body));
    Ok(bytes)
}

/// One query parameter, percent-decoded (`+` is a space), by the `url` crate's form decoder.
fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The headers of every page: no script may run, nothing may frame it, nothing is cached, and the
/// link's token does not leak through `Referer`.
const PAGE_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src https:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
];

fn respond(out: ResponseOutparam, reply: &Reply) {
    let (bytes, content_type) = match &reply.html {
        Some(html) => (html.as_bytes().to_vec(), "text/html; charset=utf-8"),
        None => (
            serde_json::to_vec(&reply.body).unwrap_or_default(),
            "application/json",
        ),
    };
    let headers = Fields::new();
    // A download (the console's audit export) names its own type.
    let own_type = reply.headers.iter().any(|(k, _)| *k == "content-type");
    let mut all: Vec<(&str, String)> = vec![
        ("content-type", content_type.to_owned()),
        ("cache-control", "no-store".to_owned()),
        ("x-content-type-options", "nosniff".to_owned()),
        ("content-length", bytes.len().to_string()),
    ];
    all.retain(|(k, _)| !(own_type && *k == "content-type"));
    if reply.html.is_some() {
        // A page that brings its own policy (the hosted pages: a style nonce, the IdP's origins
        // in form-action) keeps it; every other page gets the strict default.
        let own_policy = reply
            .headers
            .iter()
            .find(|(k, _)| *k == "content-security-policy")
            .map(|(_, v)| v.as_str());
        // A page its own origin may frame (the console's email preview) says so to browsers that
        // read only `X-Frame-Options` too.
        let same_origin = own_policy.is_some_and(|p| p.contains("frame-ancestors 'self'"));
        all.extend(
            PAGE_HEADERS
                .iter()
                .filter(|(k, _)| !(own_policy.is_some() && *k == "content-security-policy"))
                .map(|(k, v)| match *k {
                    "x-frame-options" if same_origin => (*k, "SAMEORIGIN".to_owned()),
                    _ => (*k, (*v).to_owned()),
                }),
        );
    }
    all.extend(reply.headers.iter().map(|(k, v)| (*k, v.clone())));
    // A value the host refuses (it never should: the core writes ASCII) must not become a 303
    // without its Location: the answer is a bare 500 instead.
    let refused = all
        .iter()
        .any(|(name, value)| headers.append(name, value.as_bytes()).is_err());
    let response = if refused {
        let plain = Fields::new();
        let _ = plain.append("cache-control", b"no-store");
        let response = OutgoingResponse::new(plain);
        let _ = response.set_status_code(500);
        response
    } else {
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(reply.status);
        response
    };
    let bytes = if refused { Vec::new() } else { bytes };
    let Ok(body) = response.body() else {
        ResponseOutparam::set(out, Ok(response));
        return;
    };
    let Ok(stream) = body.write() else {
        ResponseOutparam::set(out, Ok(response));
        let _ = OutgoingBody::finish(body, None);
        return;
    };
    // The body goes to the host before the response does, as far as the host takes it without
    // waiting (wasmtime's hosts take two writes of up to 1 MiB: every answer here): the host then
    // has the headers and the body together and sends them in one TCP segment. Written after,
    // they went out as two, and on a kept-alive connection a server that leaves Nagle's algorithm
    // on (Spin 4) held the second until the client's delayed ACK of the first, 40 ms later: the
    // p99 of every Spin benchmark until then (`BENCHMARKS.md`, "Spin").
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let Ok(permit) = stream.check_write() else {
            break;
        };
        let Ok(permit) = usize::try_from(permit) else {
            break;
        };
        if permit == 0 {
            break;
        }
        let (now, later) = rest.split_at(permit.min(rest.len()));
        if stream.write(now).is_err() {
            break;
        }
        rest = later;
    }
    ResponseOutparam::set(out, Ok(response));
    // What the host did not take ahead waits for it to read the body, which it does once it has
    // the response.
    for chunk in rest.chunks(4096) {
        if stream.blocking_write_and_flush(chunk).is_err() {
            break;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}
