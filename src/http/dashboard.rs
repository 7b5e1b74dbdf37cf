//! `GET /` on a monitor: the dashboard, one self-contained page (no CDN, no external fonts)
//! that polls `/v1/cluster`, `/v1/history` and `/v1/events` every two seconds and shows the
//! nodes, each spare's lag over the last minutes, and the recent events.

use actix_web::{web, HttpResponse};

use crate::actors::node::addr::NodeAddr;
use crate::error::Error;
use crate::http::state::{error_response, ApiState};

const PAGE: &str = include_str!("dashboard.html");

pub async fn page(state: web::Data<ApiState>) -> HttpResponse {
    if !matches!(state.slot.addr(), Ok(NodeAddr::Monitor { .. })) {
        let config = state.cell.get();
        let monitors: Vec<String> = config
            .nodes
            .iter()
            .filter(|n| n.role == crate::config::Role::Monitor)
            .map(|n| format!("http://{}/", n.http_advertise))
            .collect();
        return error_response(&Error::InvalidInput(format!(
            "the dashboard is served by monitors: {}",
            if monitors.is_empty() {
                "none configured".into()
            } else {
                monitors.join(", ")
            }
        )));
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}
