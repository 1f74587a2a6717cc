//! The status server against a running daemon and both simulators: readiness that follows the source,
//! `/metrics` that parses as Prometheus exposition and carries the per-unit series, the JSON report under
//! its schema, the dashboard and failure pages without personal data, the bearer token on a non-loopback
//! address, and the dashboard in a real browser (headless Chromium).

use crate::common;

use std::time::Duration;

use serde_json::Value;
use tthc_sync::commands::demo::Demo;
use tthc_sync::sim::FaultLevel;
use tthc_sync::sim::portal::{PortalFaults, PortalSimConfig};
use tthc_sync::sim::source::SourceFaults;

use common::leak::PersonalData;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn base(demo: &Demo) -> String {
    format!("http://{}", demo.status.address)
}

async fn get(url: &str) -> (u16, String) {
    let response = client()
        .get(url)
        .send()
        .await
        .expect("the status server answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Polls `url` until it answers `status`, failing the test after `timeout`.
async fn until_status(url: &str, status: u16, timeout: Duration) -> String {
    let started = std::time::Instant::now();
    loop {
        let (got, body) = get(url).await;
        if got == status {
            return body;
        }
        assert!(
            started.elapsed() < timeout,
            "{url} still answers {got} after {timeout:?}, not {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn schema_errors(document: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/report.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema is valid JSON Schema");
    validator
        .iter_errors(document)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect()
}

/// Parses the exposition strictly: every line is a comment (`# HELP`/`# TYPE`) or a sample
/// `name{labels} value`; the crate then reads the samples. Returns the samples.
fn parse_exposition(text: &str) -> Vec<prometheus_parse::Sample> {
    let sample_line = |line: &str| -> bool {
        let (series, value) = match line.rsplit_once(' ') {
            Some(pair) => pair,
            None => return false,
        };
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        let name_ok = !name.is_empty()
            && name.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            });
        let labels_ok = name_end == series.len()
            || (series.ends_with('}')
                && series[name_end + 1..series.len() - 1]
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .all(|pair| {
                        pair.split_once("=\"").is_some_and(|(key, _)| {
                            !key.is_empty()
                                && key.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
                        })
                    }));
        let value_ok = value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value);
        name_ok && labels_ok && value_ok
    };
    for line in text.lines() {
        assert!(
            line.starts_with("# HELP ") || line.starts_with("# TYPE ") || sample_line(line),
            "not Prometheus text exposition: {line:?}"
        );
    }
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    prometheus_parse::Scrape::parse(lines)
        .expect("the exposition parses")
        .samples
}

