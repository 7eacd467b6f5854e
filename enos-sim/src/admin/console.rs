//! The web console: one page, its script and its style sheet, all in the binary (nothing
//! is fetched from elsewhere: it works offline, and its content security policy allows
//! this listener only).
//!
//! Open `http://127.0.0.1:PORT/#token=TOKEN` (`enos-sim serve` prints it): the page keeps
//! the token in the tab's session storage, takes it out of the address bar, and sends it
//! with every call of the API. The page lists devices and gateways with their sub-devices
//! and whether they are online; for a device it shows each measure point with a chart of
//! its values, events, reports, tags, attributes and the packet record, all refreshed as
//! `GET /live` says something changed; and its forms invoke a service, set measure
//! points, push a firmware, cut the connection, and enable or disable the device.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::Response;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// What the page may load and call: this listener, nothing else; no frames around it.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                      img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset at `path`, if it is one.
pub(super) fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let (body, kind) = match path {
        "/" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert("content-security-policy", HeaderValue::from_static(POLICY));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Some(r)
}
