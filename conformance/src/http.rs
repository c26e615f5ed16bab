//! The kit behind `wasi:http/incoming-handler` (world `conformance-http`), for a host that can only
//! route HTTP to a component it composes with its own imports (Spin). Presentation only: each route
//! calls the same step the `conformance-kit` export does, with the arguments read from the query
//! string, and answers its findings as JSON. Every request is an instance of its own, as the WIT
//! asks of every step.
//!
//! | request | step |
//! |---|---|
//! | `POST /prepare?run=ID` | `prepare(ID)` |
//! | `POST /hammer?run=ID&instance=I&instances=N&rounds=R` | `hammer(ID, I, N, R)` |
//! | `POST /judge?run=ID&instances=N&rounds=R` | `judge(ID, N, R)` |
//! | `POST /expect-failures?run=ID` | `expect-failures(ID)` |
//!
//! A step that ran answers 200 with `{"findings": [{"check": …, "seen": …}, …]}` (empty when the
//! host conforms); a request the kit cannot map answers 400 (a missing or malformed argument), 404
//! (another path) or 405 (another method), with `{"error": …}`, so that a runner never takes a
//! request that ran nothing for a clean run. The run id is checked by the step itself (`run-id`).

use crate::bindings::Kit;
use crate::bindings::exports::wasi::http::incoming_handler;
use crate::bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::{Finding, expect_failures, hammer, judge, prepare};

impl incoming_handler::Guest for Kit {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let (status, body) = answer(&request);
        respond(response_out, status, body.as_bytes());
    }
}

/// The status and JSON body for `request`.
fn answer(request: &IncomingRequest) -> (u16, String) {
    let target = request.path_with_query().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let known = ["/prepare", "/hammer", "/judge", "/expect-failures"];
    if !known.contains(&path) {
        return problem(
            404,
            "no such step: POST /prepare, /hammer, /judge or /expect-failures",
        );
    }
    if !matches!(request.method(), Method::Post) {
        return problem(405, "every step is a POST");
    }
    match run_step(path, query) {
        Ok(found) => (200, findings_json(&found)),
        Err(missing) => problem(400, &missing),
    }
}

/// Runs the step `path` names with the query's arguments; `Err` names what is missing.
fn run_step(path: &str, query: &str) -> Result<Vec<Finding>, String> {
    let run = param(query, "run").ok_or("the query needs run=<run id>")?;
    Ok(match path {
        "/prepare" => prepare(run),
        "/hammer" => hammer(
            run,
            number(query, "instance")?,
            number(query, "instances")?,
            number(query, "rounds")?,
        ),
        "/judge" => judge(run, number(query, "instances")?, number(query, "rounds")?),
        _ => expect_failures(run),
    })
}

/// The value of `name` in the query string, as sent (a run id and numbers need no decoding; a
/// run id that holds an escape is refused by the step's own `run-id` check).
fn param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `u32` argument `name`.
fn number(query: &str, name: &str) -> Result<u32, String> {
    param(query, name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("the query needs {name}=<a number from 0 to {}>", u32::MAX))
}

/// An answer that ran no step.
fn problem(status: u16, why: &str) -> (u16, String) {
    (status, format!("{{\"error\":{}}}", json_string(why)))
}

/// `{"findings": [...]}`.
fn findings_json(found: &[Finding]) -> String {
    let items: Vec<String> = found
        .iter()
        .map(|f| {
            format!(
                "{{\"check\":{},\"seen\":{}}}",
                json_string(&f.check),
                json_string(&f.seen)
            )
        })
        .collect();
    format!("{{\"findings\":[{}]}}", items.join(","))
}

/// `s` as a JSON string (RFC 8259: quote, backslash and control characters escaped). Written here
/// rather than taken from serde_json: two record fields do not justify a dependency in the kit.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Sends `status` and the JSON `body`. A host that refuses the response has no one left to tell.
fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.append("content-type", b"application/json");
    let _ = headers.append("content-length", body.len().to_string().as_bytes());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        ResponseOutparam::set(out, Ok(response));
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}
