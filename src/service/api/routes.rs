//! The route table, dispatch (draining, 404/405, auth, body rules) and the handlers. Handlers
//! validate everything before anything reaches `pct`; refusals carry their exact status code.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::auth::{self, Verdict};
use super::conf::{self, ConfFacts};
use super::http::{Request, Response};
use super::tasks::{Refusal, Steps};
use super::validate::{self as v, FieldError, Fields, Source, LXC_ID, NEW_LXC_ID, NEW_LXC_NAME};
use super::{openapi, Mutation, Quick, Shared};
use crate::act::pct::{self, CommandRunner};

/// How long a quick change may wait for the loop (it may be in the middle of a cycle).
pub const QUICK_WAIT: Duration = Duration::from_secs(120);
/// A task's `pct` call gets this long before it is killed (clones of large disks are slow).
pub const TASK_PCT_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest hold an API call may ask for: a year.
const MAX_HOLD_SECS: i64 = 365 * 24 * 3600;

pub type Handler = fn(&Ctx, &Request) -> Response;

/// A request's context: the shared state and who is asking.
pub struct Ctx<'a> {
    pub shared: &'a Arc<Shared>,
    /// `127.0.0.1` or `uid 0`: rate-limit key and the caller recorded in events.
    pub peer: &'a str,
}

/// One documented parameter (query for GET, JSON body field otherwise).
pub struct Param {
    pub name: &'static str,
    /// JSON schema type: `integer` or `string`.
    pub kind: &'static str,
    pub required: bool,
}

/// What answering a route costs. The accept thread answers a request itself, when its whole head
/// came with the connection, only if that cannot keep it from accepting for long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// From memory (the published view, the task table, a fixed list): no file, no `pct`.
    Memory,
    /// Reads files, runs `pct` or renders: a worker's job.
    Work,
}

/// True when the accept thread may answer `route` now.
pub fn answers_now(route: &Route) -> bool {
    route.cost == Cost::Memory
}

pub struct Route {
    pub method: &'static str,
    /// `{task_id}` matches one path segment.
    pub path: &'static str,
    pub auth: bool,
    pub summary: &'static str,
    pub params: &'static [Param],
    /// Whether the accept thread may answer it itself (`answers_now`).
    pub cost: Cost,
    pub handler: Handler,
}

const fn p(name: &'static str, kind: &'static str, required: bool) -> Param {
    Param {
        name,
        kind,
        required,
    }
}

const ID: Param = p("lxc_id", "integer", true);

