//! What every handler reaches (`ApiState`) and how answers are written: 200 with JSON, or an
//! error's status and JSON body.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::json;

use crate::actors::messages::Supervisor;
use crate::actors::node::slot::NodeSlot;
use crate::config::{ConfigCell, NodeConfig};
use crate::error::{Error, Result};
use crate::http::verify_sessions::Sessions;

/// What every handler reaches.
pub struct ApiState {
    pub cell: Arc<ConfigCell>,
    pub node: NodeConfig,
    /// The node: its running incarnation changes with its role.
    pub slot: Arc<NodeSlot>,
    /// Carries out reloads for the whole process.
    pub supervisor: Supervisor,
    /// The read snapshots `spare verify` holds open here.
    pub verify: Arc<Sessions>,
}

/// A handler's JSON answer: 200 with the value, or the error's answer.
pub(crate) fn respond(r: Result<serde_json::Value>) -> HttpResponse {
    match r {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => error_response(&e),
    }
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
        Error::Unavailable(_) | Error::NotTaken(_) | Error::Busy(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Error::InvalidData(_) | Error::Diverged(_) | Error::Io { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let mut body = json!({ "error": err.code(), "message": err.to_string() });
    if let Error::NotPrimary { primary } = err {
        body["primary"] = json!(primary);
    }
    if let Error::NotTaken(_) = err {
        body["retry_safe"] = json!(true);
    }
    let mut answer = HttpResponse::build(status);
    if let Error::Busy(_) = err {
        answer.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
    }
    answer.json(body)
}
