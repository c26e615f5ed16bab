//! The OpenAPI document (`guest/openapi.json`, served at `GET /openapi.json`) is the contract clients
//! are generated from, so it must say what the component does:
//!
//! - the routes: every row of the route table (`ROUTES` in `guest/src/http.rs`, read from its
//!   source) is in the document with its method, the document lists no other, and the table's
//!   hosted rows are the core's hosted routes;
//! - the methods: every path answers every method it does not take with 405 and an `Allow` header
//!   listing exactly the methods the document gives it (`MethodNotAllowed`, `PageMethodNotAllowed`);
//! - the statuses: each operation lists exactly the statuses its route can answer: those http.rs
//!   writes around the handler, those `from_error` gives the errors the core function's `# Errors`
//!   names (hosted pages: at least those around the core's pages);
//! - the request bodies: each route's body schema is the struct the source parses it into, with the
//!   same fields, the same required ones (serde's: not an `Option`, no `#[serde(default)]`, plus
//!   the few the core's checks require) and `additionalProperties: false` exactly where the struct
//!   denies unknown fields; the component agrees field by field (a body missing a required field is
//!   400, one missing an optional one is not, an unknown field anywhere is 400);
//! - the values: the document's limits are the core's constants and default settings, and the
//!   component takes a value at each limit and refuses one past it, naming the field;
//! - the answers: every answer a test provokes has a status the operation lists, the documented
//!   content type and headers, and a JSON body that validates against the documented schema, with no
//!   field the schema does not declare.
//!
//! The JSON Schema checker below covers the subset the document uses and refuses any keyword it
//! does not know, so the document cannot drift into something the test silently skips. `pattern`
//! is the one assertion it does not evaluate: `tests/schemathesis/run.sh` checks the patterns
//! against the running service, from both sides (what they allow is taken, what they refuse is
//! refused).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use crate::common;
use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

