//! The HTTP API of every node (DESIGN.md §10), on actix-web. Handlers are thin: they parse,
//! hand the work to the node (committer queue, read pool, actor), and map errors to
//! `{"error": code, "message": ...}` with a fitting status.

mod api;
mod dashboard;
pub mod metrics;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

use crate::actors::node::NodeAddr;
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
    pub addr: NodeAddr,
    /// Carries out reloads for the whole process.
    pub supervisor: Addr<SupervisorActor>,
}

/// Binds the node's HTTP address and starts serving; returns the server's handle.
pub fn serve(
    cell: Arc<ConfigCell>,
    node: NodeConfig,
    addr: NodeAddr,
    supervisor: Addr<SupervisorActor>,
) -> Result<actix_web::dev::ServerHandle> {
    let bind = node.http;
    let name = node.name.clone();
    let state = web::Data::new(ApiState {
        cell,
        node,
        addr,
        supervisor,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(MAX_REQUEST_BYTES))
            .route("/v1/execute", web::post().to(api::execute))
            .route("/v1/query", web::post().to(api::query))
            .route("/v1/status", web::get().to(api::status))
            .route("/v1/cluster", web::get().to(api::cluster))
            .route("/v1/admin/reload", web::post().to(api::reload))
            .route("/v1/events", web::get().to(api::events))
            .route("/metrics", web::get().to(api::metrics))
            .route("/", web::get().to(dashboard::page))
            .route("/v1/history", web::get().to(api::history))
            .default_service(web::to(api::not_found))
    })
    .workers(HTTP_WORKERS)
    .disable_signals()
    .bind(bind)
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

/// The JSON error answer for `err`.
pub fn error_response(err: &Error) -> HttpResponse {
    let status = match err {
        Error::InvalidInput(_) | Error::Sql(_) | Error::NotReadOnly | Error::Config(_) => {
            StatusCode::BAD_REQUEST
        }
        Error::NotPrimary { .. } => StatusCode::MISDIRECTED_REQUEST,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::InvalidData(_) | Error::Diverged(_) | Error::Io { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let mut body = json!({ "error": err.code(), "message": err.to_string() });
    if let Error::NotPrimary { primary } = err {
        body["primary"] = json!(primary);
    }
    HttpResponse::build(status).json(body)
}
