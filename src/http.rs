//! The HTTP layer: routes, the knock endpoint's answers (200, the teapot,
//! 503), the address echo, and the server start-up. It reads requests
//! and writes responses; deciding is left to `auth` and `service`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

use crate::error::StartupError;
use crate::query;
use crate::service::{IssueError, Service, unix_now};
use crate::settings::Settings;
use crate::teapot::{self, Reason};

/// Seconds a client is told to wait after a queue timeout.
const RETRY_AFTER_SECS: &str = "2";

/// Registers knock-otp's routes; used by the server and by tests.
pub fn configure(service: Arc<Service>) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::from(service))
            .default_service(web::to(route));
    }
}

/// One handler for every path keeps the paths configurable at run time.
async fn route(req: HttpRequest, service: web::Data<Service>) -> HttpResponse {
    let http = &service.settings.http;
    if req.path() == http.path {
        knock(&req, &service).await
    } else if http.ip_echo_path.as_deref() == Some(req.path()) {
        echo(&req, &service)
    } else {
        HttpResponse::NotFound()
            .content_type("text/plain")
            .body("not found\n")
    }
}

/// The address the code must have been made with, or the teapot reason.
fn client_addr(req: &HttpRequest, service: &Service) -> Result<IpAddr, Reason> {
    let peer = req.peer_addr().ok_or(Reason::BadAddressHeader)?.ip();
    let policy = &service.settings.http.addr_policy;
    let values = req
        .headers()
        .get_all(policy.header.name())
        .map(HeaderValue::as_bytes);
    policy.client_addr(peer, values)
}

async fn knock(req: &HttpRequest, service: &Arc<Service>) -> HttpResponse {
    let addr = match client_addr(req, service) {
        Ok(addr) => addr,
        Err(reason) => {
            let peer = req
                .peer_addr()
                .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip().to_canonical());
            return refuse(service, peer, reason, None);
        }
    };
    // An address out of rejection budget is not even checked: no work for
    // a flood, and no way to keep guessing.
    if service.limits.address_blocked(addr) {
        service.metrics.reject(Reason::OverBudget);
        log::debug!("event=reject addr={addr} reason=over-budget");
        return teapot_response();
    }
    if req.method() != Method::GET {
        return refuse(service, addr, Reason::BadMethod, None);
    }
    let query = match query::parse(req.query_string()) {
        Ok(q) => q,
        Err(reason) => return refuse(service, addr, reason, None),
    };
    let accepted = match service.verify(&query, &addr.to_string(), unix_now()) {
        Ok(a) => a,
        Err((reason, client)) => return refuse(service, addr, reason, client.as_deref()),
    };
    if !service.limits.allow_issue(&accepted.name) {
        service.release_code(&accepted);
        return refuse(service, addr, Reason::OverBudget, Some(&accepted.name));
    }
    match service.issue(&accepted, addr).await {
        Ok(sequence) => HttpResponse::Ok()
            .content_type("text/html; charset=UTF-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(sequence.http_body()),
        Err(err) => {
            // No sequence went out, so the code was not used up.
            service.release_code(&accepted);
            unavailable(err)
        }
    }
}

/// The teapot, identical for every reason; the reason goes to the log and
/// counts against the address's rejection budget.
fn refuse(service: &Service, addr: IpAddr, reason: Reason, client: Option<&str>) -> HttpResponse {
    service.metrics.reject(reason);
    match client {
        Some(name) => log::warn!("event=reject addr={addr} reason={reason} client={name}"),
        None => log::warn!("event=reject addr={addr} reason={reason}"),
    }
    // The address just ran out of budget: its further requests are refused
    // unread (logged at debug only), so say so once, in the form fail2ban
    // matches.
    if service.limits.charge_rejection(addr) {
        log::warn!("event=reject addr={addr} reason=over-budget");
    }
    teapot_response()
}

pub fn teapot_response() -> HttpResponse {
    HttpResponse::build(StatusCode::IM_A_TEAPOT)
        .content_type("text/html; charset=UTF-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(teapot::BODY)
}

fn unavailable(err: IssueError) -> HttpResponse {
    let mut resp = HttpResponse::ServiceUnavailable();
    resp.content_type("text/plain")
        .insert_header((header::CACHE_CONTROL, "no-store"));
    match err {
        IssueError::QueueTimeout => resp
            .insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS))
            .body("every door is busy; try again\n"),
        IssueError::DoorFailed => resp.body("the door is not ready; try again later\n"),
    }
}

/// Tells a client which address its code must use: the one knock-otp sees.
fn echo(req: &HttpRequest, service: &Service) -> HttpResponse {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "GET, HEAD"))
            .finish();
    }
    match client_addr(req, service) {
        Ok(addr) => HttpResponse::Ok()
            .content_type("text/plain")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(format!("{addr}\n")),
        Err(_) => HttpResponse::BadRequest()
            .content_type("text/plain")
            .body("bad address header\n"),
    }
}

/// Runs the service until SIGINT or SIGTERM (in-flight requests finish).
/// SIGHUP re-reads `config` for new clients and keys. `on_ready` gets the
/// bound address once the listener is open.
pub fn serve(
    settings: Settings,
    config: Option<PathBuf>,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), StartupError> {
    actix_web::rt::System::new().block_on(async move {
        let listen = settings.http.listen;
        let service = Service::new(settings)?;
        service.prepare_doors().await?;
        let routes = configure(service.clone());
        let server = HttpServer::new(move || App::new().configure(routes.clone()))
            .bind(listen)
            .map_err(|source| StartupError::Bind {
                addr: listen.to_string(),
                key: "http.listen",
                source,
            })?;
        let bound = server.addrs().first().copied().unwrap_or(listen);
        let admin = crate::admin::server(&service)?;
        if let Some(path) = config {
            crate::admin::reload_on_sighup(service.clone(), path)?;
        }
        log::info!(
            "event=start version={} listen={bound} path={} doors={} reload={:?} clients={}",
            env!("CARGO_PKG_VERSION"),
            service.settings.http.path,
            service.pool.doors().len(),
            service.settings.reload,
            service.client_count()
        );
        let running = server.run();
        on_ready(bound);
        let result = match admin {
            Some(admin) => futures_util::future::try_join(running, admin)
                .await
                .map(drop),
            None => running.await,
        };
        result.map_err(|e| StartupError::Other(format!("HTTP server failed: {e}")))?;
        log::info!("event=stop");
        Ok(())
    })
}