fn read(relative: &str) -> String {
    let path = format!("{}/../{relative}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The document as checked in.
fn document() -> Value {
    serde_json::from_str(&read("guest/openapi.json")).expect("guest/openapi.json is JSON")
}

// ---------------------------------------------------------------------------------------------
// The implementation, read from its source.

/// A row of the route table (`const ROUTES` in `guest/src/http.rs`): method (lower case, as
/// OpenAPI spells it), path, what serves it (`Api`, `Own` or `Hosted`), for `/v1/` rows the body
/// struct its handler parses (`with_body::<T>`), and the engine function the handler calls, if any.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    method: String,
    path: String,
    serve: String,
    body: Option<String>,
    engine_fn: Option<String>,
}

/// The text of `const ROUTES` in `guest/src/http.rs`.
fn route_table(src: &str) -> &str {
    const HEAD: &str = "\nconst ROUTES: &[Route] = &[";
    let start = src
        .find(HEAD)
        .expect("guest/src/http.rs has `const ROUTES: &[Route] = &[`");
    let rest = &src[start + 1..];
    let end = rest.find("\n];\n").expect("the table ends with `];`") + 3;
    &rest[..end]
}

/// The text of `fn name` in `src`, at any indentation, up to its closing brace.
fn fn_body<'s>(src: &'s str, name: &str) -> &'s str {
    let head = format!("fn {name}");
    let at = src
        .match_indices(&head)
        .map(|(i, _)| i)
        .find(|&i| {
            let starts_word =
                i == 0 || !src[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
            starts_word && src[i + head.len()..].starts_with(['(', '<'])
        })
        .unwrap_or_else(|| panic!("fn {name} not found"));
    let line_start = src[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent: String = src[line_start..]
        .chars()
        .take_while(|c| *c == ' ')
        .collect();
    let rest = &src[line_start..];
    let end = rest
        .find(&format!("\n{indent}}}\n"))
        .unwrap_or_else(|| panic!("fn {name} ends"));
    &rest[..end + indent.len() + 2]
}

/// The first engine call (`e.name(`) in `code`.
fn engine_call(code: &str) -> Option<String> {
    code.match_indices("e.").find_map(|(i, _)| {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            return None;
        }
        let rest = &code[i + 2..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        (!name.is_empty() && rest[name.len()..].starts_with('(')).then_some(name)
    })
}

/// Every row of the route table: `Route::get("/…", Serve::X(…))` or `Route::post(…)`.
fn implemented_routes(src: &str) -> BTreeSet<Route> {
    route_rows(src)
        .into_iter()
        .map(|(route, _)| route)
        .collect()
}

/// Every row of the route table, with its handler's code (the closure in the row, or the named
/// function it points at).
fn route_rows(src: &str) -> Vec<(Route, &str)> {
    let table = route_table(src);
    let starts: Vec<usize> = table.match_indices("Route::").map(|(i, _)| i).collect();
    let mut routes = Vec::new();
    for (n, &at) in starts.iter().enumerate() {
        let row = &table[at..starts.get(n + 1).copied().unwrap_or(table.len())];
        let rest = &row["Route::".len()..];
        let method: String = rest
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        assert!(
            method == "get" || method == "post",
            "a row is Route::get or Route::post: {row}"
        );
        let quoted = rest[method.len()..]
            .trim_start()
            .strip_prefix('(')
            .expect("(")
            .trim_start()
            .strip_prefix('"')
            .expect("a quoted path");
        let path = &quoted[..quoted.find('"').unwrap()];
        let after = quoted[path.len() + 1..]
            .trim_start()
            .strip_prefix(',')
            .expect(", Serve::…")
            .trim_start();
        let serve: String = after
            .strip_prefix("Serve::")
            .expect("Serve::")
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        const PARSE: &str = "with_body::<";
        let body = row.find(PARSE).map(|i| {
            let ty = &row[i + PARSE.len()..];
            ty[..ty.find('>').unwrap()].to_owned()
        });
        let code = match serve.as_str() {
            "Api" | "Hosted" | "Console" => row,
            "Own" => {
                // A named handler (`Serve::Own(preview_page)`) or a closure in the row.
                let arg = &after["Serve::Own(".len()..];
                let name: String = arg
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name.is_empty() {
                    row
                } else {
                    fn_body(src, &name)
                }
            }
            other => panic!("{path}: unknown Serve::{other}"),
        };
        let route = Route {
            method,
            path: path.to_owned(),
            serve,
            body,
            engine_fn: engine_call(code),
        };
        routes.push((route, code));
    }
    routes
}

/// The hosted pages, which `core/src/web/hosted/mod.rs` routes: its `(WebMethod::X, "/prompt…")` arms.
fn hosted_routes(src: &str) -> BTreeSet<(String, String)> {
    page_routes(src, "/prompt")
}

/// The `(WebMethod::X, "<prefix>…")` pairs of a core page module's routing.
fn page_routes(src: &str, prefix: &str) -> BTreeSet<(String, String)> {
    const ARM: &str = "(WebMethod::";
    let mut routes = BTreeSet::new();
    for (i, _) in src.match_indices(ARM) {
        let rest = &src[i + ARM.len()..];
        let method: String = rest
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let after = rest[method.len()..].trim_start();
        let Some(quoted) = after.strip_prefix(", \"") else {
            continue;
        };
        let path = &quoted[..quoted.find('"').unwrap()];
        if path.starts_with(prefix) {
            routes.insert((method.to_ascii_lowercase(), path.to_owned()));
        }
    }
    routes
}

/// A struct's fields as serde reads them: `(name, required)`, and whether it denies unknown fields.
/// Handles the plain forms the source uses; anything fancier (renames, flattening) fails loudly.
fn serde_struct(src: &str, name: &str) -> (Vec<(String, bool)>, bool) {
    let head = format!("struct {name} {{");
    let at = src
        .find(&head)
        .unwrap_or_else(|| panic!("struct {name} not found"));
    let line_start = src[..at].rfind('\n').unwrap_or(0);
    let attrs: Vec<&str> = src[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .take_while(|l| l.starts_with("#[") || l.starts_with("///"))
        .filter(|l| l.starts_with("#[serde("))
        .collect();
    let container = attrs.concat();
    assert!(
        !container.contains("rename") && !container.contains("tag"),
        "{name}: serde container attributes this test does not model: {container}"
    );
    let all_default = container.contains("default");
    let deny = container.contains("deny_unknown_fields");
    let body = &src[at + head.len()..];
    let body = &body[..body.find("\n}").unwrap()];
    let mut fields = Vec::new();
    let mut field_default = false;
    for line in body.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("///") || line.starts_with("//") {
            continue;
        }
        if let Some(attr) = line.strip_prefix("#[serde(") {
            assert_eq!(
                attr, "default)]",
                "{name}: unsupported field attribute {line}"
            );
            field_default = true;
            continue;
        }
        let line = line.strip_prefix("pub ").unwrap_or(line);
        let (field, ty) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{name}: cannot read field line {line:?}"));
        let required = !all_default && !field_default && !ty.trim().starts_with("Option<");
        fields.push((field.trim().to_owned(), required));
        field_default = false;
    }
    (fields, deny)
}

/// A unit enum's variants as serde writes them with `rename_all = "kebab-case"`.
fn kebab_enum(src: &str, name: &str) -> Vec<String> {
    let head = format!("pub enum {name} {{");
    let at = src
        .find(&head)
        .unwrap_or_else(|| panic!("enum {name} not found"));
    let line_start = src[..at].rfind('\n').unwrap_or(0);
    let above: Vec<&str> = src[..line_start].lines().rev().take(3).collect();
    assert!(
        above
            .iter()
            .any(|l| l.contains("rename_all = \"kebab-case\"")),
        "{name} is kebab-case"
    );
    let body = &src[at + head.len()..];
    let body = &body[..body.find("\n}").unwrap()];
    body.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(|l| {
            let ident = l.trim_end_matches(',');
            let mut out = String::new();
            for (i, c) in ident.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('-');
                }
                out.push(c.to_ascii_lowercase());
            }
            out
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A JSON Schema checker for the subset the document uses.

/// Keywords that only describe; everything else must be understood below.
const ANNOTATIONS: [&str; 6] = [
    "description",
    "format",
    "pattern",
    "discriminator",
    "default",
    "title",
];

struct Checker<'d> {
    doc: &'d Value,
}

impl<'d> Checker<'d> {
    /// What a local `$ref` (`#/components/…`) points at.
    fn resolve(&self, reference: &Value) -> &'d Value {
        let r = reference.as_str().expect("$ref is a string");
        let pointer = r.strip_prefix('#').expect("only local references");
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{r} does not resolve"))
    }

    /// Errors of `value` against `schema`, empty when it validates. With `strict`, an object may hold
    /// only properties some schema on its path declares (for answers: nothing undocumented).
    fn errors(&self, schema: &Value, value: &Value, strict: bool) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, value, "$", strict, false, &mut errors);
        errors
    }

    /// The properties `schema` declares, through `$ref` and `allOf`.
    fn declared(&self, schema: &Value, out: &mut BTreeSet<String>) {
        if let Some(r) = schema.get("$ref") {
            self.declared(self.resolve(r), out);
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            out.extend(props.keys().cloned());
        }
        for sub in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.declared(sub, out);
        }
    }

    fn check(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        strict: bool,
        keys_checked: bool,
        errors: &mut Vec<String>,
    ) {
        let schema_obj = schema
            .as_object()
            .unwrap_or_else(|| panic!("{at}: a schema is an object, got {schema}"));
        let mut keys_checked = keys_checked;
        if strict
            && !keys_checked
            && (schema_obj.contains_key("properties") || schema_obj.contains_key("allOf"))
            && let Some(map) = value.as_object()
        {
            let mut declared = BTreeSet::new();
            self.declared(schema, &mut declared);
            for key in map.keys().filter(|k| !declared.contains(*k)) {
                errors.push(format!("{at}.{key}: not in the document"));
            }
            keys_checked = true;
        }
        for (keyword, arg) in schema_obj {
            match keyword.as_str() {
                "$ref" => self.check(self.resolve(arg), value, at, strict, keys_checked, errors),
                "type" => {
                    let types: Vec<&str> = match arg {
                        Value::String(t) => vec![t.as_str()],
                        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                        _ => panic!("{at}: bad type {arg}"),
                    };
                    if !types.iter().any(|t| has_type(value, t)) {
                        errors.push(format!("{at}: {value} is not {types:?}"));
                    }
                }
                "enum" => {
                    if !arg.as_array().unwrap().contains(value) {
                        errors.push(format!("{at}: {value} is not one of {arg}"));
                    }
                }
                "const" => {
                    if arg != value {
                        errors.push(format!("{at}: {value} is not {arg}"));
                    }
                }
                "required" => {
                    if let Some(map) = value.as_object() {
                        for key in arg.as_array().unwrap().iter().filter_map(Value::as_str) {
                            if !map.contains_key(key) {
                                errors.push(format!("{at}: missing required {key}"));
                            }
                        }
                    }
                }
                "properties" => {
                    if let Some(map) = value.as_object() {
                        for (key, sub) in arg.as_object().unwrap() {
                            if let Some(v) = map.get(key) {
                                self.check(sub, v, &format!("{at}.{key}"), strict, false, errors);
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    let Some(map) = value.as_object() else {
                        continue;
                    };
                    let own = schema.get("properties").and_then(Value::as_object);
                    for (key, v) in map {
                        if own.is_some_and(|p| p.contains_key(key)) {
                            continue;
                        }
                        match arg {
                            Value::Bool(false) => {
                                errors.push(format!("{at}.{key}: additional property"));
                            }
                            Value::Bool(true) => {}
                            sub => {
                                self.check(sub, v, &format!("{at}.{key}"), strict, false, errors)
                            }
                        }
                    }
                }
                "items" => {
                    if let Some(items) = value.as_array() {
                        for (i, v) in items.iter().enumerate() {
                            self.check(arg, v, &format!("{at}[{i}]"), strict, false, errors);
                        }
                    }
                }
                "minItems" | "maxItems" => {
                    if let Some(items) = value.as_array() {
                        let n = arg.as_u64().unwrap();
                        let len = items.len() as u64;
                        if (keyword == "minItems" && len < n) || (keyword == "maxItems" && len > n)
                        {
                            errors.push(format!("{at}: {len} items breaks {keyword} {n}"));
                        }
                    }
                }
                "minLength" | "maxLength" => {
                    if let Some(s) = value.as_str() {
                        let n = arg.as_u64().unwrap();
                        let len = s.chars().count() as u64;
                        if (keyword == "minLength" && len < n)
                            || (keyword == "maxLength" && len > n)
                        {
                            errors.push(format!("{at}: length {len} breaks {keyword} {n}"));
                        }
                    }
                }
                "minimum" | "maximum" => {
                    if let Some(x) = value.as_f64() {
                        let bound = arg.as_f64().unwrap();
                        if (keyword == "minimum" && x < bound)
                            || (keyword == "maximum" && x > bound)
                        {
                            errors.push(format!("{at}: {x} breaks {keyword} {bound}"));
                        }
                    }
                }
                "allOf" => {
                    for sub in arg.as_array().unwrap() {
                        self.check(sub, value, at, strict, keys_checked, errors);
                    }
                }
                "anyOf" | "oneOf" => {
                    // Each branch is a whole alternative: it answers for its own properties.
                    let matching = arg
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|sub| self.errors_at(sub, value, at, strict).is_empty())
                        .count();
                    let ok = if keyword == "oneOf" {
                        matching == 1
                    } else {
                        matching >= 1
                    };
                    if !ok {
                        errors.push(format!(
                            "{at}: {matching} branches of {keyword} match {value}"
                        ));
                    }
                }
                "if" => {
                    // A condition: its errors only choose `then` or `else`.
                    let branch = if self.errors_at(arg, value, at, false).is_empty() {
                        schema.get("then")
                    } else {
                        schema.get("else")
                    };
                    if let Some(sub) = branch {
                        self.check(sub, value, at, strict, keys_checked, errors);
                    }
                }
                "then" | "else" => {
                    assert!(schema_obj.contains_key("if"), "{at}: {keyword} without if")
                }
                "contains" => {
                    if let Some(items) = value.as_array()
                        && !items
                            .iter()
                            .any(|v| self.errors_at(arg, v, at, false).is_empty())
                    {
                        errors.push(format!("{at}: no item matches {arg}"));
                    }
                }
                other if ANNOTATIONS.contains(&other) => {}
                other => panic!("{at}: the checker does not know the keyword {other:?}"),
            }
        }
    }

    fn errors_at(&self, schema: &Value, value: &Value, at: &str, strict: bool) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, value, at, strict, false, &mut errors);
        errors
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        other => panic!("unknown type {other}"),
    }
}

