//! `GET /openapi.json`: an OpenAPI 3 description built from the route table, so it cannot drift.

use serde_json::{json, Map, Value};

use super::routes::{Route, ROUTES};

fn parameters(route: &Route) -> Value {
    let mut list: Vec<Value> = Vec::new();
    if route.path.contains("{task_id}") {
        list.push(json!({"name": "task_id", "in": "path", "required": true, "schema": {"type": "string"}}));
    }
    if route.method == "GET" {
        list.extend(route.params.iter().map(|p| {
            json!({"name": p.name, "in": "query", "required": p.required, "schema": {"type": p.kind}})
        }));
    }
    Value::Array(list)
}

fn body(route: &Route) -> Option<Value> {
    if route.method == "GET" {
        return None;
    }
    let props: Map<String, Value> = route
        .params
        .iter()
        .map(|p| (p.name.to_string(), json!({"type": p.kind})))
        .collect();
    let required: Vec<&str> = route
        .params
        .iter()
        .filter(|p| p.required)
        .map(|p| p.name)
        .collect();
    Some(json!({
        "required": true,
        "content": {"application/json": {"schema": {"type": "object", "properties": props, "required": required}}}
    }))
}

fn operation(route: &Route) -> Value {
    let mut op = json!({
        "summary": route.summary,
        "parameters": parameters(route),
        "responses": {
            "200": {"description": "success"},
            "202": {"description": "task started: data.task_id"},
            "400": {"description": "malformed JSON or a field of the wrong type"},
            "401": {"description": "no credential"},
            "403": {"description": "wrong token or a disabled feature"},
            "404": {"description": "unknown container or route"},
            "405": {"description": "wrong method; Allow lists the right ones"},
            "409": {"description": "locked container or another conflict"},
            "413": {"description": "body over 64 KiB"},
            "415": {"description": "body not Content-Type: application/json"},
            "422": {"description": "invalid field values, listed in errors"},
            "429": {"description": "too many failed attempts"},
            "500": {"description": "pct failed: its exit status and first stderr lines"},
            "503": {"description": "stopping or not ready"}
        }
    });
    if let Some(b) = body(route) {
        op["requestBody"] = b;
    }
    if !route.auth {
        op["security"] = json!([]);
    }
    op
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "lxc_autoscale", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        }},
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_with_its_method() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.0.3");
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {}", r.method, r.path);
        }
        let n: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(n, ROUTES.len());
        assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([]));
        let body = &doc["paths"]["/scale/cores"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"];
        assert_eq!(body["required"], json!(["lxc_id", "cores"]));
        let codes: Vec<&String> = doc["paths"]["/scale/cores"]["post"]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(
            codes,
            [
                "200", "202", "400", "401", "403", "404", "405", "409", "413", "415", "422", "429",
                "500", "503"
            ]
        );
    }
}
