//! The HTTP API of every node (DESIGN.md §10), on actix-web. Handlers are thin: they parse,
//! hand the work to the node (committer queue, read pool, actor), and map errors to
//! `{"error": code, "message": ...}` with a fitting status.

mod admin;
mod api;
pub mod body;
mod dashboard;
pub mod metrics;
mod state;
pub mod verify;
mod verify_sessions;

pub use state::{error_response, ApiState};

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

use crate::actors::node::slot::NodeSlot;

use crate::actors::messages::Supervisor;
use crate::config::{ConfigCell, NodeConfig};
use crate::error::{Error, Result};

/// Largest request body accepted.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// HTTP worker threads per node: the API's work is queued to the node, not done here.
pub const HTTP_WORKERS: usize = 2;

/// What a route serves, which decides who may call it when an API token is set
/// (`api_token_file`); docs/http-api.md lists each route's class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Static, carries no data (the dashboard page itself): open.
    Open,
    /// State and queries: open unless `api_token_reads`.
    Read,
    /// Row contents beyond the current state (the log's old values, the whole database):
    /// the token whenever one is set, as writes.
    Data,
    /// Writes and administration: the token whenever one is set.
    Admin,
}

/// Who may call the API (`api_token_file`, `api_token_reads`).
#[derive(Clone)]
struct Access {
    token: Option<std::sync::Arc<String>>,
    reads_too: bool,
}

impl Access {
    /// Whether a route of class `need` asks for the token.
    fn needs_token(&self, need: Need) -> bool {
        self.token.is_some()
            && match need {
                Need::Open => false,
                Need::Read => self.reads_too,
                Need::Data | Need::Admin => true,
            }
    }

    /// None if allowed, else the JSON refusal: 401 without a token, 403 with a wrong one.
    fn check(&self, need: Need, req: &actix_web::dev::ServiceRequest) -> Option<HttpResponse> {
        use subtle::ConstantTimeEq;
        if !self.needs_token(need) {
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
    supervisor: Supervisor,
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
        verify: Arc::default(),
    });
    let server = HttpServer::new(move || {
        // Authorization is decided on the route the router matched (each resource carries
        // its class), never on the raw path: `/v1/%62ackup` reaches the backup resource and
        // its check like `/v1/backup` does.
        let route = Routes {
            access: access.clone(),
        };
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(MAX_REQUEST_BYTES))
            .configure(|cfg| api_routes(cfg, &route))
            .configure(|cfg| admin_routes(cfg, &route))
            .configure(|cfg| verify_routes(cfg, &route))
            .configure(|cfg| watch_routes(cfg, &route))
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

/// Writes, queries, and the node's and the cluster's state.
fn api_routes(cfg: &mut web::ServiceConfig, route: &Routes) {
    cfg.service(route.post("/v1/execute", Need::Admin).to(api::execute))
        .service(route.post("/v1/query", Need::Read).to(api::query))
        .service(route.get("/v1/status", Need::Read).to(api::status))
        .service(route.get("/v1/cluster", Need::Read).to(api::cluster))
        .service(route.post("/v1/admin/reload", Need::Admin).to(api::reload));
}

/// Promotion, rejoin, the log, backups, and holding a spare's apply back.
fn admin_routes(cfg: &mut web::ServiceConfig, route: &Routes) {
    cfg.service(
        route
            .post("/v1/admin/promote", Need::Admin)
            .to(admin::promote),
    )
    .service(
        route
            .post("/v1/admin/switchover", Need::Admin)
            .to(admin::switchover),
    )
    .service(
        route
            .post("/v1/admin/rejoin", Need::Admin)
            .to(admin::rejoin),
    )
    .service(
        route
            .post("/v1/admin/writes", Need::Admin)
            .to(admin::writes),
    )
    .service(
        route
            .get("/v1/admin/promotions", Need::Admin)
            .to(admin::promotions),
    )
    .service(
        route
            .get("/v1/log/summary", Need::Read)
            .to(admin::log_summary),
    )
    .service(route.get("/v1/log", Need::Data).to(admin::log_list))
    .service(route.get("/v1/backup", Need::Data).to(admin::backup))
    .service(route.get("/v1/log/show", Need::Data).to(admin::log_show))
    .service(route.post("/v1/admin/pause", Need::Admin).to(admin::pause))
    .service(
        route
            .post("/v1/admin/resume", Need::Admin)
            .to(admin::resume),
    )
    .service(
        route
            .post("/v1/admin/apply-until", Need::Admin)
            .to(admin::apply_until),
    );
}

/// The steps of `spare verify`, which the verifying node drives on every data node.
fn verify_routes(cfg: &mut web::ServiceConfig, route: &Routes) {
    cfg.service(
        route
            .post("/v1/admin/verify/hold", Need::Admin)
            .to(verify::hold),
    )
    .service(
        route
            .post("/v1/admin/verify/release", Need::Admin)
            .to(verify::release),
    )
    .service(
        route
            .post("/v1/admin/verify/open", Need::Admin)
            .to(verify::open),
    )
    .service(
        route
            .get("/v1/admin/verify/digest", Need::Admin)
            .to(verify::digest),
    )
    .service(
        route
            .get("/v1/admin/verify/rows", Need::Admin)
            .to(verify::rows),
    )
    .service(
        route
            .post("/v1/admin/verify/close", Need::Admin)
            .to(verify::close),
    );
}

/// What the dashboard and monitoring read: events, history, metrics, and the page itself.
fn watch_routes(cfg: &mut web::ServiceConfig, route: &Routes) {
    cfg.service(route.get("/v1/events", Need::Read).to(api::events))
        .service(route.get("/v1/history", Need::Read).to(api::history))
        .service(route.get("/metrics", Need::Read).to(api::metrics))
        .service(route.get("/", Need::Open).to(dashboard::page));
}

/// Builds the routes of one app, each guarded for its class.
struct Routes {
    access: Access,
}

impl Routes {
    fn post(&self, path: &'static str, need: Need) -> OneMethod {
        self.one(path, actix_web::http::Method::POST, need)
    }

    fn get(&self, path: &'static str, need: Need) -> OneMethod {
        self.one(path, actix_web::http::Method::GET, need)
    }

    fn one(&self, path: &'static str, method: actix_web::http::Method, need: Need) -> OneMethod {
        OneMethod {
            path,
            method,
            need,
            access: self.access.clone(),
        }
    }
}

/// A route answering `method` only (any other method gets a JSON 405 naming the right
/// one), behind the token check of its class.
struct OneMethod {
    path: &'static str,
    method: actix_web::http::Method,
    need: Need,
    access: Access,
}

impl OneMethod {
    fn to<F, Args>(
        self,
        handler: F,
    ) -> actix_web::Resource<
        impl actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<
                actix_web::body::EitherBody<actix_web::body::BoxBody>,
            >,
            Error = actix_web::Error,
            InitError = (),
        >,
    >
    where
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        let expected = self.method.to_string();
        let (access, need) = (self.access, self.need);
        web::resource(self.path)
            .route(web::method(self.method).to(handler))
            .default_service(web::to(move || {
                let message = format!("use {expected} on this route");
                async move {
                    HttpResponse::MethodNotAllowed()
                        .json(json!({ "error": "method_not_allowed", "message": message }))
                }
            }))
            .wrap_fn(move |req, srv| {
                use actix_web::dev::Service;
                let (refused, call) = match access.check(need, &req) {
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
