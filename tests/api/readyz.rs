//! `/readyz` is for the operator's probes: answered on the central hosts and the metrics
//! address, never on a company's host, and saying only which checks failed.

use std::sync::Arc;

use serde_json::json;

use crate::support::*;

#[test]
fn readyz_answers_on_central_hosts_and_the_metrics_address_only() {
    let app = spawn_app();
    app.create_tenant("acmex", &["status.acme.test"]);
    for host in ["localhost", "localhost:8080", "127.0.0.1"] {
        let reply = app.call("GET", "/readyz", &[("Host", host)], None);
        assert_eq!(reply.status, 200, "{host}: {}", reply.text());
        assert_eq!(reply.json(), json!({"status": "ready", "failed": []}));
    }
    for host in ["acmex.localhost", "status.acme.test", "nobody.localhost"] {
        let reply = app.call("GET", "/readyz", &[("Host", host)], None);
        expect_error(&reply, 404, "not_found", host);
    }
    let only = TestServer::start(
        tenantd::http::Config {
            workers: 1,
            ..Default::default()
        },
        Arc::new(tenantd::api::metrics::MetricsOnly(Arc::clone(&app.app))),
    );
    let reply = only.request("GET /readyz HTTP/1.1\r\nHost: acmex.localhost\r\n\r\n");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "ready");
}
