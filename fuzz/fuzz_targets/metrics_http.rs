//! Any bytes as what a client sends the metrics endpoint: routed without a
//! panic; only a GET of /metrics (with or without a query) is answered
//! with the metrics, and only a head past the cap is refused as too large.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vzhost::metrics::http::{MAX_REQUEST, Route, head_complete, route};

fuzz_target!(|data: &[u8]| {
    let blank = data.windows(4).position(|w| w == b"\r\n\r\n");
    assert_eq!(
        head_complete(data),
        blank.is_some() || data.len() >= MAX_REQUEST + 4
    );
    let head = &data[..blank.unwrap_or(data.len())];
    let routed = route(data);
    assert_eq!(routed == Route::TooLarge, head.len() > MAX_REQUEST);
    if let Route::Metrics { .. } = routed {
        let rest = head
            .strip_prefix(b"GET /metrics")
            .expect("metrics only for GET /metrics");
        assert!(
            matches!(rest.first(), None | Some(b' ' | b'?' | b'\r')),
            "{head:?}"
        );
    }
});