pub static ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/health",
        auth: false,
        summary: "liveness and the last cycle time",
        params: &[],
        cost: Cost::Memory,
        handler: health,
    },
    Route {
        method: "GET",
        path: "/health/check",
        auth: false,
        summary: "alias of /health",
        params: &[],
        cost: Cost::Memory,
        handler: health,
    },
    Route {
        method: "GET",
        path: "/routes",
        auth: true,
        summary: "the route list",
        params: &[],
        cost: Cost::Memory,
        handler: routes_list,
    },
    Route {
        method: "GET",
        path: "/openapi.json",
        auth: true,
        summary: "this API as OpenAPI 3",
        params: &[],
        cost: Cost::Work,
        handler: openapi_doc,
    },
    Route {
        method: "GET",
        path: "/containers",
        auth: true,
        summary: "every container, as `status --json` shows it",
        params: &[],
        cost: Cost::Memory,
        handler: containers,
    },
    Route {
        method: "GET",
        path: "/resource/lxc/status",
        auth: true,
        summary: "a container's figures from the last cycle",
        params: &[ID],
        cost: Cost::Memory,
        handler: lxc_status,
    },
    Route {
        method: "GET",
        path: "/resource/vm/status",
        auth: true,
        summary: "alias of /resource/lxc/status",
        params: &[ID],
        cost: Cost::Memory,
        handler: lxc_status,
    },
    Route {
        method: "GET",
        path: "/resource/lxc/config",
        auth: true,
        summary: "cores, cpulimit, memory, swap, rootfs size and tags from the conf",
        params: &[ID],
        cost: Cost::Work,
        handler: lxc_config,
    },
    Route {
        method: "GET",
        path: "/resource/vm/config",
        auth: true,
        summary: "alias of /resource/lxc/config",
        params: &[ID],
        cost: Cost::Work,
        handler: lxc_config,
    },
    Route {
        method: "GET",
        path: "/resource/node/status",
        auth: true,
        summary: "host figures from the last cycle",
        params: &[],
        cost: Cost::Memory,
        handler: node_status,
    },
    Route {
        method: "GET",
        path: "/cluster/status",
        auth: true,
        summary: "every node's status file merged (cluster mode), as `status --cluster --json`",
        params: &[],
        cost: Cost::Work,
        handler: cluster_status,
    },
    Route {
        method: "GET",
        path: "/metrics",
        auth: true,
        summary: "Prometheus exposition",
        params: &[],
        cost: Cost::Work,
        handler: metrics,
    },
    Route {
        method: "GET",
        path: "/tasks/{task_id}",
        auth: true,
        summary: "a long operation's state",
        params: &[],
        cost: Cost::Memory,
        handler: task_get,
    },
    Route {
        method: "POST",
        path: "/scale/cores",
        auth: true,
        summary: "pct set <id> -cores <n>",
        params: &[
            ID,
            p("cores", "integer", true),
            p("hold_seconds", "integer", false),
        ],
        cost: Cost::Work,
        handler: scale_cores,
    },
    Route {
        method: "POST",
        path: "/scale/ram",
        auth: true,
        summary: "pct set <id> -memory <mb>",
        params: &[
            ID,
            p("memory", "integer", true),
            p("hold_seconds", "integer", false),
        ],
        cost: Cost::Work,
        handler: scale_ram,
    },
    Route {
        method: "POST",
        path: "/scale/storage/increase",
        auth: true,
        summary: "task: pct resize <id> rootfs +<n>G (api.allow_storage)",
        params: &[ID, p("disk_size", "integer", true)],
        cost: Cost::Work,
        handler: storage_increase,
    },
    Route {
        method: "POST",
        path: "/snapshot/create",
        auth: true,
        summary: "pct snapshot <id> <name>",
        params: &[
            ID,
            p("snapshot_name", "string", true),
            p("description", "string", false),
        ],
        cost: Cost::Work,
        handler: snapshot_create,
    },
    Route {
        method: "GET",
        path: "/snapshot/list",
        auth: true,
        summary: "snapshots from the conf",
        params: &[ID],
        cost: Cost::Work,
        handler: snapshot_list,
    },
    Route {
        method: "POST",
        path: "/snapshot/rollback",
        auth: true,
        summary: "task: pct rollback <id> <name> (api.allow_snapshot_rollback)",
        params: &[
            ID,
            p("snapshot_name", "string", true),
            p("confirm", "integer", true),
        ],
        cost: Cost::Work,
        handler: snapshot_rollback,
    },
    Route {
        method: "POST",
        path: "/clone/create",
        auth: true,
        summary: "task: clone a container (api.allow_clone)",
        params: &[
            ID,
            p("new_lxc_id", "integer", true),
            p("new_lxc_name", "string", true),
        ],
        cost: Cost::Work,
        handler: clone_create,
    },
    Route {
        method: "DELETE",
        path: "/clone/delete",
        auth: true,
        summary: "task: stop and destroy a clone (api.allow_destroy)",
        params: &[ID, p("confirm", "integer", true)],
        cost: Cost::Work,
        handler: clone_delete,
    },
];

/// `{"status":"success","data":…}`.
pub fn ok(status: u16, data: Value) -> Response {
    Response::json(status, &json!({"status": "success", "data": data}))
}

/// `{"status":"error","message":…,"errors":[…]}`.
pub fn error(status: u16, message: &str, errors: Vec<FieldError>) -> Response {
    Response::json(
        status,
        &json!({"status": "error", "message": message, "errors": errors}),
    )
}