#[test]
fn the_checker_checks() {
    let doc = json!({ "components": { "schemas": {
        "A": { "type": "object", "properties": { "n": { "type": ["integer", "null"], "minimum": 0 } }, "required": ["n"], "additionalProperties": false },
        "C": { "oneOf": [{ "$ref": "#/components/schemas/A" }, { "type": "string" }] }
    }}});
    let c = Checker { doc: &doc };
    let s = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    assert!(c.errors(&s("A"), &json!({ "n": 1 }), false).is_empty());
    assert!(c.errors(&s("A"), &json!({ "n": null }), false).is_empty());
    assert!(!c.errors(&s("A"), &json!({ "n": -1 }), false).is_empty());
    assert!(!c.errors(&s("A"), &json!({}), false).is_empty());
    assert!(
        !c.errors(&s("A"), &json!({ "n": 1, "x": 1 }), false)
            .is_empty()
    );
    assert!(!c.errors(&s("A"), &json!({ "n": "1" }), false).is_empty());
    // Strict: `k` is declared by a sibling in `allOf`, `z` by no one.
    let open = json!({ "allOf": [{ "type": "object", "properties": { "n": {} } }, { "properties": { "k": {} } }] });
    assert!(c.errors(&open, &json!({ "n": 1, "k": 2 }), true).is_empty());
    assert!(!c.errors(&open, &json!({ "n": 1, "z": 2 }), true).is_empty());
    assert!(
        c.errors(&open, &json!({ "n": 1, "z": 2 }), false)
            .is_empty()
    );
    assert!(c.errors(&s("C"), &json!("s"), true).is_empty());
    assert!(!c.errors(&s("C"), &json!(1), true).is_empty());
    // `if`/`else`: only the `by-role` kind may list roles; `contains`: one item must match.
    let cond = json!({
        "type": "object",
        "properties": { "kind": { "type": "string" }, "roles": { "type": "array", "contains": { "const": "admin" } } },
        "if": { "properties": { "kind": { "const": "by-role" } } },
        "else": { "properties": { "roles": { "maxItems": 0 } } }
    });
    assert!(
        c.errors(
            &cond,
            &json!({ "kind": "by-role", "roles": ["admin"] }),
            true
        )
        .is_empty()
    );
    assert!(
        !c.errors(
            &cond,
            &json!({ "kind": "everyone", "roles": ["admin"] }),
            true
        )
        .is_empty()
    );
    assert!(
        !c.errors(&cond, &json!({ "kind": "by-role", "roles": ["x"] }), true)
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// The document as a map of operations.

/// Every operation in the document: `(method, path)`.
fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| METHODS.contains(&k.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect()
}

fn operation<'d>(doc: &'d Value, method: &str, path: &str) -> &'d Value {
    let op = &doc["paths"][path][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {path} is not in the document");
    op
}

/// The document's schema for the body of `POST path`.
fn request_schema<'d>(doc: &'d Value, path: &str) -> &'d Value {
    &operation(doc, "post", path)["requestBody"]["content"]["application/json"]["schema"]
}

/// `schema` with `$ref`s followed, for walking into properties.
fn deref<'d>(doc: &'d Value, mut schema: &'d Value) -> &'d Value {
    while let Some(r) = schema.get("$ref") {
        schema = Checker { doc }.resolve(r);
    }
    schema
}

// ---------------------------------------------------------------------------------------------
// Calls, checked against the document.

fn context_json(user: &str) -> Value {
    json!({
        "user_id": user,
        "org_id": "acme-health",
        "email": format!("{user}@clinic.example"),
        "roles": ["provider"],
        "device": { "ip": "203.0.113.7", "traits": { "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0" } }
    })
}

fn actor_json(user: &str, org: &str, roles: &[&str]) -> Value {
    json!({ "user_id": user, "org_id": org, "roles": roles, "ip": "203.0.113.7", "user_agent": "Mozilla/5.0" })
}

fn platform_admin() -> Value {
    actor_json("root", "platform", &["platform-admin"])
}

struct Api<'a> {
    h: &'a Harness,
    doc: &'a Value,
}

impl Api<'_> {
    /// One request, and its answer checked against the document: the operation lists the status,
    /// the content type is the documented one, every documented header is there with a documented
    /// value, and a JSON body validates against the documented schema with nothing undocumented.
    async fn call(&self, method: &str, target: &str, key: bool, body: Option<&Value>) -> HttpReply {
        let path = target.split('?').next().unwrap();
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let reply = self
            .h
            .http_full(method, target, key.then_some(API_KEY), bytes)
            .await;
        self.check(method, path, reply)
    }

    /// The answer checked against the document (see [`Self::call`]).
    fn check(&self, method: &str, path: &str, reply: HttpReply) -> HttpReply {
        let case = format!("{method} {path} -> {}: {:?}", reply.status, reply.json);
        let op = operation(self.doc, method, path);
        let documented = &op["responses"][reply.status.to_string()];
        assert!(documented.is_object(), "status not documented: {case}");
        self.check_answer(documented, reply, &case)
    }

    /// The answer checked against one documented response (see [`Self::call`]).
    fn check_answer(&self, documented: &Value, reply: HttpReply, case: &str) -> HttpReply {
        let checker = Checker { doc: self.doc };
        let documented = deref(self.doc, documented);
        for (name, header) in documented["headers"].as_object().into_iter().flatten() {
            let header = deref(self.doc, header);
            let values = reply.header(&name.to_ascii_lowercase());
            if header["required"] != true && values.is_empty() {
                continue;
            }
            // Only Set-Cookie may repeat (a session cookie and a device cookie in one answer).
            if name != "Set-Cookie" {
                assert_eq!(values.len(), 1, "header {name} once: {case}");
            }
            for one in values {
                let value = match header["schema"]["type"].as_str() {
                    Some("integer") => json!(one.parse::<i64>().expect("an integer header")),
                    _ => json!(one),
                };
                let errors = checker.errors(&header["schema"], &value, true);
                assert!(errors.is_empty(), "header {name}: {errors:?}: {case}");
            }
        }
        let Some(content) = documented["content"].as_object() else {
            // A redirect: nothing to read.
            assert!(reply.body.is_empty(), "a documented empty answer: {case}");
            return reply;
        };
        let content_type = reply.header("content-type");
        assert_eq!(content.len(), 1, "one documented media type: {case}");
        let (media_type, media) = content.iter().next().unwrap();
        assert_eq!(content_type, [media_type.as_str()], "content type: {case}");
        if media_type == "application/json" {
            let errors = checker.errors(&media["schema"], &reply.json, true);
            assert!(
                errors.is_empty(),
                "the answer breaks its schema: {errors:?}: {case}"
            );
        }
        reply
    }

    /// `POST path` with the API key, checked; the answer must have `status`.
    async fn post(&self, path: &str, body: &Value, status: u16) -> Value {
        let reply = self.call("POST", path, true, Some(body)).await;
        assert_eq!(reply.status, status, "POST {path}: {:?}", reply.json);
        reply.json
    }
}

/// A body every `/v1/` route accepts as well-formed, with every optional field present.
fn example_body(path: &str) -> Value {
    let mut context = context_json("dr-example");
    context["locale"] = json!("es-MX");
    context["device"]["cookie"] = json!("not-a-device.cookie");
    context["device"]["traits"] = json!({
        "user_agent": "Mozilla/5.0", "browser_family": "Firefox", "browser_major": 133,
        "platform": "Linux", "language": "es-MX", "time_zone": "America/Mexico_City", "screen_class": "desktop"
    });
    let actor = platform_admin();
    let policy = json!({
        "mandate": "by-role", "required_roles": ["scheduler"], "trust_days": 7,
        "allow_remember_device": true, "ipv4_change_prefix": 24, "ipv6_change_prefix": 56,
        "enrollment_grace_days": 3, "enrollment_grace_logins": 2
    });
    let branding = json!({
        "display_name": "Acme Health", "logo_url": "https://acme.example/logo.png",
        "primary_color": "#1f3a5f", "accent_color": "#e8eef5", "sender_name": "Acme Health",
        "support_contact": "help@acme.example", "footer_text": "Acme Health, 1 Main St", "default_language": "en"
    });
    let challenge_id = "0123456789abcdef0123456789abcdef";
    match path {
        "/v1/login/begin" | "/v1/login/enroll" | "/v1/login/status" => {
            json!({ "context": context })
        }
        "/v1/login/change-email" => {
            json!({ "context": context, "step_up": "0123456789abcdef0123456789abcdef" })
        }
        "/v1/login/send-code" => json!({ "context": context, "challenge_id": challenge_id }),
        "/v1/login/verify" => {
            json!({ "context": context, "challenge_id": challenge_id, "code": "123 456", "remember_device": true })
        }
        "/v1/devices/list" | "/v1/devices/revoke-all" | "/v1/admin/platform-roles/get" => {
            json!({ "actor": actor })
        }
        "/v1/devices/revoke" => json!({ "actor": actor, "device_id": challenge_id }),
        "/v1/admin/credential-changed" => {
            json!({ "actor": actor, "org_id": "acme-health", "user_id": "dr-example", "change": "password-changed" })
        }
        "/v1/admin/policy/get"
        | "/v1/admin/branding/get"
        | "/v1/admin/branding/preview-link"
        | "/v1/admin/console-link" => {
            json!({ "actor": actor, "org_id": "acme-health" })
        }
        "/v1/admin/policy/set" => {
            json!({ "actor": actor, "org_id": "acme-health", "policy": policy })
        }
        "/v1/admin/sync-roster" => json!({
            "actor": actor, "org_id": "acme-health",
            "add": [{ "user_id": "dr-example", "roles": ["provider"] }], "remove": ["dr-gone"]
        }),
        "/v1/admin/platform-roles/set" => {
            json!({ "actor": actor, "roles": ["platform-admin", "org-admin", "provider"] })
        }
        "/v1/admin/reset-user" | "/v1/admin/user-status" => {
            json!({ "actor": actor, "org_id": "acme-health", "user_id": "dr-example" })
        }
        "/v1/admin/branding/set" => {
            json!({ "actor": actor, "org_id": "acme-health", "branding": branding })
        }
        "/v1/admin/branding/preview" => {
            json!({ "actor": actor, "org_id": "acme-health", "language": "es", "time_zone": "America/Chicago" })
        }
        other => panic!("no example body for {other}: add one here"),
    }
}

