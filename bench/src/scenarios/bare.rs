//! Bare HTTP client loops against the bench target — reqwest on a
//! work-stealing runtime or shaped like the source's check threads, and
//! hyper-util (reqwest's engine) — the calibration the source's throughput is
//! read against: what the HTTP client costs with no scheduler and no records.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};

use super::Ctx;

/// The tasks every bare loop runs.
const TASKS: usize = 64;

/// How a bare loop runs its 64 tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// On the bench's own work-stealing runtime, one client: the issue's
    /// calibration ("a bare reqwest loop").
    WorkStealing,
    /// Like the source's check threads: one single-threaded runtime and one
    /// client per CPU core, each with its share of the tasks.
    PerCore,
}

/// `n` tasks on the current runtime, each calling `one` while `left` can be
/// counted down.
fn tasks<F, Fut>(n: usize, one: F, left: &Arc<AtomicUsize>) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    (0..n)
        .map(|_| {
            let (one, left) = (one.clone(), Arc::clone(left));
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    one().await;
                }
            })
        })
        .collect()
}

/// 64 tasks calling `one` until `requests` calls are done, shaped as `shape`
/// (`make` gives each thread its `one`, with its own client); calls/s and
/// this process's CPU seconds per 1,000 calls.
async fn drive<M, F, Fut>(requests: usize, shape: Shape, make: M) -> Result<(f64, f64)>
where
    M: Fn() -> Result<F>,
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let lanes = match shape {
        Shape::WorkStealing => 1,
        Shape::PerCore => std::thread::available_parallelism().map_or(1, usize::from),
    };
    // Every client first, so nothing runs when one cannot be made.
    let clients = (0..lanes).map(|_| make()).collect::<Result<Vec<_>>>()?;
    let left = Arc::new(AtomicUsize::new(requests));
    let started = Instant::now();
    let cpu0 = crate::proc::cpu_seconds(std::process::id());
    match shape {
        Shape::WorkStealing => {
            for one in clients {
                for t in tasks(TASKS, one, &left) {
                    t.await?;
                }
            }
        }
        Shape::PerCore => drive_per_core(clients, &left).await?,
    }
    let cpu = crate::proc::cpu_seconds(std::process::id()) - cpu0;
    Ok((
        requests as f64 / started.elapsed().as_secs_f64(),
        cpu / requests as f64 * 1000.0,
    ))
}

/// One thread with a single-threaded runtime per client in `clients`, the 64
/// tasks shared out among them; returns when every thread has.
async fn drive_per_core<F, Fut>(clients: Vec<F>, left: &Arc<AtomicUsize>) -> Result<()>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let lanes = clients.len();
    let joins: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, one)| {
            let left = Arc::clone(left);
            let n = TASKS / lanes + usize::from(i < TASKS % lanes);
            std::thread::spawn(move || -> Result<()> {
                // Made and dropped on its own thread, outside async code.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    for t in tasks(n, one, &left) {
                        t.await?;
                    }
                    Ok(())
                })
            })
        })
        .collect();
    let joined = tokio::task::spawn_blocking(move || {
        joins
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("a bare-loop thread panicked"))
            })
            .collect::<Vec<_>>()
    })
    .await?;
    for result in joined {
        result??;
    }
    Ok(())
}

/// Fails unless the target answers 200 (a stopped target would make a bare
/// loop "fast").
async fn target_answers(ctx: &Ctx) -> Result<()> {
    let status = website_monitor_tests::http_client_builder()
        .build()?
        .get(format!("http://{}/", ctx.http))
        .send()
        .await?
        .status();
    if status != reqwest::StatusCode::OK {
        bail!("the bench target at {} answered {status}", ctx.http);
    }
    Ok(())
}

/// A bare reqwest loop (64 tasks, nothing else): requests/s and CPU per 1,000.
/// Fresh connections (no idle pool, `Connection: close`, as the source does)
/// unless `keep_alive`. One client per thread.
pub(super) async fn reqwest_loop(
    ctx: &Ctx,
    requests: usize,
    keep_alive: bool,
    shape: Shape,
) -> Result<(f64, f64)> {
    target_answers(ctx).await?;
    let url: reqwest::Url = format!("http://{}/", ctx.http).parse()?;
    drive(requests, shape, || {
        let mut builder = website_monitor_tests::http_client_builder();
        if !keep_alive {
            let mut close = reqwest::header::HeaderMap::new();
            close.insert(
                reqwest::header::CONNECTION,
                reqwest::header::HeaderValue::from_static("close"),
            );
            builder = builder.pool_max_idle_per_host(0).default_headers(close);
        }
        let (client, url) = (builder.build()?, url.clone());
        Ok(move || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                if let Ok(r) = client.get(url).send().await {
                    let _ = r.bytes().await;
                }
            }
        })
    })
    .await
}

/// The same loop on hyper-util's client, the HTTP/1 engine under reqwest,
/// shaped like the source: what reqwest's own layers cost.
pub(super) async fn hyper_loop(ctx: &Ctx, requests: usize, keep_alive: bool) -> Result<(f64, f64)> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    target_answers(ctx).await?;
    let uri: hyper::Uri = format!("http://{}/", ctx.http).parse()?;
    drive(requests, Shape::PerCore, || {
        let mut builder = Client::builder(hyper_util::rt::TokioExecutor::new());
        if !keep_alive {
            builder.pool_max_idle_per_host(0);
        }
        // TCP_NODELAY, as reqwest sets it.
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<_, Empty<bytes::Bytes>> = builder.build(connector);
        let uri = uri.clone();
        Ok(move || {
            let (client, uri) = (client.clone(), uri.clone());
            async move {
                let mut request = hyper::Request::get(uri);
                if !keep_alive {
                    request = request.header(hyper::header::CONNECTION, "close");
                }
                let Ok(request) = request.body(Empty::new()) else {
                    return;
                };
                if let Ok(r) = client.request(request).await {
                    let _ = r.into_body().collect().await;
                }
            }
        })
    })
    .await
}