fn field_error(status: u16, field: &str, message: &str) -> Response {
    let errors = vec![FieldError {
        field: field.into(),
        message: message.into(),
    }];
    error(status, &format!("{field}: {message}"), errors)
}

fn path_matches(pattern: &str, path: &str) -> bool {
    match pattern.split_once('{') {
        Some((prefix, _)) => path
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')),
        None => pattern == path,
    }
}

/// What the log shows of a request's path: the pattern of the route it names, never the path
/// itself, which a client may have put anything in (a token, percent-encoded or not).
pub fn shown_path(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| path_matches(r.path, path))
        .map_or("(no such route)", |r| r.path)
}

/// Answers one whole request.
pub fn handle(shared: &Arc<Shared>, peer: &str, req: &Request) -> Response {
    match admit(shared, peer, req) {
        Ok(route) => dispatch(route, shared, peer, req),
        Err(refused) => refused,
    }
}

/// Everything that can be decided from the head alone, before a body is read: draining (503),
/// the route (404, 405), the credential (401, 403, 429) and a JSON content type (415). Its
/// answer decides whether an `Expect: 100-continue` client is told to send the body.
pub fn admit(shared: &Arc<Shared>, peer: &str, req: &Request) -> Result<&'static Route, Response> {
    if shared.draining.load(Ordering::SeqCst) {
        return Err(error(503, "the daemon is stopping", Vec::new())
            .with_header("Retry-After", "30".into()));
    }
    let mut candidates = ROUTES
        .iter()
        .filter(|r| path_matches(r.path, &req.path))
        .peekable();
    if candidates.peek().is_none() {
        return Err(error(404, "no such route; see GET /routes", Vec::new()));
    }
    let candidates: Vec<&'static Route> = candidates.collect();
    let Some(route) = candidates.iter().find(|r| r.method == req.method) else {
        let allow: Vec<&str> = candidates.iter().map(|r| r.method).collect();
        return Err(error(
            405,
            &format!("method {} not allowed", req.method),
            Vec::new(),
        )
        .with_header("Allow", allow.join(", ")));
    };
    if route.auth {
        if let Some(refused) = authorize(shared, peer, req) {
            return Err(refused);
        }
    }
    if route.method != "GET" {
        json_content_type(req)?;
    }
    Ok(route)
}

/// Runs an admitted request's handler.
pub fn dispatch(route: &Route, shared: &Arc<Shared>, peer: &str, req: &Request) -> Response {
    (route.handler)(&Ctx { shared, peer }, req)
}

/// `None` when the request may proceed; otherwise 401, 403 or 429.
fn authorize(shared: &Shared, peer: &str, req: &Request) -> Option<Response> {
    let settings = shared.settings();
    let verdict = auth::check(settings.token.as_ref(), req);
    if verdict == Verdict::Allowed {
        return None;
    }
    let now = Instant::now();
    if let Some(secs) = shared.limiter.blocked_for(peer, now) {
        let body = json!({"status": "error", "message": "too many failed attempts", "errors": [], "retry_after_seconds": secs});
        return Some(Response::json(429, &body).with_header("Retry-After", secs.to_string()));
    }
    shared.limiter.record_failure(peer, now);
    Some(match verdict {
        Verdict::Missing => error(
            401,
            "a token is required: Authorization: Bearer <token>",
            Vec::new(),
        )
        .with_header("WWW-Authenticate", "Bearer".into()),
        _ => error(403, "wrong token", Vec::new()),
    })
}

/// 415 unless the request says `Content-Type: application/json` (parameters such as `charset`
/// allowed).
fn json_content_type(req: &Request) -> Result<(), Response> {
    let ct = req.header("content-type").unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(error(
        415,
        "the body must be Content-Type: application/json",
        Vec::new(),
    ))
}