/// Every object inside `body` that the schema describes with properties: `(JSON pointer, schema)`.
fn objects_in<'d>(
    doc: &'d Value,
    schema: &'d Value,
    body: &Value,
    at: String,
) -> Vec<(String, &'d Value)> {
    let schema = deref(doc, schema);
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut out = vec![(at.clone(), schema)];
    for (key, sub) in props {
        if let Some(v) = body.get(key).filter(|v| v.is_object()) {
            out.extend(objects_in(doc, sub, v, format!("{at}/{key}")));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn the_document_is_served_at_openapi_json() {
    let h = Harness::new();
    let doc = document();
    let reply = h.http_raw("GET", "/openapi.json", None, Vec::new()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), ["application/json"]);
    assert_eq!(reply.header("cache-control"), ["no-store"]);
    assert_eq!(reply.json, doc, "the served document is guest/openapi.json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "mfa-step");
    assert_eq!(
        doc["info"]["version"],
        env!("CARGO_PKG_VERSION"),
        "the workspace version"
    );
    let api = Api { h: &h, doc: &doc };
    assert_eq!(
        api.call("GET", "/openapi.json", false, None).await.status,
        200
    );
    let wrong = h.http_raw("POST", "/openapi.json", None, Vec::new()).await;
    assert_eq!(
        (wrong.status, wrong.kind()),
        (405, Some("method-not-allowed"))
    );

    // Every reference resolves.
    fn refs<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
        match v {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50);
    let checker = Checker { doc: &doc };
    for r in all {
        checker.resolve(r);
    }
}

#[test]
fn every_implemented_route_is_documented_and_every_documented_route_is_implemented() {
    let doc = document();
    let implemented = implemented_routes(&read("guest/src/http.rs"));
    // The hosted pages route among themselves in the core; the table's hosted rows (which give
    // their 405s an `Allow`) must be exactly the core's routes.
    let hosted = hosted_routes(&read("core/src/web/hosted/mod.rs"));
    assert_eq!(hosted.len(), 9, "the hosted pages' routes: {hosted:#?}");
    let hosted_rows: BTreeSet<(String, String)> = implemented
        .iter()
        .filter(|r| r.serve == "Hosted")
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        hosted_rows, hosted,
        "the route table's hosted rows are the core's hosted routes"
    );
    // The same for the admin console's pages (`core/src/web/console/mod.rs`, its `ROUTES`).
    let console = page_routes(&read("core/src/web/console/mod.rs"), "/admin/console");
    assert_eq!(console.len(), 13, "the console's routes: {console:#?}");
    let console_rows: BTreeSet<(String, String)> = implemented
        .iter()
        .filter(|r| r.serve == "Console")
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        console_rows, console,
        "the route table's console rows are the core's console routes"
    );
    for route in &implemented {
        assert_eq!(
            route.serve == "Api",
            route.path.starts_with("/v1/"),
            "{route:?}: every /v1/ row, and only they, take the API key and a JSON body"
        );
        assert_eq!(
            route.serve == "Hosted",
            route.path == "/prompt" || route.path.starts_with("/prompt/"),
            "{route:?}"
        );
        assert_eq!(
            route.serve == "Console",
            route.path == "/admin/console" || route.path.starts_with("/admin/console/"),
            "{route:?}"
        );
    }
    // The extraction found what it must, or it would prove nothing.
    for (method, path) in [
        ("get", "/prompt"),
        ("post", "/prompt/verify"),
        ("post", "/prompt/devices/revoke-all"),
        ("post", "/v1/login/begin"),
        ("post", "/v1/admin/branding/preview-link"),
        ("get", "/healthz"),
        ("get", "/openapi.json"),
        ("get", "/admin/branding/preview"),
        ("post", "/v1/admin/console-link"),
        ("get", "/admin/console/health"),
        ("post", "/admin/console/policy"),
        ("get", "/admin/console/audit/export"),
        ("post", "/admin/console/sign-out"),
    ] {
        assert!(
            implemented
                .iter()
                .any(|r| r.method == method && r.path == path),
            "{method} {path} not found in http.rs: {implemented:#?}"
        );
    }
    let served: BTreeSet<(String, String)> = implemented
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    let documented = documented_routes(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unimplemented: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unimplemented.is_empty(),
        "served but not documented: {undocumented:?}; documented but not served: {unimplemented:?}"
    );

    for route in &implemented {
        let op = operation(&doc, &route.method, &route.path);
        let security = op["security"]
            .as_array()
            .expect("each operation states its security");
        if route.path.starts_with("/v1/") {
            assert_eq!(security, &[json!({ "apiKey": [] })], "{}", route.path);
            let body = route.body.as_deref().expect("a /v1/ route parses a body");
            assert_eq!(op["requestBody"]["required"], true, "{}", route.path);
            assert_eq!(
                request_schema(&doc, &route.path)["$ref"],
                format!("#/components/schemas/{body}"),
                "{}: the body schema is the struct the route parses",
                route.path
            );
        } else if route.method == "post" {
            // A hosted page's form: no API key, a form body with the session's CSRF token.
            assert!(security.is_empty(), "{}: no API key", route.path);
            let schema =
                &op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"];
            assert!(
                schema["required"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!("csrf"))),
                "{}: every form carries the CSRF token",
                route.path
            );
        } else {
            assert!(security.is_empty(), "{}: no API key", route.path);
            assert!(op.get("requestBody").is_none(), "{}", route.path);
        }
    }
}

/// Fields serde lets a body omit but the core's checks require (`input::login_context` refuses a
/// missing address, naming `device.ip`): the document requires them, so that a body it calls
/// valid is one the service takes.
const REQUIRED_BY_VALIDATION: [(&str, &str); 2] =
    [("LoginContext", "device"), ("DevicePresentation", "ip")];

#[test]
fn request_schemas_match_the_structs_serde_parses() {
    let doc = document();
    let http = read("guest/src/http.rs");
    let model = read("core/src/kernel/model.rs");
    let policy = read("core/src/policy/mod.rs");
    let branding = read("core/src/email/branding.rs");
    let bodies: BTreeSet<String> = implemented_routes(&http)
        .into_iter()
        .filter_map(|r| r.body)
        .collect();
    let mut structs: Vec<(&str, &str)> = bodies
        .iter()
        .map(|body| (body.as_str(), http.as_str()))
        .collect();
    structs.extend([
        ("LoginContext", model.as_str()),
        ("DevicePresentation", model.as_str()),
        ("BrowserTraits", model.as_str()),
        ("Actor", model.as_str()),
        ("OrgPolicy", policy.as_str()),
        ("Branding", branding.as_str()),
    ]);
    for (name, src) in structs {
        let (fields, deny) = serde_struct(src, name);
        let schema = &doc["components"]["schemas"][name];
        assert!(schema.is_object(), "components/schemas/{name} is missing");
        let properties: BTreeSet<String> = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has properties"))
            .keys()
            .cloned()
            .collect();
        let source: BTreeSet<String> = fields.iter().map(|(f, _)| f.clone()).collect();
        assert_eq!(properties, source, "{name}: properties vs fields");
        let required: BTreeSet<String> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let source_required: BTreeSet<String> = fields
            .iter()
            .filter(|(f, r)| *r || REQUIRED_BY_VALIDATION.contains(&(name, f.as_str())))
            .map(|(f, _)| f.clone())
            .collect();
        assert_eq!(required, source_required, "{name}: required fields");
        assert_eq!(
            schema["additionalProperties"] == false,
            deny,
            "{name}: additionalProperties false exactly when deny_unknown_fields"
        );
    }
    for (schema, src, rust) in [
        ("Mandate", &policy, "Mandate"),
        ("CredentialChange", &model, "CredentialChange"),
        ("ChallengePurpose", &model, "Purpose"),
    ] {
        assert_eq!(
            doc["components"]["schemas"][schema]["enum"],
            json!(kebab_enum(src, rust)),
            "{schema}"
        );
    }
}

