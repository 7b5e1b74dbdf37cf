//! The HTTP API of every node (DESIGN.md §10), on actix-web. Handlers are thin: they parse,
//! hand the work to the node (committer queue, read pool, actor), and map errors to
//! `{"error": code, "message": ...}` with a fitting status.

mod admin;
mod api;
mod dashboard;
pub mod metrics;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

use crate::actors::slot::NodeSlot;
use actix::Addr;

use crate::actors::supervisor::SupervisorActor;
use crate::config::{ConfigCell, NodeConfig};
use crate::error::{Error, Result};

/// Largest request body accepted.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// HTTP worker threads per node: the API's work is queued to the node, not done here.
pub const HTTP_WORKERS: usize = 2;

/// What every handler reaches.
pub struct ApiState {
    pub cell: Arc<ConfigCell>,
    pub node: NodeConfig,
    /// The node: its running incarnation changes with its role.
    pub slot: Arc<NodeSlot>,
    /// Carries out reloads for the whole process.
    pub supervisor: Addr<SupervisorActor>,
}

/// Who may call the API (`api_token_file`, `api_token_reads`).
#[derive(Clone)]
struct Access {
    token: Option<std::sync::Arc<String>>,
    reads_too: bool,
}

impl Access {
    /// Whether `method path` needs the token: writes and admin routes always, reads when
    /// `api_token_reads` says (the dashboard page itself is static and carries no data).
    fn needs_token(&self, method: &actix_web::http::Method, path: &str) -> bool {
        // Admin routes and backups (the whole database) are guarded like writes.
        let write = (*method != actix_web::http::Method::GET && path != "/v1/query")
            || path.starts_with("/v1/admin/")
            || path == "/v1/backup";
        self.token.is_some() && (write || (self.reads_too && path != "/"))
    }

    /// None if allowed, else the JSON refusal: 401 without a token, 403 with a wrong one.
    fn check(&self, req: &actix_web::dev::ServiceRequest) -> Option<HttpResponse> {
        use subtle::ConstantTimeEq;
        if !self.needs_token(req.method(), req.path()) {
            return None;
        }
        let expected = self.token.as_ref()?;
        let given = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => Some(HttpResponse::Unauthorized().json(json!({ "error": "unauthorized", "message": "this route needs the API token: send `Authorization: Bearer <token>` (the content of the api_token_file of the configuration)" }))),
            Some(t) if bool::from(t.as_bytes().ct_eq(expected.as_bytes())) => None,
            Some(_) => Some(HttpResponse::Forbidden().json(json!({ "error": "forbidden", "message": "wrong API token" }))),
        }
    }
}