/// The JSON object of a POST or DELETE body: 415 for another type, 400 when it is not an object.
fn json_body(req: &Request) -> Result<Map<String, Value>, Response> {
    json_content_type(req)?;
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error(400, "the body must be a JSON object", Vec::new())),
        Err(_) => Err(error(400, "the body is not valid JSON", Vec::new())),
    }
}

fn finish(f: Fields) -> Result<(), Response> {
    f.finish().map_err(|(code, errs)| {
        let msg = errs
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        error(code, &msg, errs)
    })
}

fn health(ctx: &Ctx, _: &Request) -> Response {
    let view = ctx.shared.view();
    Response::json(200, &json!({"status": "ok", "last_cycle": view.cycle_at}))
}

fn routes_list(_: &Ctx, _: &Request) -> Response {
    let list: Vec<Value> = ROUTES
        .iter()
        .map(|r| json!({"method": r.method, "path": r.path, "auth": r.auth, "summary": r.summary}))
        .collect();
    ok(200, Value::Array(list))
}

fn openapi_doc(_: &Ctx, _: &Request) -> Response {
    Response::json(200, &openapi::document())
}

fn not_ready() -> Response {
    error(503, "the first cycle has not finished yet", Vec::new())
        .with_header("Retry-After", "5".into())
}

fn containers(ctx: &Ctx, _: &Request) -> Response {
    let view = ctx.shared.view();
    if view.cycle_at.is_none() {
        return not_ready();
    }
    Response::shared(200, "application/json", Arc::clone(&view.containers.body))
}

/// The cluster's status files merged; 404 outside cluster mode.
fn cluster_status(ctx: &Ctx, _: &Request) -> Response {
    let Some(root) = ctx.shared.settings().pve_root.clone() else {
        return error(404, "not in cluster mode: no cluster status", Vec::new());
    };
    let now = chrono::Utc::now().timestamp_micros();
    match crate::record::cluster_status::read_cluster(&root, now) {
        Ok(view) => Response::json(200, &json!(view)),
        Err(e) => error(500, &format!("{e:#}"), Vec::new()),
    }
}

/// The `lxc_id` of a GET.
fn query_vmid(req: &Request) -> Result<u32, Response> {
    let mut f = Fields::new(Source::Query(&req.query));
    let vmid = f.vmid(LXC_ID);
    finish(f)?;
    Ok(vmid.unwrap_or_default())
}