#[test]
fn answer_schemas_declare_every_field_the_types_serialize() {
    // Answers carry every field (no `skip_serializing_if` in the core's types): all are required.
    let doc = document();
    let model = read("core/src/kernel/model.rs");
    let preview = read("core/src/web/preview.rs");
    for (schema, src, rust, extra) in [
        ("Challenge", &model, "ChallengeView", None),
        ("Allowed", &model, "Allowed", Some("outcome")),
        ("Denied", &model, "Denied", Some("outcome")),
        ("Explanation", &model, "Explanation", None),
        ("CodeSent", &model, "CodeSent", None),
        ("Verified", &model, "Verified", None),
        ("UserStatus", &model, "UserStatus", None),
        ("DeviceInfo", &model, "DeviceInfo", None),
        ("PreviewLink", &preview, "PreviewLink", None),
    ] {
        let mut fields: BTreeSet<String> = serde_struct(src, rust)
            .0
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        fields.extend(extra.map(str::to_owned));
        let schema_json = &doc["components"]["schemas"][schema];
        let properties: BTreeSet<String> = schema_json["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let required: BTreeSet<String> = schema_json["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(properties, fields, "{schema} vs {rust}");
        assert_eq!(required, fields, "{schema}: every field is always sent");
    }
}

#[tokio::test]
async fn every_v1_operation_answers_bad_bodies_and_missing_keys_as_documented() {
    let h = Harness::new();
    let doc = document();
    let api = Api { h: &h, doc: &doc };
    let checker = Checker { doc: &doc };
    let v1: Vec<String> = documented_routes(&doc)
        .into_iter()
        .filter(|(_, path)| path.starts_with("/v1/"))
        .map(|(method, path)| {
            assert_eq!(method, "post", "{path}");
            path
        })
        .collect();
    assert!(v1.len() >= 20, "{v1:?}");
    for path in &v1 {
        let schema = request_schema(&doc, path);
        let example = example_body(path);
        let errors = checker.errors(schema, &example, false);
        assert!(
            errors.is_empty(),
            "{path}: the example breaks the document: {errors:?}"
        );

        // No key: 401, before anything else.
        let reply = api.call("POST", path, false, Some(&example)).await;
        assert_eq!(reply.status, 401, "{path}");
        assert_eq!(reply.kind(), Some("unauthorized"));

        // `{}` lacks required fields: the document says so, and the component answers 400.
        assert!(
            !checker.errors(schema, &json!({}), false).is_empty(),
            "{path}"
        );
        let reply = api.call("POST", path, true, Some(&json!({}))).await;
        assert_eq!(
            (reply.status, reply.kind()),
            (400, Some("invalid-input")),
            "{path}"
        );
        assert_eq!(reply.json["error"]["field"], "body", "{path}");

        // Field by field, at every level: removing a field the document requires is a 400 naming
        // the body; removing one it does not require is not. An unknown field anywhere is a 400.
        for (pointer, object_schema) in objects_in(&doc, schema, &example, String::new()) {
            let required: BTreeSet<&str> = object_schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let keys: Vec<String> = example
                .pointer(&pointer)
                .and_then(Value::as_object)
                .unwrap()
                .keys()
                .cloned()
                .collect();
            for key in keys {
                let mut body = example.clone();
                body.pointer_mut(&pointer)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .remove(&key);
                let reply = api.call("POST", path, true, Some(&body)).await;
                // serde's required fields are refused as a malformed body; those the checks
                // require (REQUIRED_BY_VALIDATION) name themselves.
                let field = reply.json["error"]["field"].as_str().unwrap_or_default();
                let named = field == "body"
                    || field == key
                    || field.starts_with(&format!("{key}."))
                    || field.ends_with(&format!(".{key}"));
                assert_eq!(
                    reply.status == 400 && named,
                    required.contains(key.as_str()),
                    "{path} without {pointer}/{key}: {} {:?}",
                    reply.status,
                    reply.json
                );
                if !required.contains(key.as_str()) {
                    assert_ne!(reply.status, 400, "{path} without {pointer}/{key}");
                }
            }
            let mut body = example.clone();
            body.pointer_mut(&pointer)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert("unexpected".to_owned(), json!(true));
            assert!(
                !checker.errors(schema, &body, false).is_empty(),
                "{path}: the document refuses an unknown field at {pointer}/"
            );
            let reply = api.call("POST", path, true, Some(&body)).await;
            assert_eq!(
                (reply.status, reply.kind()),
                (400, Some("invalid-input")),
                "{path}: unknown field at {pointer}/: {:?}",
                reply.json
            );
        }

        // A method the document does not list for the path: 405.
        let reply = h.http_full("GET", path, Some(API_KEY), Vec::new()).await;
        assert_eq!(reply.status, 405, "GET {path}");
    }
}

#[tokio::test]
async fn every_route_answers_with_its_documented_schema() {
    let h = Harness::new();
    let doc = document();
    let api = Api { h: &h, doc: &doc };
    let admin = platform_admin();
    let org = "acme-health";

    // A provider enrolls at first login and asks to be remembered.
    let dr_a = context_json("dr-a");
    let begun = api
        .post("/v1/login/begin", &json!({ "context": dr_a }), 200)
        .await;
    assert_eq!(
        (begun["outcome"].as_str(), begun["purpose"].as_str()),
        (Some("challenge"), Some("enrollment"))
    );
    let id = begun["challenge_id"].clone();
    let sent = api
        .post(
            "/v1/login/send-code",
            &json!({ "context": dr_a, "challenge_id": id }),
            200,
        )
        .await;
    assert_eq!(sent["resent"], false);
    let verified = api
        .post(
            "/v1/login/verify",
            &json!({ "context": dr_a, "challenge_id": id, "code": h.last_code(), "remember_device": true }),
            200,
        )
        .await;
    let step_up = verified["step_up"].clone();
    let device_id = verified["device_id"]
        .as_str()
        .expect("a device was trusted")
        .to_owned();
    let cookie = cookie_value(verified["set_cookie"].as_str().unwrap());

    // The trusted browser comes back: `allow`, with a rotated cookie.
    let mut with_cookie = dr_a.clone();
    with_cookie["device"]["cookie"] = json!(cookie);
    let allowed = api
        .post("/v1/login/begin", &json!({ "context": with_cookie }), 200)
        .await;
    assert_eq!(
        (allowed["outcome"].as_str(), allowed["why"]["rule"].as_str()),
        (Some("allow"), Some("device:trusted"))
    );

    let status = api
        .post("/v1/login/status", &json!({ "context": dr_a }), 200)
        .await;
    assert_eq!(status["enrolled"], true);

    // A fresh code lets the address move.
    let mut moved = dr_a.clone();
    moved["email"] = json!("dr-a@new-clinic.example");
    let change = api
        .post(
            "/v1/login/change-email",
            &json!({ "context": moved, "step_up": step_up }),
            200,
        )
        .await;
    assert_eq!(change["purpose"], "email-change");

    let me = actor_json("dr-a", org, &["provider"]);
    let devices = api
        .post("/v1/devices/list", &json!({ "actor": me }), 200)
        .await;
    assert_eq!(devices["devices"][0]["device_id"], device_id.as_str());
    let revoked = api
        .post(
            "/v1/devices/revoke",
            &json!({ "actor": me, "device_id": device_id }),
            200,
        )
        .await;
    assert_eq!(revoked, json!({ "revoked": 1 }));
    api.post(
        "/v1/devices/revoke",
        &json!({ "actor": me, "device_id": device_id }),
        403,
    )
    .await;
    let all = api
        .post("/v1/devices/revoke-all", &json!({ "actor": me }), 200)
        .await;
    assert_eq!(all, json!({ "revoked": 0 }));

    // Someone no rule requires MFA of opts in; codes are refused, throttled, as documented.
    let mut dr_b = context_json("dr-b");
    dr_b["roles"] = json!([]);
    let enrolled = api
        .post("/v1/login/enroll", &json!({ "context": dr_b }), 200)
        .await;
    assert_eq!(enrolled["why"]["rule"], "user:opted-in");
    api.post("/v1/login/enroll", &json!({ "context": dr_b }), 200)
        .await;
    let b_id = enrolled["challenge_id"].clone();
    let stale = json!({ "context": dr_b, "challenge_id": b_id, "code": "000000" });
    let rejected = api.post("/v1/login/verify", &stale, 403).await;
    assert_eq!(rejected["error"]["kind"], "rejected");
    let current = api
        .post("/v1/login/status", &json!({ "context": dr_b }), 200)
        .await;
    let send = json!({ "context": dr_b, "challenge_id": current["active_challenge"] });
    for _ in 0..3 {
        api.post("/v1/login/send-code", &send, 200).await;
    }
    let throttled = api.post("/v1/login/send-code", &send, 429).await;
    assert_eq!(throttled["error"]["kind"], "throttled");
    let status = api
        .post("/v1/login/status", &json!({ "context": dr_b }), 200)
        .await;
    assert!(status["next_send_at"].is_i64());

    // Administration.
    let policy = api
        .post(
            "/v1/admin/policy/get",
            &json!({ "actor": admin, "org_id": org }),
            200,
        )
        .await;
    assert_eq!(policy["mandate"], "inherit");
    api.post(
        "/v1/admin/policy/get",
        &json!({ "actor": me, "org_id": org }),
        403,
    )
    .await;
    let mut tightened = example_body("/v1/admin/policy/set");
    tightened["actor"] = admin.clone();
    assert_eq!(
        api.post("/v1/admin/policy/set", &tightened, 200).await,
        json!({ "updated": true })
    );
    let policy = api
        .post(
            "/v1/admin/policy/get",
            &json!({ "actor": admin, "org_id": org }),
            200,
        )
        .await;
    assert_eq!(policy, tightened["policy"]);
    let roles = api
        .post(
            "/v1/admin/platform-roles/get",
            &json!({ "actor": admin }),
            200,
        )
        .await;
    assert!(roles["roles"].as_array().unwrap().len() >= 2);
    api.post(
        "/v1/admin/platform-roles/set",
        &example_body("/v1/admin/platform-roles/set"),
        200,
    )
    .await;
    let user = json!({ "actor": admin, "org_id": org, "user_id": "dr-a" });
    let status = api.post("/v1/admin/user-status", &user, 200).await;
    assert_eq!(status["enrolled"], true);
    let neutral = api
        .post(
            "/v1/admin/branding/get",
            &json!({ "actor": admin, "org_id": org }),
            200,
        )
        .await;
    assert_eq!(neutral["logo_url"], Value::Null);
    let branded = example_body("/v1/admin/branding/set");
    api.post("/v1/admin/branding/set", &branded, 200).await;
    let branding = api
        .post(
            "/v1/admin/branding/get",
            &json!({ "actor": admin, "org_id": org }),
            200,
        )
        .await;
    assert_eq!(branding, branded["branding"]);
    let email = api
        .post(
            "/v1/admin/branding/preview",
            &example_body("/v1/admin/branding/preview"),
            200,
        )
        .await;
    assert!(email["text"].as_str().unwrap().contains("123456"));
    let link = api
        .post(
            "/v1/admin/branding/preview-link",
            &json!({ "actor": admin, "org_id": org }),
            200,
        )
        .await;
    let url = link["url"].as_str().unwrap();
    let page = api
        .call(
            "GET",
            &format!("{url}&lang=es&tz=America%2FChicago"),
            false,
            None,
        )
        .await;
    assert_eq!(page.status, 200);
    let tampered = url.replace("token=", "token=00");
    assert_eq!(api.call("GET", &tampered, false, None).await.status, 403);
    let changed = api
        .post(
            "/v1/admin/credential-changed",
            &json!({ "actor": admin, "org_id": org, "user_id": "dr-a", "change": "mfa-reset" }),
            200,
        )
        .await;
    assert_eq!(changed, json!({ "revoked": 0 }));
    assert_eq!(
        api.post("/v1/admin/reset-user", &user, 200).await,
        json!({ "reset": true })
    );

    let health = api.call("GET", "/healthz", false, None).await;
    assert_eq!(health.status, 200);

    // A store that fails: 503, as documented for every /v1/ route.
    h.faults.fail_store_writes(true);
    api.post(
        "/v1/login/begin",
        &json!({ "context": context_json("dr-c") }),
        503,
    )
    .await;
    h.faults.clear();
}

// ---------------------------------------------------------------------------------------------
// Methods: every 405 says, in `Allow`, what the path takes.

/// The methods a probe tries on every path.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

#[tokio::test]
async fn every_method_a_path_does_not_take_is_405_with_the_paths_methods_in_allow() {
    let doc = document();
    // The hosted sign-in set up, so that its paths exist (off, they are 404 whatever the method).
    let h = prompt_harness();
    let api = Api { h: &h, doc: &doc };
    let responses = &doc["components"]["responses"];
    let mut probed = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let taken: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .filter(|m| METHODS.contains(&m.as_str()))
            .collect();
        assert!(!taken.is_empty(), "{path}");
        for method in METHODS.iter().filter(|m| !taken.contains(**m)) {
            // With the API key: a `/v1/` path checks it first, and must still say 405.
            let reply = h.http_full(method, path, Some(API_KEY), Vec::new()).await;
            let case = format!("{method} {path} -> {}: {:?}", reply.status, reply.json);
            assert_eq!(reply.status, 405, "{case}");
            let allow = reply.header("allow");
            assert_eq!(allow.len(), 1, "one Allow header: {case}");
            let listed: Vec<&str> = allow[0].split(", ").collect();
            let listed_set: BTreeSet<String> = listed.iter().map(|m| (*m).to_owned()).collect();
            assert_eq!(listed.len(), listed_set.len(), "no repeats: {case}");
            assert_eq!(
                listed_set, taken,
                "Allow lists exactly the path's documented methods: {case}"
            );
            let page = path == "/prompt"
                || path.starts_with("/prompt/")
                || path == "/admin/console"
                || path.starts_with("/admin/console/");
            let documented = if page {
                &responses["PageMethodNotAllowed"]
            } else {
                &responses["MethodNotAllowed"]
            };
            let reply = api.check_answer(documented, reply, &case);
            if !page {
                assert_eq!(reply.kind(), Some("method-not-allowed"), "{case}");
            }
            probed += 1;
        }
    }
    assert!(probed >= 31 * 6, "every path, every other method: {probed}");
    assert!(
        h.actions().is_empty(),
        "a refused method changes nothing: {:?}",
        h.actions()
    );

    // A `/v1/` path without the key is 401 whatever the method (the key comes first); an unknown
    // path is 404 whatever the method, with no Allow.
    let reply = h
        .http_full("TRACE", "/v1/login/begin", None, Vec::new())
        .await;
    assert_eq!(reply.status, 401);
    for (method, path) in [("TRACE", "/v1/login/nope"), ("GET", "/nope")] {
        let reply = h.http_full(method, path, Some(API_KEY), Vec::new()).await;
        assert_eq!(reply.status, 404, "{method} {path}");
        assert!(reply.header("allow").is_empty(), "{method} {path}");
    }

    // With the hosted sign-in off, its paths do not exist: 404 for every method, as the
    // documents' 404 and `PageMethodNotAllowed` say.
    let off = Harness::new();
    for method in METHODS {
        let reply = off
            .http_full(method, "/prompt/verify", None, Vec::new())
            .await;
        assert_eq!(reply.status, 404, "{method} /prompt/verify, pages off");
    }
}

