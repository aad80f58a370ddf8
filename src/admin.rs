//! The operator's side: the admin listener (`/healthz`, `/metrics`), off
//! unless `admin.listen` is set, and the SIGHUP configuration reload.

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::error::StartupError;
use crate::service::Service;
use crate::settings::Settings;

/// Registers the admin routes; used by the admin server and by tests.
pub fn configure(service: Arc<Service>) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::from(service))
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(metrics));
    }
}

/// 200 when every door's knockd runs and took its last reload; otherwise
/// 503 with one line per door that cannot open.
async fn healthz(service: web::Data<Service>) -> HttpResponse {
    let problems: Vec<String> = service
        .door_health()
        .await
        .into_iter()
        .filter_map(|(door, state)| state.err().map(|why| format!("door {door}: {why}")))
        .collect();
    if problems.is_empty() {
        HttpResponse::Ok().content_type("text/plain").body("ok\n")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(problems.join("\n") + "\n")
    }
}

async fn metrics(service: web::Data<Service>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(service.metrics_text().await)
}

/// The admin server, bound but not yet running, or `None` when turned off.
pub fn server(service: &Arc<Service>) -> Result<Option<Server>, StartupError> {
    let Some(listen) = service.settings.admin_listen else {
        return Ok(None);
    };
    if !listen.ip().is_loopback() {
        log::warn!(
            "event=admin-exposed listen={listen} note=\"/metrics and /healthz are reachable beyond \
                this host\""
        );
    }
    let routes = configure(service.clone());
    let server = HttpServer::new(move || App::new().configure(routes.clone()))
        .workers(1)
        .bind(listen)
        .map_err(|source| StartupError::Bind {
            addr: listen.to_string(),
            key: "admin.listen",
            source,
        })?;
    log::info!(
        "event=admin-start listen={}",
        server.addrs().first().copied().unwrap_or(listen)
    );
    Ok(Some(server.run()))
}

/// Re-reads `config` on every SIGHUP. A configuration that does not load
/// is refused with an error line and the running one stays in force.
pub fn reload_on_sighup(service: Arc<Service>, config: PathBuf) -> Result<(), StartupError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| StartupError::Other(format!("cannot handle SIGHUP: {e}")))?;
    actix_web::rt::spawn(async move {
        while hangups.recv().await.is_some() {
            let path = config.clone();
            // Key files are read from disk: keep that off the event loop.
            let loaded = actix_web::rt::task::spawn_blocking(move || Settings::load(&path)).await;
            match loaded {
                Ok(Ok(new)) => {
                    service.reload_clients(&new);
                    log::info!(
                        "event=config-reloaded clients={} note=\"clients, keys and [auth] re-read; \
                            other sections need a restart\"",
                        new.clients.len()
                    );
                }
                Ok(Err(e)) => {
                    let text = e.to_string().replace('\n', " | ");
                    log::error!(
                        "event=config-reload-failed error=\"{text}\" note=\"the running \
                            configuration stays in force\""
                    );
                }
                Err(e) => log::error!("event=config-reload-failed error=\"{e}\""),
            }
        }
    });
    Ok(())
}
