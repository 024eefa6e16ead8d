//! The widget's files, embedded in the binary (no Node toolchain to build or run parley):
//! served with an ETag, `Cache-Control` and, to clients that take it, gzip compressed once
//! per process. Plus the demo page that shows a widget on parley's own origin.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use parley_engine::widget::is_widget_id;
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// One embedded file, with its compressed form and validator.
struct Asset {
    content_type: &'static str,
    raw: &'static [u8],
    gzip: Vec<u8>,
    etag: HeaderValue,
}

impl Asset {
    fn new(content_type: &'static str, raw: &'static [u8]) -> Asset {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let gzip = enc
            .write_all(raw)
            .and_then(|()| enc.finish())
            .unwrap_or_default();
        let digest = Sha256::digest(raw);
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        Asset {
            content_type,
            raw,
            gzip,
            etag: HeaderValue::from_str(&etag).expect("hex is a valid header value"),
        }
    }

    fn serve(&self, headers: &HeaderMap) -> Response {
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == self.etag));
        let gzip = !self.gzip.is_empty()
            && headers
                .get(header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
        let mut resp = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else if gzip {
            let mut r = self.gzip.clone().into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            self.raw.into_response()
        };
        let h = resp.headers_mut();
        h.insert(header::ETAG, self.etag.clone());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        // Short: a deployment's update reaches pages within minutes; the ETag makes the
        // re-check cheap.
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // Pages of any origin load these files.
        h.insert(
            header::HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("cross-origin"),
        );
        resp
    }
}

/// One embedded file, read and compressed on first use.
macro_rules! asset {
    ($content_type:expr, $path:literal) => {{
        static A: OnceLock<Asset> = OnceLock::new();
        A.get_or_init(|| Asset::new($content_type, include_bytes!($path)))
    }};
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

pub async fn widget_js(headers: HeaderMap) -> Response {
    asset!(JS, "../../web/widget/widget.js").serve(&headers)
}

pub async fn widget_css(headers: HeaderMap) -> Response {
    asset!(CSS, "../../web/widget/widget.css").serve(&headers)
}

pub async fn demo_css(headers: HeaderMap) -> Response {
    asset!(CSS, "../../web/widget/demo.css").serve(&headers)
}

/// The demo page's policy: only parley's own files and sockets, nothing inline — the
/// widget must work under it.
const DEMO_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A page showing the widget (floating and embedded) on parley's own origin; the widget
/// must allow that origin.
pub async fn demo(Path(widget_id): Path<String>) -> Result<Response, ApiError> {
    if !is_widget_id(&widget_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "widget not found",
        ));
    }
    let page = include_str!("../../web/widget/demo.html").replace("{{WIDGET_ID}}", &widget_id);
    let mut resp = page.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DEMO_CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}