// ---------------------------------------------------------------------------------------------
// Statuses: every status a route can answer is in its operation, and no other.

/// The status `Reply::from_error` answers each `Error` variant with, read from `guest/src/http.rs`.
fn error_statuses(http: &str) -> std::collections::BTreeMap<String, u16> {
    let body = fn_body(http, "from_error");
    let block = &body[body
        .find("match e {")
        .expect("from_error matches the error")..];
    let block = &block[..block.find("};").expect("the match ends")];
    let mut map = std::collections::BTreeMap::new();
    for line in block.lines() {
        let Some((variants, answer)) = line.split_once("=> (") else {
            continue;
        };
        let status: u16 = answer[..3].parse().expect("a status");
        for variant in variants.split('|') {
            let name: String = variant
                .trim()
                .strip_prefix("Error::")
                .expect("Error::X")
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            map.insert(name, status);
        }
    }
    map
}

/// The statuses `code` can answer by itself: its `Reply::problem(NNN` literals and the status of
/// every `Error::X` it builds.
fn statuses_written_in(
    code: &str,
    by_error: &std::collections::BTreeMap<String, u16>,
) -> BTreeSet<u16> {
    let mut out: BTreeSet<u16> = code
        .match_indices("Reply::problem(")
        .map(|(i, m)| {
            let rest = code[i + m.len()..].trim_start();
            rest[..3].parse().expect("a literal status")
        })
        .collect();
    for (i, m) in code.match_indices("Error::") {
        let name: String = code[i + m.len()..]
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        if let Some(status) = by_error.get(&name) {
            out.insert(*status);
        }
    }
    out
}