fn lxc_status(ctx: &Ctx, req: &Request) -> Response {
    let vmid = match query_vmid(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let view = ctx.shared.view();
    if view.cycle_at.is_none() {
        return not_ready();
    }
    match super::view::status_body(&view, vmid) {
        Some(body) => Response::shared(200, "application/json", body),
        None => field_error(
            404,
            "lxc_id",
            &format!("container {vmid} is not running or unknown"),
        ),
    }
}

/// The conf of an existing container: 404 when there is none.
fn facts_of(ctx: &Ctx, vmid: u32) -> Result<ConfFacts, Response> {
    let dir = ctx.shared.settings().pve_lxc_dir.clone();
    match conf::read_facts(&dir, vmid) {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(field_error(
            404,
            "lxc_id",
            &format!("container {vmid} does not exist"),
        )),
        Err(e) => Err(error(
            500,
            &format!("cannot read the conf of container {vmid}: {e}"),
            Vec::new(),
        )),
    }
}

fn lxc_config(ctx: &Ctx, req: &Request) -> Response {
    let vmid = match query_vmid(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match facts_of(ctx, vmid) {
        Ok(f) => ok(200, f.config_json(vmid)),
        Err(r) => r,
    }
}

fn snapshot_list(ctx: &Ctx, req: &Request) -> Response {
    let vmid = match query_vmid(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match facts_of(ctx, vmid) {
        Ok(f) => ok(
            200,
            json!({"lxc_id": vmid, "snapshots": f.snapshots_json()}),
        ),
        Err(r) => r,
    }
}

fn node_status(ctx: &Ctx, _: &Request) -> Response {
    let view = ctx.shared.view();
    if view.cycle_at.is_none() {
        return not_ready();
    }
    Response::shared(200, "application/json", Arc::clone(&view.node_body))
}

fn metrics(ctx: &Ctx, _: &Request) -> Response {
    ctx.shared.metrics_scraped.store(true, Ordering::Relaxed);
    let p = ctx.shared.published();
    match p.view.exposition(&p.anomaly, &p.cluster) {
        Ok(text) => Response::shared(200, "text/plain; version=0.0.4", Arc::new(text)),
        Err(e) => error(500, &format!("{e:#}"), Vec::new()),
    }
}

fn task_get(ctx: &Ctx, req: &Request) -> Response {
    let id = req.path.trim_start_matches("/tasks/");
    match ctx.shared.tasks.get(id) {
        Some(t) => ok(200, t.to_json()),
        None => field_error(404, "task_id", "no such task"),
    }
}

/// A container a change may be made to: it exists, is not locked and no `pct` call runs on it.
fn changeable(ctx: &Ctx, vmid: u32) -> Result<ConfFacts, Response> {
    // Host figures and running containers come from the first cycle.
    if ctx.shared.view().cycle_at.is_none() {
        return Err(not_ready());
    }
    let facts = facts_of(ctx, vmid)?;
    if let Some(lock) = facts.lock() {
        return Err(field_error(
            409,
            "lxc_id",
            &format!("container {vmid} is locked ({lock})"),
        ));
    }
    if ctx.shared.tasks.is_busy(vmid) {
        return Err(field_error(
            409,
            "lxc_id",
            &format!("a task on container {vmid} is running"),
        ));
    }
    Ok(facts)
}

/// 403 naming the key when an `allow_*` switch is off.
fn allowed(on: bool, key: &str) -> Result<(), Response> {
    if on {
        return Ok(());
    }
    Err(error(
        403,
        &format!("{key} is false: this operation is disabled"),
        Vec::new(),
    ))
}

fn hold_secs(ctx: &Ctx, f: &mut Fields) -> u64 {
    f.int_in(&["hold_seconds"], 0, MAX_HOLD_SECS, false)
        .map_or(ctx.shared.settings().api.manual_hold, |n| n as u64)
}

/// Sends a quick change to the loop and waits for its answer.
fn run_quick(ctx: &Ctx, op: Quick) -> Response {
    run_quick_within(ctx, op, QUICK_WAIT)
}

/// `run_quick` waiting at most `wait` for the loop to take the change. One it has not taken by
/// then never runs (503); one it has taken is waited for to the end: `pct` is running.
pub fn run_quick_within(ctx: &Ctx, op: Quick, wait: Duration) -> Response {
    let (tx, rx) = mpsc::channel();
    let m = Mutation::new(op, ctx.peer.to_string(), tx);
    let state = Arc::clone(&m.state);
    if !ctx.shared.link.mutate(m) {
        return error(503, "the daemon is stopping", Vec::new());
    }
    if let Ok(r) = rx.recv_timeout(wait) {
        return r;
    }
    if super::give_up(&state) {
        return error(
            503,
            "the daemon did not take the change in time; it was not made",
            Vec::new(),
        );
    }
    rx.recv().unwrap_or_else(|_| {
        error(
            500,
            "the daemon took the change but sent no answer",
            Vec::new(),
        )
    })
}

fn scale_cores(ctx: &Ctx, req: &Request) -> Response {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let view = ctx.shared.view();
    // The bounds come from the first cycle's host figures.
    if view.cycle_at.is_none() {
        return not_ready();
    }
    let host_cpus = view.host_cpus.unwrap_or(1);
    let mut f = Fields::new(Source::Json(&body));
    let vmid = f.vmid(LXC_ID);
    let cores = f.int_in(&["cores"], 1, i64::from(host_cpus), true);
    let hold = hold_secs(ctx, &mut f);
    if let Err(r) = finish(f) {
        return r;
    }
    let (vmid, cores) = (vmid.unwrap_or_default(), cores.unwrap_or_default() as u32);
    if let Err(r) = changeable(ctx, vmid) {
        return r;
    }
    run_quick(
        ctx,
        Quick::Cores {
            vmid,
            cores,
            hold_secs: hold,
        },
    )
}

fn scale_ram(ctx: &Ctx, req: &Request) -> Response {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let view = ctx.shared.view();
    if view.cycle_at.is_none() {
        return not_ready();
    }
    let host_mb = view.host_memory_mb.unwrap_or(v::MIN_MEMORY_MB) as i64;
    let mut f = Fields::new(Source::Json(&body));
    let vmid = f.vmid(LXC_ID);
    let memory = f.int_in(&["memory"], v::MIN_MEMORY_MB as i64, host_mb, true);
    let hold = hold_secs(ctx, &mut f);
    if let Err(r) = finish(f) {
        return r;
    }
    let (vmid, memory_mb) = (vmid.unwrap_or_default(), memory.unwrap_or_default() as u64);
    if let Err(r) = changeable(ctx, vmid) {
        return r;
    }
    if let Some(m) = view.memory(vmid) {
        let floor = m.floor_mb();
        if memory_mb < floor {
            let ws = m
                .working_set_mb
                .map_or_else(|| "unknown".into(), |w| format!("{w:.0} MB"));
            let msg = format!(
                "{memory_mb} MB is below what container {vmid} needs (used {:.0} MB, working set {ws}) plus a margin: at least {floor} MB",
                m.used_mb
            );
            return field_error(409, "memory", &msg);
        }
    }
    run_quick(
        ctx,
        Quick::Memory {
            vmid,
            memory_mb,
            hold_secs: hold,
        },
    )
}

fn snapshot_create(ctx: &Ctx, req: &Request) -> Response {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut f = Fields::new(Source::Json(&body));
    let vmid = f.vmid(LXC_ID);
    let name = f.checked(&["snapshot_name"], true, v::snapshot_name);
    let description = f.checked(&["description"], false, v::description);
    if let Err(r) = finish(f) {
        return r;
    }
    let (vmid, name) = (vmid.unwrap_or_default(), name.unwrap_or_default());
    match changeable(ctx, vmid) {
        Ok(facts) if facts.snapshots.iter().any(|s| s.name == name) => field_error(
            409,
            "snapshot_name",
            &format!("container {vmid} already has a snapshot `{name}`"),
        ),
        Ok(_) => run_quick(
            ctx,
            Quick::Snapshot {
                vmid,
                name,
                description,
            },
        ),
        Err(r) => r,
    }
}

/// Starts a task with a `pct` runner of its own; 202 with its id.
fn start_task(ctx: &Ctx, kind: &'static str, vmids: Vec<u32>, steps: Steps) -> Response {
    let settings = ctx.shared.settings();
    let runner = Box::new(CommandRunner {
        path: settings.pct_path.clone(),
        timeout: TASK_PCT_TIMEOUT,
    });
    let shared = Arc::clone(ctx.shared);
    let done = Box::new(move |d| shared.link.task_done(d));
    match ctx
        .shared
        .tasks
        .start(kind, vmids, ctx.peer.to_string(), runner, steps, done)
    {
        Ok(id) => ok(202, json!({"task_id": id})),
        Err(Refusal::Busy(v)) => field_error(
            409,
            "lxc_id",
            &format!("a pct call on container {v} is running"),
        ),
        Err(Refusal::Full) => error(503, "too many tasks are running", Vec::new()),
    }
}

/// One argv, or the task fails naming the command (a value that cannot be an argv).
fn argv(a: Option<Vec<String>>, what: &str) -> Result<Vec<String>, String> {
    a.ok_or_else(|| format!("refused to build the {what} command"))
}

fn storage_increase(ctx: &Ctx, req: &Request) -> Response {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = allowed(ctx.shared.settings().api.allow_storage, "api.allow_storage") {
        return r;
    }
    let mut f = Fields::new(Source::Json(&body));
    let vmid = f.vmid(LXC_ID);
    let gb = f.int_in(&["disk_size"], 1, 1024, true);
    if let Err(r) = finish(f) {
        return r;
    }
    let (vmid, gb) = (vmid.unwrap_or_default(), gb.unwrap_or_default() as u32);
    if let Err(r) = changeable(ctx, vmid) {
        return r;
    }
    let steps: Steps = Box::new(move |s| {
        s.run(&argv(pct::resize_argv(vmid, gb), "resize")?)?;
        Ok(format!("rootfs of container {vmid} grown by {gb} GB"))
    });
    start_task(ctx, "storage", vec![vmid], steps)
}

/// `confirm` must repeat the container's id.
fn confirm(f: &mut Fields, vmid: Option<u32>) {
    if let Some((name, c)) = f.int(&["confirm"], true) {
        if vmid.is_some_and(|v| i64::from(v) != c) {
            f.value_error(name, "must equal lxc_id".into());
        }
    }
}

fn snapshot_rollback(ctx: &Ctx, req: &Request) -> Response {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let on = ctx.shared.settings().api.allow_snapshot_rollback;
    if let Err(r) = allowed(on, "api.allow_snapshot_rollback") {
        return r;
    }
    let mut f = Fields::new(Source::Json(&body));
    let vmid = f.vmid(LXC_ID);
    let name = f.checked(&["snapshot_name"], true, v::snapshot_name);
    confirm(&mut f, vmid);
    if let Err(r) = finish(f) {
        return r;
    }
    let (vmid, name) = (vmid.unwrap_or_default(), name.unwrap_or_default());
    match changeable(ctx, vmid) {
        Ok(facts) if !facts.snapshots.iter().any(|s| s.name == name) => {
            return field_error(
                404,
                "snapshot_name",
                &format!("container {vmid} has no snapshot `{name}`"),
            );
        }
        Ok(_) => {}
        Err(r) => return r,
    }
    let steps: Steps = Box::new(move |s| {
        s.run(&argv(pct::rollback_argv(vmid, &name), "rollback")?)?;
        Ok(format!("container {vmid} rolled back to `{name}`"))
    });
    start_task(ctx, "rollback", vec![vmid], steps)
}

fn clone_create(ctx: &Ctx, req: &Request) -> Response {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = allowed(ctx.shared.settings().api.allow_clone, "api.allow_clone") {
        return r;
    }
    let mut f = Fields::new(Source::Json(&body));
    let vmid = f.vmid(LXC_ID);
    let new = f.vmid(NEW_LXC_ID);
    let name = f.checked(NEW_LXC_NAME, true, v::hostname);
    if let (Some(a), Some(b)) = (vmid, new) {
        if a == b {
            f.value_error("new_lxc_id", "must differ from lxc_id".into());
        }
    }
    if let Err(r) = finish(f) {
        return r;
    }
    let (src, new, name) = (
        vmid.unwrap_or_default(),
        new.unwrap_or_default(),
        name.unwrap_or_default(),
    );
    let facts = match changeable(ctx, src) {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(r) = id_free(ctx, new) {
        return r;
    }
    let settings = ctx.shared.settings();
    let cgroup = settings.cgroup_root.join(src.to_string());
    let dir = settings.pve_lxc_dir.clone();
    let steps = clone_steps(src, (new, name), cgroup, facts.tags(), dir);
    start_task(ctx, "clone", vec![src, new], steps)
}

/// 409 when `new` is taken in the cluster list or has a local conf, or either cannot be read.
fn id_free(ctx: &Ctx, new: u32) -> Result<(), Response> {
    let s = ctx.shared.settings();
    let local = conf::read_facts(&s.pve_lxc_dir, new).map_or(true, |f| f.is_some());
    if local || conf::vmlist_has(&s.pve_vmlist, new) || ctx.shared.tasks.is_busy(new) {
        return Err(field_error(
            409,
            "new_lxc_id",
            &format!(
                "id {new} is already in use, or the cluster's VM list or its conf cannot be read"
            ),
        ));
    }
    Ok(())
}

/// Only a conf of `vmid` that reads confirms that `pct clone` made it.
fn cloned_conf(dir: &Path, new: u32) -> Result<(), String> {
    match conf::read_facts(dir, new) {
        Ok(Some(_)) => Ok(()),
        _ => Err(format!(
            "pct clone exited 0 but container {new} has no conf"
        )),
    }
}

fn clone_steps(
    src: u32,
    (new, name): (u32, String),
    cgroup: PathBuf,
    tags: Vec<String>,
    dir: PathBuf,
) -> Steps {
    Box::new(move |s| {
        // Whether the source runs now: it may have started or stopped since the last cycle.
        if cgroup.is_dir() {
            let snap = format!("autoscale-clone-{new}");
            s.run(&argv(pct::snapshot_argv(src, &snap, None), "snapshot")?)?;
            let cloned = argv(pct::clone_argv(src, new, &name, Some(&snap)), "clone")
                .and_then(|a| s.run(&a))
                .and_then(|()| cloned_conf(&dir, new));
            // The helper snapshot goes whether or not the clone worked.
            let deleted =
                argv(pct::delsnapshot_argv(src, &snap), "delsnapshot").and_then(|a| s.run(&a));
            cloned?;
            deleted.map_err(|e| format!("cloned, but the helper snapshot stayed: {e}"))?;
        } else {
            s.run(&argv(pct::clone_argv(src, new, &name, None), "clone")?)?;
            cloned_conf(&dir, new)?;
        }
        let mut tags = tags;
        if !tags.iter().any(|t| t == pct::CLONE_TAG) {
            tags.push(pct::CLONE_TAG.to_string());
        }
        s.run(&argv(pct::set_tags_argv(new, &tags), "set -tags")?)?;
        Ok(format!("container {src} cloned to {new} ({name})"))
    })
}

fn clone_delete(ctx: &Ctx, req: &Request) -> Response {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = allowed(ctx.shared.settings().api.allow_destroy, "api.allow_destroy") {
        return r;
    }
    let mut f = Fields::new(Source::Json(&body));
    let vmid = f.vmid(LXC_ID);
    confirm(&mut f, vmid);
    if let Err(r) = finish(f) {
        return r;
    }
    let vmid = vmid.unwrap_or_default();
    let facts = match changeable(ctx, vmid) {
        Ok(f) => f,
        Err(r) => return r,
    };
    if !facts.tags().iter().any(|t| t == pct::CLONE_TAG) {
        return field_error(
            409,
            "lxc_id",
            &format!(
                "container {vmid} is not tagged {}: only clones made here may be destroyed",
                pct::CLONE_TAG
            ),
        );
    }
    if facts.protected() {
        return field_error(
            409,
            "lxc_id",
            &format!("container {vmid} has protection: 1"),
        );
    }
    let settings = ctx.shared.settings();
    let cgroup = settings.cgroup_root.join(vmid.to_string());
    let dir = settings.pve_lxc_dir.clone();
    let steps: Steps = Box::new(move |s| {
        // Whether it runs now: it may have started or stopped since the last cycle.
        if cgroup.is_dir() {
            s.run(&argv(pct::stop_argv(vmid), "stop")?)?;
        }
        s.run(&argv(pct::destroy_argv(vmid), "destroy")?)?;
        // Only a conf that is gone confirms the destroy.
        if !matches!(conf::read_facts(&dir, vmid), Ok(None)) {
            return Err(format!(
                "pct destroy exited 0 but container {vmid} still has a conf"
            ));
        }
        Ok(format!("container {vmid} destroyed"))
    });
    start_task(ctx, "destroy", vec![vmid], steps)
}
