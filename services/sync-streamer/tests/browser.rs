//! A real browser on another origin follows the stream (issue 18): headless Chromium (Debian's
//! `chromium`, driven by `tests/orpc-client/browser-sync.test.ts` with playwright-core) opens
//! `new EventSource("<streamer>/sync/stream?token=…")` from a page on a different port, through
//! a proxy this test cuts; the browser's own reconnect with `Last-Event-ID` must resume with
//! no gap and no repeat. A page on an origin not in `ALLOWED_ORIGINS` is refused by the
//! browser itself (no CORS headers for it).
//!
//! Needs Chromium (`apt-get install chromium`, or `CHROMIUM=/path`; `cargo xtask test` and CI
//! install it) and the script's packages (`npm ci --prefix tests/orpc-client`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::{get, post};
use common::{Streamer, TestApi};
use test_support::orpc_client::{OrpcClientScripts, chromium};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A blank page on an origin of its own.
async fn serve_page() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route(
        "/",
        get(|| async { Html("<!doctype html><title>sync in a browser</title>") }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A TCP proxy in front of the streamer that can drop every connection and refuse new ones
/// (a network cut), and keeps the head of each request it forwarded.
#[derive(Clone, Default)]
struct CuttableProxy {
    inner: Arc<Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    connections: JoinSet<()>,
    request_heads: Vec<String>,
}

impl CuttableProxy {
    async fn start(upstream: SocketAddr) -> (Self, String, String) {
        let proxy = Self::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepting = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut state = accepting.inner.lock().unwrap();
                if state.cut {
                    drop(client);
                    continue;
                }
                let recorder = accepting.clone();
                state
                    .connections
                    .spawn(async move { recorder.forward(client, upstream).await });
            }
        });
        let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let control_url = format!("http://{}", control.local_addr().unwrap());
        let app = Router::new()
            .route("/cut", post(cut))
            .route("/restore", post(restore))
            .route("/requests", get(requests))
            .with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(control, app).await });
        (proxy, url, control_url)
    }

    async fn forward(&self, mut client: TcpStream, upstream: SocketAddr) {
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            return;
        };
        // The request head, for the test to see what the browser sent on each (re)connect.
        let mut head = vec![0u8; 16 * 1024];
        let Ok(read) = client.read(&mut head).await else {
            return;
        };
        head.truncate(read);
        self.inner
            .lock()
            .unwrap()
            .request_heads
            .push(String::from_utf8_lossy(&head).into_owned());
        if server.write_all(&head).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

async fn cut(State(proxy): State<CuttableProxy>) -> &'static str {
    let mut state = proxy.inner.lock().unwrap();
    state.cut = true;
    // Dropping the tasks closes both sockets of every open connection.
    state.connections.abort_all();
    "cut"
}

async fn restore(State(proxy): State<CuttableProxy>) -> &'static str {
    proxy.inner.lock().unwrap().cut = false;
    "restored"
}

async fn requests(State(proxy): State<CuttableProxy>) -> axum::Json<Vec<String>> {
    axum::Json(proxy.inner.lock().unwrap().request_heads.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_another_origin_follows_the_stream_through_a_network_cut() {
    let chromium = chromium();
    let scripts = OrpcClientScripts::locate();
    let api = TestApi::start().await;
    let page_url = serve_page().await;
    let foreign_page_url = serve_page().await;
    let streamer = Streamer::start(&api, |config| {
        config.sync.allowed_origins = vec![page_url.clone()];
        // Reconnect quickly after the cut (the browser waits `retry` ms).
        config.sync.retry_ms = 300;
    })
    .await;
    let upstream: SocketAddr = streamer
        .base_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let (_proxy, sync_url, control_url) = CuttableProxy::start(upstream).await;
    scripts
        .run_checks(
            "browser-sync.test.ts",
            "browser-sync",
            &[
                ("API_URL", &api.base_url),
                ("SYNC_URL", &sync_url),
                ("PAGE_URL", &page_url),
                ("FOREIGN_PAGE_URL", &foreign_page_url),
                ("PROXY_CONTROL_URL", &control_url),
                ("CHROMIUM", &chromium),
            ],
        )
        .await;
    streamer.stop().await;
    api.stop().await;
}