/// Every `.rs` file under `dir`.
fn sources_under(dir: &std::path::Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            sources_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The `Error::X` variants the `# Errors` section of the core's `pub fn name` names.
fn declared_errors(core: &[String], name: &str) -> BTreeSet<String> {
    let (src, at) = core
        .iter()
        .find_map(|src| {
            [format!("pub fn {name}<"), format!("pub fn {name}(")]
                .iter()
                .find_map(|head| src.find(head.as_str()))
                .map(|at| (src, at))
        })
        .unwrap_or_else(|| panic!("pub fn {name} not found in core/src"));
    let above = &src[..src[..at].rfind('\n').unwrap_or(0)];
    let mut doc: Vec<&str> = above
        .lines()
        .rev()
        .map(str::trim)
        .take_while(|l| l.starts_with("///") || l.starts_with("#["))
        .filter(|l| l.starts_with("///"))
        .collect();
    doc.reverse();
    let doc = doc.join("\n");
    let errors = &doc[doc
        .find("# Errors")
        .unwrap_or_else(|| panic!("{name} has an `# Errors` section"))..];
    let variants: BTreeSet<String> = errors
        .match_indices("Error::")
        .map(|(i, m)| {
            errors[i + m.len()..]
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect()
        })
        .collect();
    assert!(
        !variants.is_empty(),
        "{name}: its `# Errors` names no variant"
    );
    variants
}

#[test]
fn every_status_a_route_can_answer_is_documented() {
    let doc = document();
    let http = read("guest/src/http.rs");
    let service = read("guest/src/service.rs");
    let by_error = error_statuses(&http);
    // The extraction found the map, or it would prove nothing.
    for (variant, status) in [("InvalidInput", 400), ("Locked", 423), ("Store", 503)] {
        assert_eq!(by_error.get(variant), Some(&status), "{by_error:?}");
    }
    let mut core = Vec::new();
    sources_under(
        std::path::Path::new(&format!("{}/../core/src", env!("CARGO_MANIFEST_DIR"))),
        &mut core,
    );
    // What every `/v1/` row can answer before its handler runs: the key (`authorize`: 401, and 500
    // when the host set none), the body (`read_body`: 400, 413; `with_body`'s parse error: 400).
    let mut before_api: BTreeSet<u16> = [
        fn_body(&http, "authorize"),
        fn_body(&http, "read_body"),
        fn_body(&http, "into_reply"),
    ]
    .iter()
    .flat_map(|code| statuses_written_in(code, &by_error))
    .collect();
    assert_eq!(before_api, BTreeSet::from([400, 401, 413, 500]));
    // `service::with_engine` refuses to run without its key or with settings out of bounds.
    let engine = statuses_written_in(fn_body(&service, "with_engine"), &by_error);
    assert_eq!(engine, BTreeSet::from([500]));
    before_api.insert(200);

    let rows = route_rows(&http);
    assert_eq!(rows.len(), documented_routes(&doc).len());
    for (route, code) in &rows {
        let op = operation(&doc, &route.method, &route.path);
        let documented: BTreeSet<u16> = op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.parse().unwrap())
            .collect();
        let case = format!("{} {}", route.method, route.path);
        let mut expected: BTreeSet<u16> = BTreeSet::from([200]);
        match route.serve.as_str() {
            "Api" => expected.extend(&before_api),
            "Own" => expected.extend(statuses_written_in(code, &by_error)),
            "Console" => {
                // An admin console page: the core's pages answer what the operation lists (the
                // end-to-end test in `console.rs` walks them); around them, every page may answer
                // the service not set up (500) and the store or trail down (503), and every form
                // one that could not be read (400).
                let mut around = BTreeSet::from([500, 503]);
                if route.method == "post" {
                    around.insert(400);
                }
                let missing: Vec<_> = around.difference(&documented).collect();
                assert!(missing.is_empty(), "{case}: undocumented {missing:?}");
                continue;
            }
            _ => {
                // A hosted page: the core's pages answer what the operation lists (the end-to-end
                // test below walks them); around them, every page may answer the hosted sign-in
                // off (404), its settings out of bounds (500) and the store down (503), and every
                // form one that could not be read (400, from `read_body`).
                let mut around = BTreeSet::from([404, 500, 503]);
                if route.method == "post" {
                    around.insert(400);
                }
                let missing: Vec<_> = around.difference(&documented).collect();
                assert!(missing.is_empty(), "{case}: undocumented {missing:?}");
                continue;
            }
        }
        if code.contains("service::with_engine") {
            expected.extend(&engine);
        }
        if let Some(f) = &route.engine_fn {
            for variant in declared_errors(&core, f) {
                let status = by_error.get(&variant).unwrap_or_else(|| {
                    panic!("{case}: {f} names Error::{variant}, which from_error does not map")
                });
                expected.insert(*status);
            }
        }
        assert_eq!(
            documented, expected,
            "{case}: the documented statuses vs those the route can answer ({:?})",
            route.engine_fn
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Values: the document's limits are the service's.

#[tokio::test]
async fn the_documented_limits_are_the_ones_the_service_enforces() {
    use mfa_step_core::kernel::input;
    let doc = document();
    let s = &doc["components"]["schemas"];
    let defaults = mfa_step_core::Settings::default();

    // The numbers, against the core's own constants.
    assert_eq!(s["Identifier"]["maxLength"], input::MAX_ID);
    assert!(
        s["Identifier"]["pattern"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{{1,{}}}$", input::MAX_ID))
    );
    assert_eq!(s["Role"]["maxLength"], input::MAX_ROLE);
    assert!(
        s["Role"]["pattern"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{{1,{}}}$", input::MAX_ROLE))
    );
    assert_eq!(s["Roles"]["maxItems"], input::MAX_ROLES);
    assert_eq!(s["Text"]["maxLength"], input::MAX_TEXT);
    for field in [
        "browser_family",
        "platform",
        "language",
        "time_zone",
        "screen_class",
    ] {
        let schema = &s["BrowserTraits"]["properties"][field];
        assert_eq!(schema["maxLength"], input::MAX_TEXT, "{field}");
        assert_eq!(schema["pattern"], s["Text"]["pattern"], "{field}");
    }
    let email = &s["LoginContext"]["properties"]["email"];
    assert_eq!(email["maxLength"], input::MAX_EMAIL);
    let code = &s["VerifyBody"]["properties"]["code"];
    assert_eq!(code["maxLength"], input::MAX_CODE_INPUT);
    assert!(
        code["pattern"]
            .as_str()
            .unwrap()
            .contains(&format!("{{{}}}", defaults.code_digits)),
        "the code pattern counts the default code_digits"
    );
    let policy = &s["OrgPolicy"]["properties"];
    assert_eq!(policy["trust_days"]["maximum"], defaults.trust_days);
    assert_eq!(
        policy["ipv4_change_prefix"]["minimum"],
        defaults.ipv4_change_prefix
    );
    assert_eq!(
        policy["ipv6_change_prefix"]["minimum"],
        defaults.ipv6_change_prefix
    );
    assert_eq!(
        policy["enrollment_grace_days"]["maximum"],
        mfa_step_core::policy::MAX_GRACE_DAYS
    );
    assert_eq!(
        policy["enrollment_grace_logins"]["maximum"],
        mfa_step_core::policy::MAX_GRACE_LOGINS
    );
    let language = s["Branding"]["properties"]["default_language"]["pattern"]
        .as_str()
        .unwrap();
    let spelled: Vec<String> = mfa_step_core::email::i18n::supported()
        .iter()
        .map(|tag| {
            tag.chars()
                .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c))
                .collect()
        })
        .collect();
    assert_eq!(
        language,
        format!("^(?:{})(?:[-_][\\s\\S]*)?$", spelled.join("|")),
        "default_language: the supported languages, in any case, with any subtags"
    );

    // And the component agrees at each limit: a value at it is taken, one past it is refused
    // naming the field.
    let h = Harness::new();
    let api = Api { h: &h, doc: &doc };
    let status = async |context: &Value| {
        let reply = api
            .call(
                "POST",
                "/v1/login/status",
                true,
                Some(&json!({ "context": context })),
            )
            .await;
        (
            reply.status,
            reply.json["error"]["field"].as_str().map(str::to_owned),
        )
    };
    let ok = (200, None);
    let refused = |field: &str| (400, Some(field.to_owned()));
    let with = |pointer: &str, value: Value| {
        let mut context = context_json("dr-limits");
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        context
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap()
            .insert(key.to_owned(), value);
        context
    };
    let long = |n: usize| "a".repeat(n);
    // A domain of `n` characters in labels of at most 63 (the longest a label may be).
    let labels = |n: usize| {
        let mut out = String::new();
        while out.len() < n {
            if !out.is_empty() {
                out.push('.');
            }
            let take = (n - out.len()).min(63);
            out.push_str(&"a".repeat(take));
        }
        out
    };
    let cases: Vec<(Value, (u16, Option<String>))> = vec![
        (with("/user_id", json!(long(input::MAX_ID))), ok.clone()),
        (
            with("/user_id", json!(long(input::MAX_ID + 1))),
            refused("user_id"),
        ),
        (with("/user_id", json!("a:b")), refused("user_id")),
        (
            with("/roles", json!(vec!["r"; input::MAX_ROLES])),
            ok.clone(),
        ),
        (
            with("/roles", json!(vec!["r"; input::MAX_ROLES + 1])),
            refused("roles"),
        ),
        (with("/roles", json!([long(input::MAX_ROLE)])), ok.clone()),
        (
            with("/roles", json!([long(input::MAX_ROLE + 1)])),
            refused("roles"),
        ),
        (
            with("/email", json!(format!("{}@clinic.example", long(64)))),
            ok.clone(),
        ),
        (
            with("/email", json!(format!("{}@clinic.example", long(65)))),
            refused("email"),
        ),
        (
            with(
                "/email",
                json!(format!("a@{}.example", labels(input::MAX_EMAIL - 10))),
            ),
            ok.clone(),
        ),
        (
            with(
                "/email",
                json!(format!("a@{}.example", labels(input::MAX_EMAIL - 9))),
            ),
            refused("email"),
        ),
        (with("/email", json!("a@-clinic.example")), refused("email")),
        (
            with("/email", json!("a\u{a0}b@clinic.example")),
            refused("email"),
        ),
        (with("/locale", json!(long(35))), ok.clone()),
        (with("/locale", json!(long(36))), refused("locale")),
        (
            with("/device/traits/user_agent", json!(long(input::MAX_TEXT))),
            ok.clone(),
        ),
        (
            with(
                "/device/traits/user_agent",
                json!(long(input::MAX_TEXT + 1)),
            ),
            refused("device.traits.user_agent"),
        ),
        // No control characters (Cc, C1 included); other Unicode, even a space of another kind, is text.
        (
            with("/device/traits/user_agent", json!("a\u{85}b")),
            refused("device.traits.user_agent"),
        ),
        (
            with("/device/traits/user_agent", json!("a\u{a0}\u{2028}b")),
            ok.clone(),
        ),
        // Addresses: surrounding whitespace is trimmed; leading zeros and zones are not addresses.
        (
            with("/device/ip", json!("\u{3000} 203.0.113.7\n")),
            ok.clone(),
        ),
        (with("/device/ip", json!("::ffff:203.0.113.7")), ok.clone()),
        (
            with("/device/ip", json!("203.0.113.07")),
            refused("device.ip"),
        ),
        (
            with("/device/ip", json!("fe80::1%eth0")),
            refused("device.ip"),
        ),
        (with("/device/ip", json!("")), refused("device.ip")),
    ];
    for (context, expected) in cases {
        let got = status(&context).await;
        assert_eq!(got, expected, "{context}");
    }

    // A code: spacing taken, the default number of digits, at most 32 characters as typed.
    let context = context_json("dr-limits");
    for (code, field) in [
        ("123 456", None),
        (
            &*format!("{}123456", "-".repeat(input::MAX_CODE_INPUT - 6)),
            None,
        ),
        (
            &*format!("{}123456", "-".repeat(input::MAX_CODE_INPUT - 5)),
            Some("code"),
        ),
        ("1234567", Some("code")),
        ("12345a", Some("code")),
    ] {
        let reply = api
            .call(
                "POST",
                "/v1/login/verify",
                true,
                Some(&json!({ "context": context, "challenge_id": "c-1", "code": code })),
            )
            .await;
        match field {
            // Well-formed: it reaches the challenge, which does not exist.
            None => assert_eq!(
                (reply.status, reply.kind()),
                (403, Some("rejected")),
                "{code:?}"
            ),
            Some(field) => assert_eq!(
                (reply.status, reply.json["error"]["field"].as_str()),
                (400, Some(field)),
                "{code:?}"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The hosted pages, as a browser and an IdP use them, checked against the document.

/// The shared key of the IdP and mfa-step (hex, 32 bytes).
const PROMPT_KEY: &str = "5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c";
const RETURN_TO: &str = "https://idp.example/mfa/return";

/// The http-app component with the hosted sign-in set up for the IdP `idp-test`.
fn prompt_harness() -> Harness {
    let config = host_harness::Config::new([
        ("hmac_key", HMAC_KEY),
        ("api_key", API_KEY),
        ("prompt_key", PROMPT_KEY),
        ("prompt_client_id", "idp-test"),
        ("prompt_return_urls", "https://idp.example/mfa/"),
    ]);
    Harness::with(
        http_app(),
        std::sync::Arc::new(host_harness::backends::MemoryStore::new()),
        config,
    )
}

/// A request the way an IdP signs it, with the `jsonwebtoken` crate.
fn prompt_request(jti: &str, now: i64) -> String {
    let claims = json!({
        "iss": "idp-test", "aud": "mfa-step", "sub": "dr-hosted", "org": "acme-health",
        "email": "dr-hosted@clinic.example", "roles": ["provider"], "locale": "en",
        "return_to": format!("{RETURN_TO}?state=abc"), "nonce": "nonce-1", "jti": jti,
        "iat": now, "exp": now + 120,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(&hex_bytes(PROMPT_KEY));
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// A browser's cookie jar, fed by `Set-Cookie`.
#[derive(Default)]
struct Jar(std::collections::BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, reply: &HttpReply) {
        for cookie in reply.header("set-cookie") {
            let (pair, attributes) = cookie.split_once(';').unwrap_or((cookie, ""));
            let (name, value) = pair.split_once('=').unwrap();
            for needed in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
                assert!(
                    attributes.contains(needed),
                    "{name} lacks {needed}: {cookie}"
                );
            }
            assert!(name.starts_with("__Host-"), "{cookie}");
            assert!(!attributes.contains("Domain"), "{cookie}");
            if attributes.contains("Max-Age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Api<'_> {
    /// A browser request to a hosted page, checked against the document.
    async fn page(&self, jar: &mut Jar, method: &str, target: &str, form: &str) -> HttpReply {
        let mut headers = vec![
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0".to_owned(),
            ),
            ("x-mfa-client-ip", "198.51.100.23".to_owned()),
            ("cookie", jar.header()),
        ];
        if method == "POST" {
            headers.push((
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ));
        }
        let reply = self
            .h
            .http_with(method, target, &headers, form.as_bytes().to_vec())
            .await;
        jar.take(&reply);
        let path = target.split('?').next().unwrap();
        self.check(method, path, reply)
    }
}

fn text(reply: &HttpReply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form") + 19;
    page[at..at + 32].to_owned()
}

#[tokio::test]
async fn the_hosted_prompt_answers_as_documented_end_to_end() {
    let doc = document();
    let h = prompt_harness();
    let api = Api { h: &h, doc: &doc };
    let mut jar = Jar::default();
    let request = prompt_request("jti-1", T0);

    // The IdP's redirect: accepted, a session opened.
    let opened = api
        .page(&mut jar, "GET", &format!("/prompt?request={request}"), "")
        .await;
    assert_eq!(opened.status, 303);
    assert_eq!(opened.header("location"), ["/prompt/step"]);
    assert!(jar.0.contains_key("__Host-mfa-prompt"));
    // The same request again, from anywhere: refused.
    let replay = api
        .page(
            &mut Jar::default(),
            "GET",
            &format!("/prompt?request={request}"),
            "",
        )
        .await;
    assert_eq!(replay.status, 403);
    assert!(text(&replay).contains("already used"));

    // The first code confirms the address; the email went out when the page was shown.
    let step = api.page(&mut jar, "GET", "/prompt/step", "").await;
    assert_eq!(step.status, 200);
    let page = text(&step);
    assert!(page.contains("Confirm your email address"), "{page}");
    let csp = step.header("content-security-policy")[0];
    assert!(
        csp.contains("form-action 'self' https://idp.example;"),
        "{csp}"
    );
    assert_eq!(step.header("cache-control"), ["no-store"]);
    assert_eq!(step.header("x-frame-options"), ["DENY"]);
    let csrf = csrf_of(&page);
    let code = h.last_code();

    // Without the token, nothing; a wrong code is announced; the right one, pasted with spaces, passes.
    let forged = api
        .page(
            &mut jar,
            "POST",
            "/prompt/verify",
            &format!("csrf=x&code={code}"),
        )
        .await;
    assert_eq!(forged.status, 403);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let again = api
        .page(
            &mut jar,
            "POST",
            "/prompt/verify",
            &format!("csrf={csrf}&code={wrong}"),
        )
        .await;
    assert_eq!(again.status, 200);
    assert!(text(&again).contains("role=\"alert\""));
    h.clock.advance(120);
    let spaced = format!("{}+{}", &code[..3], &code[3..]);
    let done = api
        .page(
            &mut jar,
            "POST",
            "/prompt/verify",
            &format!("csrf={csrf}&code={spaced}&remember=on"),
        )
        .await;
    assert_eq!(done.status, 303, "{}", text(&done));
    assert!(jar.0.contains_key("__Host-mfa-device"));
    assert!(
        !jar.0.contains_key("__Host-mfa-prompt"),
        "the session is over"
    );

    // The IdP checks the result with its own JWT library.
    let location = done.header("location")[0];
    let token = location
        .strip_prefix(&format!("{RETURN_TO}?state=abc&result="))
        .expect("back to the IdP's return URL");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["idp-test"]);
    validation.set_issuer(&["mfa-step"]);
    // The test clock is not the wall clock jsonwebtoken reads: expiry is checked below instead.
    validation.validate_exp = false;
    let key = jsonwebtoken::DecodingKey::from_secret(&hex_bytes(PROMPT_KEY));
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| e.to_string())
        .unwrap()
        .claims;
    assert_eq!(claims["outcome"], "success");
    assert_eq!(claims["sub"], "dr-hosted");
    assert_eq!(claims["nonce"], "nonce-1");
    assert_eq!(claims["amr"], json!(["otp", "mfa"]));
    assert_eq!(claims["iat"], T0 + 120);
    assert_eq!(claims["exp"], T0 + 240);

    // The records say where the browser was: the address the host passed, not one it made up.
    let enrolled = h
        .audit_records()
        .into_iter()
        .find(|r| r["action"] == "enrolled")
        .expect("an enrolled record");
    assert_eq!(enrolled["ip"], "198.51.100.23");

    // Next time, this browser comes straight back.
    let request = prompt_request("jti-2", T0 + 120);
    api.page(&mut jar, "GET", &format!("/prompt?request={request}"), "")
        .await;
    let back = api.page(&mut jar, "GET", "/prompt/step", "").await;
    assert_eq!(back.status, 303);
    assert!(back.header("location")[0].starts_with(RETURN_TO));

    // A browser with no session gets the expired page.
    let stale = api
        .page(&mut Jar::default(), "POST", "/prompt/cancel", "csrf=x")
        .await;
    assert_eq!(stale.status, 410);
}