/// Binds the node's HTTP address and starts serving; returns the server's handle.
pub fn serve(
    cell: Arc<ConfigCell>,
    node: NodeConfig,
    slot: Arc<NodeSlot>,
    supervisor: Addr<SupervisorActor>,
) -> Result<actix_web::dev::ServerHandle> {
    let bind = node.http;
    let name = node.name.clone();
    let tls = slot.identity.tls.clone();
    let config = cell.get();
    let access = Access {
        token: config.read_api_token()?.map(std::sync::Arc::new),
        reads_too: config.cluster.api_token_reads,
    };
    let state = web::Data::new(ApiState {
        cell,
        node,
        slot,
        supervisor,
    });
    let server = HttpServer::new(move || {
        let access = access.clone();
        App::new()
            .wrap_fn(move |req, srv| {
                use actix_web::dev::Service;
                let (refused, call) = match access.check(&req) {
                    Some(refusal) => (Some(req.into_response(refusal)), None),
                    None => (None, Some(srv.call(req))),
                };
                async move {
                    match (refused, call) {
                        (Some(r), _) => Ok(r.map_into_right_body()),
                        (None, Some(call)) => call.await.map(|r| r.map_into_left_body()),
                        (None, None) => unreachable!("either refused or called"),
                    }
                }
            })
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(MAX_REQUEST_BYTES))
            .service(post("/v1/execute").to(api::execute))
            .service(post("/v1/query").to(api::query))
            .service(get("/v1/status").to(api::status))
            .service(get("/v1/cluster").to(api::cluster))
            .service(post("/v1/admin/reload").to(api::reload))
            .service(post("/v1/admin/promote").to(admin::promote))
            .service(post("/v1/admin/switchover").to(admin::switchover))
            .service(post("/v1/admin/rejoin").to(admin::rejoin))
            .service(post("/v1/admin/writes").to(admin::writes))
            .service(get("/v1/admin/promotions").to(admin::promotions))
            .service(get("/v1/log/summary").to(admin::log_summary))
            .service(get("/v1/log").to(admin::log_list))
            .service(get("/v1/backup").to(admin::backup))
            .service(get("/v1/log/show").to(admin::log_show))
            .service(post("/v1/admin/pause").to(admin::pause))
            .service(post("/v1/admin/resume").to(admin::resume))
            .service(post("/v1/admin/apply-until").to(admin::apply_until))
            .service(get("/v1/events").to(api::events))
            .service(get("/v1/history").to(api::history))
            .service(get("/metrics").to(api::metrics))
            .service(get("/").to(dashboard::page))
            .wrap(ErrorHandlers::new().handler(StatusCode::PAYLOAD_TOO_LARGE, too_large))
            .default_service(web::to(api::not_found))
    })
    .workers(HTTP_WORKERS)
    .disable_signals();
    let https = match (config.cluster.http_tls, &tls) {
        (true, Some(t)) => Some(t.http.as_ref().clone()),
        _ => None,
    };
    let bound = match https {
        Some(tls) => server.bind_rustls_0_23(bind, tls),
        None => server.bind(bind),
    };
    let server = bound
        .map_err(|e| {
            Error::Config(format!(
                "node \"{name}\": cannot listen on http {bind}: {e} (is another process using it?)"
            ))
        })?
        .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}

/// A route answering `method` only; any other method gets a JSON 405 naming the right one.
struct OneMethod {
    path: &'static str,
    method: actix_web::http::Method,
}

fn post(path: &'static str) -> OneMethod {
    OneMethod {
        path,
        method: actix_web::http::Method::POST,
    }
}

fn get(path: &'static str) -> OneMethod {
    OneMethod {
        path,
        method: actix_web::http::Method::GET,
    }
}

impl OneMethod {
    fn to<F, Args>(self, handler: F) -> actix_web::Resource
    where
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        let expected = self.method.to_string();
        web::resource(self.path)
            .route(web::method(self.method).to(handler))
            .default_service(web::to(move || {
                let message = format!("use {expected} on this route");
                async move {
                    HttpResponse::MethodNotAllowed()
                        .json(json!({ "error": "method_not_allowed", "message": message }))
                }
            }))
    }
}

/// Bodies over [`MAX_REQUEST_BYTES`] get a JSON answer too (a handler's own JSON 413, such
/// as an answer over `max_result_bytes`, is kept).
fn too_large<B>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let json = res
        .response()
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let (req, _) = res.into_parts();
    let body = json!({ "error": "too_large", "message": format!("the request body is over {} MiB; split the batch", MAX_REQUEST_BYTES >> 20) });
    let res = HttpResponse::PayloadTooLarge()
        .json(body)
        .map_into_right_body();
    Ok(ErrorHandlerResponse::Response(
        actix_web::dev::ServiceResponse::new(req, res),
    ))
}

/// The JSON error answer for `err`.
pub fn error_response(err: &Error) -> HttpResponse {
    let status = match err {
        Error::InvalidInput(_)
        | Error::Sql(_)
        | Error::NotReadOnly
        | Error::NotAllowed(_)
        | Error::TimeLimit(_)
        | Error::Config(_) => StatusCode::BAD_REQUEST,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::NotPrimary { .. } => StatusCode::MISDIRECTED_REQUEST,
        Error::Unavailable(_) | Error::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::InvalidData(_) | Error::Diverged(_) | Error::Io { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let mut body = json!({ "error": err.code(), "message": err.to_string() });
    if let Error::NotPrimary { primary } = err {
        body["primary"] = json!(primary);
    }
    let mut answer = HttpResponse::build(status);
    if let Error::Busy(_) = err {
        answer.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
    }
    answer.json(body)
}