fn has_series(samples: &[prometheus_parse::Sample], name: &str) -> bool {
    samples.iter().any(|sample| sample.metric == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_metrics_report_and_pages_against_a_running_daemon() {
    // The source is down from the start: every call fails.
    let mut source = common::source_config(400, 6, 11, FaultLevel::None);
    let down = SourceFaults {
        error_rate: 1.0,
        ..source.faults
    };
    source.faults = down.clone();
    let (_dir, demo) =
        common::start(source, common::portal_config(11, FaultLevel::None), |_| {}).await;
    let url = base(&demo);

    let (status, body) = get(&format!("{url}/healthz")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&format!("{url}/readyz")).await;
    assert_eq!(status, 503, "not ready before a poll succeeded: {body}");
    assert!(body.contains("no successful poll"), "{body}");
    let (_, metrics) = get(&format!("{url}/metrics")).await;
    let samples = parse_exposition(&metrics);
    let ready = samples
        .iter()
        .find(|sample| sample.metric == "tthc_sync_ready")
        .expect("tthc_sync_ready");
    assert!(matches!(ready.value, prometheus_parse::Value::Gauge(value) if value == 0.0));

    // Until a failed poll is counted as a source error.
    let started = std::time::Instant::now();
    loop {
        let (_, metrics) = get(&format!("{url}/metrics")).await;
        if metrics.contains("tthc_sync_errors_total{side=\"source\"") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no source error counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The source comes back: ready once a poll succeeded and the queue drains.
    demo.source.set_faults(SourceFaults {
        error_rate: 0.0,
        ..down
    });
    until_status(&format!("{url}/readyz"), 200, Duration::from_secs(90)).await;
    common::synced(&demo, Duration::from_secs(120)).await;

    // A reconciliation over every reception day: per-unit series and the dashboard's period.
    let from = "2000-01-01".parse().unwrap();
    let today = tthc_sync::app::vietnam_today();
    let outcome = demo
        .app
        .reconciler()
        .run(from, today, None)
        .await
        .expect("reconciliation runs");
    assert!(!outcome.lines.is_empty());

    let (status, metrics) = get(&format!("{url}/metrics")).await;
    assert_eq!(status, 200);
    let samples = parse_exposition(&metrics);
    for name in [
        "tthc_sync_build_info",
        "tthc_sync_dossiers_fetched_total",
        "tthc_sync_dossiers_normalized_total",
        "tthc_sync_dossiers_held_total",
        "tthc_sync_dossiers_sent_total",
        "tthc_sync_dossiers_accepted_total",
        "tthc_sync_dossiers_retried_total",
        "tthc_sync_queue_depth",
        "tthc_sync_oldest_unsent_seconds",
        "tthc_sync_poll_duration_seconds",
        "tthc_sync_push_duration_seconds",
        "tthc_sync_errors_total",
        "tthc_sync_last_poll_success_timestamp_seconds",
        "tthc_sync_last_push_success_timestamp_seconds",
        "tthc_sync_ready",
        "tthc_sync_unit_complete",
        "tthc_sync_unit_missing_dossiers",
        "tthc_sync_unit_reconciled_timestamp_seconds",
        "tthc_sync_unit_completeness_ratio",
    ] {
        assert!(has_series(&samples, name), "{name} missing:\n{metrics}");
    }
    for name in [
        "tthc_sync_poll_duration_seconds",
        "tthc_sync_push_duration_seconds",
    ] {
        assert!(
            samples.iter().any(|sample| sample.metric == name
                && matches!(sample.value, prometheus_parse::Value::Histogram(_))),
            "{name} is a histogram"
        );
        assert!(
            metrics.contains(&format!("{name}_bucket{{le=\"")),
            "{name} has buckets"
        );
    }
    for line in &outcome.lines {
        let complete = samples.iter().find(|sample| {
            sample.metric == "tthc_sync_unit_complete"
                && sample.labels.get("unit") == Some(line.unit.as_str())
        });
        let complete = complete.unwrap_or_else(|| panic!("no series for unit {}", line.unit));
        let expected = if line.complete { 1.0 } else { 0.0 };
        assert!(
            matches!(complete.value, prometheus_parse::Value::Gauge(value) if value == expected),
            "unit {} complete should be {expected}",
            line.unit
        );
    }
    let accepted = samples
        .iter()
        .find(|sample| sample.metric == "tthc_sync_dossiers_accepted_total")
        .unwrap();
    assert!(
        matches!(accepted.value, prometheus_parse::Value::Counter(value) if value > 0.0),
        "accepted dossiers are counted"
    );
    assert!(
        metrics.contains("tthc_sync_dossiers_held_total{reason=\""),
        "the generator's bad records are held back by reason:\n{metrics}"
    );

    // The JSON report follows the report command's schema; a broken one would not.
    // A year back: every reception day of the dataset, within the longest period the API answers.
    let a_year_ago = tthc_sync::app::vietnam_today()
        .checked_sub(jiff::Span::new().days(365))
        .unwrap();
    let (status, body) = get(&format!("{url}/api/v1/report?from={a_year_ago}")).await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["schema"], "tthc-sync.report/1");
    assert!(!report["units"].as_array().unwrap().is_empty());
    let errors = schema_errors(&report);
    assert!(
        errors.is_empty(),
        "the report breaks its schema: {errors:#?}"
    );
    let mut broken = report.clone();
    broken["units"][0]["ledger"]["accepted"] = Value::String("many".into());
    assert!(
        !schema_errors(&broken).is_empty(),
        "the schema check can fail"
    );
    let (status, _) = get(&format!("{url}/api/v1/report?from=yesterday")).await;
    assert_eq!(status, 400);
    // A period longer than a year is refused with the limit named.
    let (status, body) = get(&format!("{url}/api/v1/report?from=2000-01-01")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 366 days"), "{body}");

    // The dashboard over 90 days (every reception day of the dataset): Vietnamese headings, one row
    // per unit, problems first with a failures link.
    let (status, vi) = get(&format!("{url}/?days=90")).await;
    assert_eq!(status, 200);
    for heading in [
        "Tình trạng đồng bộ",
        "Tỷ lệ đồng bộ",
        "Bị giữ lại",
        "Bị Cổng DVCQG từ chối",
        "Hồ sơ chờ lâu nhất",
        "Dự báo chỉ số (QĐ 766)",
        "Độ trễ",
        "Tốc độ đồng bộ",
    ] {
        assert!(vi.contains(heading), "the dashboard lacks {heading:?}");
    }
    assert!(
        vi.contains("Tất cả đơn vị đã đồng bộ đầy đủ") || vi.contains("Cần xử lý"),
        "the overall state is shown"
    );
    for line in &outcome.lines {
        assert!(
            vi.contains(&format!("data-unit=\"{}\"", line.unit)),
            "no row for unit {}",
            line.unit
        );
    }
    assert!(!vi.contains("<script"), "no JavaScript");
    assert!(vi.contains("http-equiv=\"refresh\""), "it refreshes itself");
    assert!(
        vi.contains("Khoảng thời gian: 90 ngày"),
        "the period is stated"
    );
    let (status, _) = get(&format!("{url}/?days=12")).await;
    assert_eq!(status, 400, "the periods offered are 7, 30 and 90 days");
    let (_, en) = get(&format!("{url}/?days=90&lang=en")).await;
    assert!(
        en.contains("Sync health") && en.contains("Held back"),
        "English view"
    );

    let failing = outcome
        .lines
        .iter()
        .find(|line| line.ledger.held > 0)
        .expect("a unit with held-back dossiers");
    assert!(vi.contains(&format!("/units/{}/failures", failing.unit)));
    let (status, failures_page) = get(&format!("{url}/units/{}/failures", failing.unit)).await;
    assert_eq!(status, 200);
    assert!(failures_page.contains("Lý do"), "{failures_page}");
    assert!(failures_page.contains("Giá trị (đã che)"));
    let (status, failures_json) =
        get(&format!("{url}/api/v1/units/{}/failures", failing.unit)).await;
    assert_eq!(status, 200);
    let failures: Value = serde_json::from_str(&failures_json).unwrap();
    assert_eq!(failures["schema"], "tthc-sync.failures/1");
    assert!(!failures["dossiers"].as_array().unwrap().is_empty());
    let (status, _) = get(&format!("{url}/api/v1/units/999.99.99.H99/failures")).await;
    assert_eq!(status, 404, "an unknown unit is not an empty list");
    // The unit's correction workbook, offered for download.
    assert!(vi.contains(&format!("/units/{}/corrections.xlsx", failing.unit)));
    let response = client()
        .get(format!("{url}/units/{}/corrections.xlsx", failing.unit))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let workbook = response.bytes().await.unwrap();
    assert!(workbook.starts_with(b"PK"), "an xlsx (zip) file");

    // No personal data on any page or document.
    let records: Vec<Value> = demo
        .source
        .snapshot()
        .into_iter()
        .map(|row| row.record)
        .collect();
    let mut personal = PersonalData::from_source(&records);
    let stored: Vec<Value> = demo
        .portal
        .stored()
        .into_values()
        .map(|stored| stored.dossier)
        .collect();
    personal.add_portal(&stored);
    personal.assert_absent("dashboard (vi)", &vi);
    personal.assert_absent("dashboard (en)", &en);
    personal.assert_absent("unit failures page", &failures_page);
    let (_, failures_page_en) =
        get(&format!("{url}/units/{}/failures?lang=en", failing.unit)).await;
    personal.assert_absent("unit failures page (en)", &failures_page_en);
    personal.assert_absent("/api/v1/report", &body);
    personal.assert_absent("/api/v1/units/…/failures", &failures_json);
    personal.assert_absent("/metrics", &metrics);

    // Stopping: not ready any more while work in flight finishes.
    demo.shutdown.cancel();
    let (status, body) = get(&format!("{url}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("stopping"), "{body}");
    demo.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_address_requires_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    // Without a token file the daemon does not start, and says which key is missing.
    let started = Demo::start_with(
        common::source_config(20, 2, 5, FaultLevel::None),
        common::portal_config(5, FaultLevel::None),
        &dir.path().join("refused.db"),
        |settings| settings.status.listen = "0.0.0.0:0".into(),
    )
    .await;
    let error = format!("{:#}", started.err().expect("no token: no start"));
    assert!(error.contains("status.token_file"), "{error}");

    let token = "s3cr3t-status-token-for-the-test";
    let token_file = dir.path().join("status-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let (_dir, demo) = common::start(
        common::source_config(20, 2, 5, FaultLevel::None),
        common::portal_config(5, FaultLevel::None),
        |settings| {
            settings.status.listen = "0.0.0.0:0".into();
            settings.status.token_file = Some(token_file.clone());
        },
    )
    .await;
    let url = format!("http://127.0.0.1:{}", demo.status.address.port());
    for path in ["/", "/healthz", "/metrics", "/api/v1/report"] {
        let response = client().get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path} without a token");
        let response = client()
            .get(format!("{url}{path}"))
            .bearer_auth("wrong-token")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path} with a wrong token");
        let response = client()
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path} with the token");
    }
    demo.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_browser_shows_the_dashboard_in_vietnamese() {
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|name| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .is_ok_and(|output| output.status.success())
    });
    let Some(chromium) = chromium else {
        common::skip::skip(
            "browser check: chromium is not installed (apt-get install -y chromium)",
        );
        return;
    };
    let (_dir, demo) = common::start(
        common::source_config(300, 5, 21, FaultLevel::None),
        common::portal_config(21, FaultLevel::None),
        |_| {},
    )
    .await;
    common::synced(&demo, Duration::from_secs(120)).await;
    // The dashboard shows the period of the latest reconciliation: every reception day.
    demo.app
        .reconciler()
        .run(
            "2000-01-01".parse().unwrap(),
            tthc_sync::app::vietnam_today(),
            None,
        )
        .await
        .expect("reconciliation runs");
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--window-size=1366,768",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("{}/?days=90", base(&demo)))
        .output()
        .await
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && dom.contains("</html>"),
        "chromium failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for heading in [
        "Tình trạng đồng bộ",
        "Tỷ lệ đồng bộ",
        "Chờ đồng bộ",
        "Hồ sơ chờ lâu nhất",
    ] {
        assert!(
            dom.contains(heading),
            "the browser's DOM lacks {heading:?}:\n{dom}"
        );
    }
    // The order: the units needing attention as the report of the same period sorts them (worst
    // completeness first, then the largest gap), and every one of them is there.
    let today = tthc_sync::app::vietnam_today();
    let from = today.checked_sub(jiff::Span::new().days(89)).unwrap();
    let (status, body) = get(&format!(
        "{}/api/v1/report?from={from}&to={today}",
        base(&demo)
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    let expected: Vec<&str> = report["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|line| line["complete"] == false)
        .map(|line| line["unit"].as_str().unwrap())
        .collect();
    assert!(
        expected.len() >= 2,
        "the dataset needs failing units: {report:#}"
    );
    let shown: Vec<&str> = dom
        .split("<tr class=\"unit problem\" data-unit=\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    assert_eq!(shown, expected, "the failing units, worst first");
    let share = |unit: &str| {
        let line = report["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|line| line["unit"] == unit)
            .unwrap();
        let ledger = &line["ledger"];
        line["completeness"].as_f64().unwrap_or_else(|| {
            ledger["accepted"].as_f64().unwrap() / ledger["received"].as_f64().unwrap().max(1.0)
        })
    };
    for pair in shown.windows(2) {
        assert!(
            share(pair[0]) <= share(pair[1]),
            "{} ({}) is shown above {} ({})",
            pair[0],
            share(pair[0]),
            pair[1],
            share(pair[1])
        );
    }
    let units = demo.app.store.unit_counts().await.unwrap();
    let rows = dom.matches("<tr class=\"unit ").count();
    assert!(rows >= 1, "no unit rows in the browser's DOM:\n{dom}");
    for unit in units.iter().filter_map(|unit| unit.unit.as_deref()) {
        assert!(
            dom.contains(&format!("data-unit=\"{unit}\"")),
            "the browser shows no row for {unit}"
        );
    }
    demo.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_ready_while_dossiers_wait_and_the_portal_answers_nothing() {
    let (_dir, demo) = common::start(
        common::source_config(100, 3, 31, FaultLevel::None),
        PortalSimConfig {
            faults: PortalFaults {
                outage: true,
                ..PortalFaults::for_level(FaultLevel::None)
            },
            ..common::portal_config(31, FaultLevel::None)
        },
        |settings| settings.status.ready_max_push_age_seconds = 1,
    )
    .await;
    let url = base(&demo);
    // The source answers, so polls succeed; the portal is down, so the queue cannot drain.
    let body = until_status(&format!("{url}/readyz"), 503, Duration::from_secs(30)).await;
    let started = std::time::Instant::now();
    let mut body = body;
    while !body.contains("the portal has answered no batch yet") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not ready for another reason: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        body = get(&format!("{url}/readyz")).await.1;
    }
    assert!(
        !body.contains("no successful poll"),
        "the source answers: {body}"
    );
    // A call fails once its retries are spent.
    let started = std::time::Instant::now();
    let metrics = loop {
        let (_, metrics) = get(&format!("{url}/metrics")).await;
        if metrics.contains("tthc_sync_errors_total{side=\"portal\"") {
            break metrics;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "portal errors are not counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(metrics.contains("tthc_sync_ready 0"), "{metrics}");

    // The portal comes back: the queue drains and the daemon is ready again.
    demo.portal.set_outage(false);
    until_status(&format!("{url}/readyz"), 200, Duration::from_secs(90)).await;
    let (_, metrics) = get(&format!("{url}/metrics")).await;
    assert!(metrics.contains("tthc_sync_ready 1"), "{metrics}");
    demo.stop().await.unwrap();
}
