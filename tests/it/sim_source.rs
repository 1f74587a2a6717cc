//! The source simulator against source-api.md: auth, validation, counts, the generator's promises, and
//! canaries that prove the quirks bite a naive client and are survivable by a careful one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tthc_sync::sim::FaultLevel;
use tthc_sync::sim::generator::{
    self, BAD_CODES, GeneratorConfig, SimRng, evolve, format_source_date, generate,
    parse_source_date, parse_source_date_text, tcvn3_as_latin1,
};
use tthc_sync::sim::source::{SourceFaults, SourceSim, SourceSimConfig};
use tthc_sync::source::wire::SourceDossier;

const PAGE: usize = 500;

struct Running {
    sim: SourceSim,
    base: String,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("server task")
            .expect("server result");
    }
}

async fn spawn_sim(config: SourceSimConfig) -> Running {
    let sim = SourceSim::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let sim = sim.clone();
        let shutdown = shutdown.clone();
        async move { sim.serve(listener, shutdown).await }
    });
    Running {
        sim,
        base,
        shutdown,
        server,
    }
}

fn small_generator(level: FaultLevel) -> GeneratorConfig {
    GeneratorConfig {
        seed: 7,
        dossiers: 3000,
        units: 25,
        ..GeneratorConfig::for_level(level)
    }
}

/// Realistic quirks, with a timeout short enough for a test (the client gives up before it).
fn realistic_config() -> SourceSimConfig {
    let mut config = SourceSimConfig::for_level(FaultLevel::Realistic);
    config.generator = small_generator(FaultLevel::Realistic);
    config.faults.timeout_delay = Duration::from_millis(2500);
    config
}

/// A client that survives transport faults: it retries 5xx, timeouts, cut bodies and pages without
/// `content`, and takes a new token on 401.
struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    requests: usize,
}

struct PageAnswer {
    content: Vec<Value>,
    total: i64,
    last: bool,
}

impl Client {
    fn new(base: &str) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(2000))
            .build()
            .expect("client");
        Client {
            http,
            base: base.to_owned(),
            token: None,
            requests: 0,
        }
    }

    async fn token(&mut self) -> String {
        for _ in 0..20 {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", "demo"),
                ("client_secret", "demo-secret"),
            ];
            if let Ok(response) = self
                .http
                .post(format!("{}/oauth/token", self.base))
                .form(&form)
                .send()
                .await
                && response.status().is_success()
                && let Ok(body) = response.json::<Value>().await
                && let Some(token) = body["access_token"].as_str()
            {
                return token.to_owned();
            }
        }
        panic!("no token after 20 attempts");
    }

    async fn get(&mut self, path: &str, query: &[(&str, String)]) -> Value {
        for _ in 0..60 {
            if self.token.is_none() {
                self.token = Some(self.token().await);
            }
            self.requests += 1;
            let request = self
                .http
                .get(format!("{}{path}", self.base))
                .query(query)
                .bearer_auth(self.token.as_deref().unwrap_or_default());
            let Ok(response) = request.send().await else {
                continue;
            };
            let status = response.status();
            if status == reqwest::StatusCode::UNAUTHORIZED {
                self.token = None;
                continue;
            }
            assert!(
                !status.is_client_error(),
                "{path} {query:?} answered {status}"
            );
            if !status.is_success() {
                continue;
            }
            if let Ok(text) = response.text().await
                && let Ok(value) = serde_json::from_str::<Value>(&text)
            {
                return value;
            }
        }
        panic!("{path} failed 60 times");
    }

    async fn page(&mut self, path: &str, query: &[(&str, String)]) -> PageAnswer {
        for _ in 0..60 {
            let value = self.get(path, query).await;
            if let Some(content) = value["content"].as_array() {
                return PageAnswer {
                    content: content.clone(),
                    total: value["totalElements"].as_i64().expect("totalElements"),
                    last: value["last"].as_bool().expect("last"),
                };
            }
        }
        panic!("{path}: no content 60 times");
    }

    async fn search(&mut self, from: &str, page: usize, size: usize) -> PageAnswer {
        let query = [
            ("updated-from", from.to_owned()),
            ("sort", "updatedDate,asc".to_owned()),
            ("page", page.to_string()),
            ("size", size.to_string()),
        ];
        self.page("/pa/dossier/search", &query).await
    }
}

fn updated_of(record: &Value) -> Timestamp {
    parse_source_date(&record["updatedDate"]).expect("updatedDate readable")
}

fn id_of(record: &Value) -> String {
    record["id"].as_str().expect("id").to_owned()
}

const EPOCH_ANCHOR: &str = "2000-01-01T00:00:00.000+0700";

/// Walks `page=0,1,2,...` with a fixed `updated-from`: the way not to read a live table.
async fn naive_sync(client: &mut Client) -> HashSet<String> {
    let mut ids = HashSet::new();
    for page in 0.. {
        let answer = client.search(EPOCH_ANCHOR, page, PAGE).await;
        ids.extend(answer.content.iter().map(id_of));
        if answer.last || answer.content.is_empty() {
            break;
        }
    }
    ids
}

/// The reference client: re-anchors on the last timestamp seen, pages inside a block of equal timestamps
/// until one pass saw the whole block unchanged, and keeps the newest version of every row.
struct CarefulClient {
    client: Client,
    seen: HashMap<String, Timestamp>,
}

impl CarefulClient {
    fn keep(&mut self, record: &Value) -> Timestamp {
        let updated = updated_of(record);
        let entry = self.seen.entry(id_of(record)).or_insert(updated);
        *entry = (*entry).max(updated);
        updated
    }

    /// Reads everything from `from` (inclusive); returns the new cursor.
    async fn sync_from(&mut self, from: Timestamp) -> Timestamp {
        let mut cursor = from;
        loop {
            let answer = self
                .client
                .search(&format_source_date(cursor), 0, PAGE)
                .await;
            let stamps: Vec<Timestamp> = answer
                .content
                .iter()
                .map(|record| self.keep(record))
                .collect();
            let Some(&last) = stamps.last() else {
                return cursor;
            };
            if answer.last {
                return last.max(cursor);
            }
            if last > cursor {
                cursor = last;
                continue;
            }
            // A full page of rows sharing the cursor's timestamp: a tie block, paged inside.
            match self.read_block(cursor).await {
                Some(next) => cursor = next,
                None => return cursor,
            }
        }
    }

    /// Rows in the block at `instant`, counted as all rows from it minus all rows after it.
    async fn block_size(&mut self, instant: Timestamp) -> i64 {
        let from = self
            .client
            .search(&format_source_date(instant), 0, 1)
            .await
            .total;
        let after = self
            .client
            .search(
                &format_source_date(instant + SignedDuration::from_millis(1)),
                0,
                1,
            )
            .await
            .total;
        from - after
    }

    /// Reads the block at `instant` until a pass saw every row of it with the block unchanged; returns the
    /// first later timestamp, if any.
    async fn read_block(&mut self, instant: Timestamp) -> Option<Timestamp> {
        let anchor = format_source_date(instant);
        for _ in 0..100 {
            let size_before = self.block_size(instant).await;
            let mut pass_ids = HashSet::new();
            let mut positions = 0;
            let mut next = None;
            for page in 0.. {
                let answer = self.client.search(&anchor, page, PAGE).await;
                let mut content = answer.content;
                if content.len() > PAGE {
                    // The duplicate quirk: the previous page's last row again, as an extra first element.
                    content.remove(0);
                }
                for record in &content {
                    let updated = self.keep(record);
                    if updated == instant {
                        pass_ids.insert(id_of(record));
                        positions += 1;
                    } else if next.is_none() {
                        next = Some(updated);
                    }
                }
                if next.is_some() || answer.last || content.is_empty() {
                    break;
                }
            }
            let size_after = self.block_size(instant).await;
            if size_before == size_after
                && pass_ids.len() == positions
                && positions as i64 == size_after
            {
                return next;
            }
        }
        panic!("the tie block never held still for a whole pass");
    }
}

// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn auth_gives_tokens_and_refuses_bad_clients_and_expired_tokens() {
    let running = spawn_sim(SourceSimConfig {
        generator: GeneratorConfig {
            dossiers: 50,
            tie_block: 0,
            ..small_generator(FaultLevel::None)
        },
        ..SourceSimConfig::for_level(FaultLevel::None)
    })
    .await;
    let http = reqwest::Client::new();
    let token_url = format!("{}/oauth/token", running.base);
    let wrong = [
        ("grant_type", "client_credentials"),
        ("client_id", "demo"),
        ("client_secret", "nope"),
    ];
    let response = http
        .post(&token_url)
        .form(&wrong)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"],
        "invalid_client"
    );

    let right = [
        ("grant_type", "client_credentials"),
        ("client_id", "demo"),
        ("client_secret", "demo-secret"),
    ];
    let body: Value = http
        .post(&token_url)
        .form(&right)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    let token = body["access_token"].as_str().expect("token").to_owned();

    let search = format!(
        "{}/pa/dossier/search?updated-from={}&page=0&size=10",
        running.base, "2000-01-01T00:00:00.000%2B0700"
    );
    assert_eq!(
        http.get(&search).send().await.expect("send").status(),
        401,
        "no token"
    );
    assert_eq!(
        http.get(&search)
            .bearer_auth("forged")
            .send()
            .await
            .expect("send")
            .status(),
        401,
        "unknown token"
    );
    let page: Value = http
        .get(&search)
        .bearer_auth(&token)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(page["content"].as_array().expect("content").len(), 10);
    assert_eq!(page["totalElements"], 50);

    let one = page["content"][0]["id"].as_str().expect("id").to_owned();
    let by_id = http
        .get(format!("{}/pa/dossier/{one}", running.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(by_id.status(), 200);
    assert_eq!(
        by_id.json::<Value>().await.expect("json")["id"],
        one.as_str()
    );
    let unknown = http
        .get(format!("{}/pa/dossier/nope", running.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(unknown.status(), 404);

    running.sim.expire_tokens();
    assert_eq!(
        http.get(&search)
            .bearer_auth(&token)
            .send()
            .await
            .expect("send")
            .status(),
        401,
        "expired token"
    );
    let body: Value = http
        .post(&token_url)
        .form(&right)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let fresh = body["access_token"].as_str().expect("token");
    assert_eq!(
        http.get(&search)
            .bearer_auth(fresh)
            .send()
            .await
            .expect("send")
            .status(),
        200
    );

    let stats: Value = http
        .get(format!("{}/_sim/stats", running.base))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(
        stats["unauthorized"].as_u64().expect("unauthorized") >= 4,
        "{stats}"
    );
    assert_eq!(stats["rowsTotal"], 50);
    running.stop().await;
}

#[tokio::test]
async fn bare_plus_and_oversized_pages_are_answered_400() {
    let running = spawn_sim(SourceSimConfig {
        generator: GeneratorConfig {
            dossiers: 20,
            tie_block: 0,
            ..small_generator(FaultLevel::None)
        },
        ..SourceSimConfig::for_level(FaultLevel::None)
    })
    .await;
    let mut client = Client::new(&running.base);
    let token = client.token().await;
    let http = reqwest::Client::new();
    let get = |query: &str| {
        http.get(format!("{}/pa/dossier/search?{query}", running.base))
            .bearer_auth(&token)
            .send()
    };
    let bare_plus = get("updated-from=2024-01-15T08:30:00.000+0700&page=0&size=10")
        .await
        .expect("send");
    assert_eq!(bare_plus.status(), 400);
    let encoded = get("updated-from=2024-01-15T08:30:00.000%2B0700&page=0&size=10")
        .await
        .expect("send");
    assert_eq!(encoded.status(), 200);
    assert_eq!(
        get("updated-from=2024-01-15T08:30:00.000%2B0700&size=501")
            .await
            .expect("send")
            .status(),
        400
    );
    assert_eq!(
        get("updated-from=2024-01-15T08:30:00.000%2B0700&size=500")
            .await
            .expect("send")
            .status(),
        200
    );
    assert_eq!(
        get("updated-from=yesterday&size=5")
            .await
            .expect("send")
            .status(),
        400
    );
    let agencies = http
        .get(format!("{}/ba/agency?page=0&size=501", running.base))
        .bearer_auth(&token)
        .send();
    assert_eq!(agencies.await.expect("send").status(), 400);
    running.stop().await;
}

#[tokio::test]
async fn counts_and_identifier_listing_match_the_generator_and_include_hidden_rows() {
    let mut config = SourceSimConfig::for_level(FaultLevel::None);
    config.generator = small_generator(FaultLevel::Realistic);
    config.faults = SourceFaults {
        hidden_rows: true,
        ..SourceFaults::none()
    };
    let now = Timestamp::now();
    config.now = Some(now);
    let dataset = generate(&config.generator, now);
    let running = spawn_sim(config).await;
    let mut client = Client::new(&running.base);

    let today = jiff::tz::Offset::constant(7).to_datetime(now).date();
    let from = today
        .checked_sub(jiff::Span::new().days(120))
        .expect("date");
    let query = [
        ("received-from", from.to_string()),
        ("received-to", today.to_string()),
    ];
    let answer = client
        .get("/pa/dossier-statistic/count-by-agency", &query)
        .await;
    let served: BTreeMap<(String, String), i64> = answer
        .as_array()
        .expect("array")
        .iter()
        .map(|item| {
            let key = (
                item["agencyId"].as_str().expect("agency").to_owned(),
                item["date"].as_str().expect("date").to_owned(),
            );
            (key, item["count"].as_i64().expect("count"))
        })
        .collect();
    let expected: BTreeMap<(String, String), i64> = dataset
        .expected_counts()
        .into_iter()
        .map(|((agency, day), count)| ((agency, day.to_string()), count))
        .collect();
    let differing: Vec<_> = expected
        .keys()
        .chain(served.keys())
        .filter(|key| served.get(*key) != expected.get(*key))
        .map(|key| (key, served.get(key), expected.get(key)))
        .take(10)
        .collect();
    assert!(
        differing.is_empty(),
        "(key, served, expected): {differing:?}"
    );
    let excluded = dataset
        .dossiers
        .iter()
        .filter(|d| d.deleted || d.cancelled)
        .count() as i64;
    assert!(excluded > 0);
    assert_eq!(
        served.values().sum::<i64>(),
        dataset.dossiers.len() as i64 - excluded
    );

    // The identifier listing of the busiest (agency, day), ordered by id, hidden rows included.
    let ((agency, day), count) = expected
        .iter()
        .max_by_key(|(_, count)| **count)
        .expect("some count");
    let mut listed = Vec::new();
    for page in 0.. {
        let query = [
            ("agency-id", agency.clone()),
            ("date", day.clone()),
            ("page", page.to_string()),
            ("size", "3".to_owned()),
        ];
        let answer = client.page("/pa/dossier-statistic/ids", &query).await;
        listed.extend(answer.content.iter().map(id_of));
        if answer.last {
            break;
        }
    }
    assert_eq!(listed.len() as i64, *count);
    assert!(
        listed.windows(2).all(|pair| pair[0] < pair[1]),
        "ids in order"
    );

    // Hidden rows: counted, served by id, absent from the feed.
    let hidden: Vec<&generator::GeneratedDossier> =
        dataset.dossiers.iter().filter(|d| d.hidden).collect();
    assert!(!hidden.is_empty());
    let feed = naive_sync(&mut client).await;
    assert_eq!(
        feed.len(),
        dataset.dossiers.len() - hidden.len(),
        "without faults the naive walk sees every visible row"
    );
    for dossier in &hidden {
        assert!(!feed.contains(&dossier.id));
    }
    let by_id = client
        .get(&format!("/pa/dossier/{}", hidden[0].id), &[])
        .await;
    assert_eq!(by_id["id"], hidden[0].id.as_str());
    running.stop().await;
}

#[test]
fn generator_is_deterministic_with_enough_bad_records_and_a_tie_block() {
    let config = small_generator(FaultLevel::Realistic);
    let now: Timestamp = "2026-03-10T03:00:00Z".parse().expect("now");
    let first = generate(&config, now);
    let second = generate(&config, now);
    let text = |dataset: &generator::Dataset| {
        serde_json::to_string(
            &dataset
                .dossiers
                .iter()
                .map(|d| &d.record)
                .collect::<Vec<_>>(),
        )
        .expect("json")
    };
    assert_eq!(text(&first), text(&second));
    let other = generate(
        &GeneratorConfig {
            seed: 8,
            ..config.clone()
        },
        now,
    );
    assert_ne!(text(&first), text(&other));

    let dossiers = &first.dossiers;
    assert_eq!(dossiers.len(), 3000);
    let bad: Vec<&'static str> = dossiers.iter().filter_map(|d| d.bad).collect();
    assert!(
        bad.len() * 100 >= dossiers.len() * 5,
        "{} bad of {}",
        bad.len(),
        dossiers.len()
    );
    let codes: HashSet<&str> = bad.iter().copied().collect();
    assert!(codes.len() >= 6, "{codes:?}");
    assert!(codes.iter().all(|code| BAD_CODES.contains(code)));

    let mut per_stamp: HashMap<&Value, usize> = HashMap::new();
    for dossier in dossiers {
        *per_stamp.entry(&dossier.record["updatedDate"]).or_insert(0) += 1;
    }
    let (stamp, largest) = per_stamp
        .iter()
        .max_by_key(|(_, count)| **count)
        .expect("stamps");
    assert!(*largest >= 3 * 500, "largest tie block {largest}");
    assert!(stamp.as_str().expect("text").ends_with(":00.000+0700"));

    // Agencies without a code only ever carry `unmapped_unit` records, and they do carry them.
    let uncoded: HashSet<&str> = first
        .agencies
        .iter()
        .filter(|a| a.code.is_none())
        .map(|a| a.id.as_str())
        .collect();
    assert!(!uncoded.is_empty());
    for dossier in dossiers {
        assert_eq!(
            uncoded.contains(dossier.agency_id.as_str()),
            dossier.bad == Some("unmapped_unit"),
            "{}",
            dossier.id
        );
    }
    let coded = first.agencies.iter().filter_map(|a| a.code.as_deref());
    let unit = regex_like_unit_code;
    assert!(coded.clone().all(unit));

    // Statuses 0–11, deletions, quirks.
    let statuses: HashSet<i64> = dossiers
        .iter()
        .filter_map(|d| {
            d.record
                .pointer("/dossierStatus/id")
                .and_then(Value::as_i64)
        })
        .collect();
    for status in 0..=11 {
        assert!(statuses.contains(&status), "status {status} missing");
    }
    assert!(dossiers.iter().any(|d| d.deleted) && dossiers.iter().any(|d| d.cancelled));
    let quirks: HashSet<&str> = dossiers
        .iter()
        .flat_map(|d| d.quirks.iter().copied())
        .collect();
    for quirk in ["date_shapes", "tcvn3", "nfd", "fee_strings"] {
        assert!(quirks.contains(quirk), "quirk {quirk} missing: {quirks:?}");
    }
    assert!(dossiers.iter().any(|d| {
        d.record["applicant"]["phone"]
            .as_str()
            .is_some_and(|p| p.starts_with("016"))
    }));
}

fn regex_like_unit_code(code: &str) -> bool {
    let bytes = code.as_bytes();
    bytes.len() == 13
        && bytes[3] == b'.'
        && bytes[6] == b'.'
        && bytes[9] == b'.'
        && bytes[10].is_ascii_uppercase()
        && [0, 1, 2, 4, 5, 7, 8, 11, 12]
            .iter()
            .all(|&i| bytes[i].is_ascii_digit())
}

#[test]
fn valid_records_are_well_formed_with_consistent_dates() {
    let now: Timestamp = "2026-03-10T03:00:00Z".parse().expect("now");
    let dataset = generate(&small_generator(FaultLevel::Realistic), now);
    for dossier in &dataset.dossiers {
        // The wire type borrows its strings from the record's text, so it is read from the text.
        let text = dossier.record.to_string();
        let parsed = serde_json::from_str::<SourceDossier>(&text);
        assert_eq!(
            parsed.is_ok(),
            dossier.bad != Some("malformed_record"),
            "{}: {:?}",
            dossier.id,
            parsed.err()
        );
        if dossier.bad.is_some() {
            continue;
        }
        let date = |field: &str| dossier.record.get(field).and_then(parse_source_date);
        for field in [
            "submittedDate",
            "acceptedDate",
            "appointmentDate",
            "completedDate",
            "returnedDate",
            "rejectedDate",
        ] {
            let value = &dossier.record[field];
            assert!(
                value.is_null() || date(field).is_some(),
                "{}: unreadable {field} {value}",
                dossier.id
            );
        }
        let submitted = date("submittedDate").expect("submitted");
        let status = dossier.record["dossierStatus"]["id"]
            .as_i64()
            .expect("status");
        let updated = date("updatedDate").expect("updated");
        assert!(submitted <= now && updated <= now + SignedDuration::from_secs(60));
        if let Some(accepted) = date("acceptedDate") {
            assert!(
                submitted <= accepted && accepted <= updated,
                "{}",
                dossier.id
            );
            assert!(
                date("appointmentDate").expect("appointment") >= accepted,
                "{}",
                dossier.id
            );
            if let Some(completed) = date("completedDate") {
                assert!(
                    completed >= accepted && completed <= updated,
                    "{}",
                    dossier.id
                );
            }
        } else {
            assert!(
                matches!(status, 0 | 8),
                "{}: status {status} without acceptedDate",
                dossier.id
            );
        }
        match status {
            6 => assert!(date("completedDate").is_some()),
            7 => assert!(
                date("returnedDate").expect("returned")
                    >= date("completedDate").expect("completed")
            ),
            8 => assert!(date("rejectedDate").is_some()),
            _ => {}
        }
        // The reception day recorded as made agrees with the record's own dates: `acceptedDate`, or
        // `submittedDate` without one.
        assert_eq!(
            date("acceptedDate")
                .or_else(|| date("submittedDate"))
                .map(tthc_sync::sim::dates::vietnam_day),
            Some(dossier.reception_day),
            "{}",
            dossier.id
        );
    }
}

#[test]
fn tcvn3_and_date_shapes() {
    assert_eq!(
        tcvn3_as_latin1("Nguyễn Văn An").as_deref(),
        Some("NguyÔn V¨n An")
    );
    assert_eq!(
        tcvn3_as_latin1("Xin cấp giấy phép xây dựng").as_deref(),
        Some("Xin cÊp giÊy phÐp x©y dùng")
    );
    assert_eq!(tcvn3_as_latin1("Đặng Thị Ánh"), None, "Á has no TCVN3 code");
    let expected: Timestamp = "2024-01-15T01:30:00Z".parse().expect("instant");
    for text in [
        "2024-01-15T08:30:00.000+0700",
        "15/01/2024 08:30:00",
        "2024-01-15 08:30:00",
        "2024-01-15T08:30:00+07:00",
        "2024-01-15T01:30:00.000Z",
    ] {
        assert_eq!(parse_source_date_text(text), Some(expected), "{text}");
    }
    assert_eq!(
        parse_source_date(&Value::from(expected.as_millisecond())),
        Some(expected)
    );
    assert_eq!(format_source_date(expected), "2024-01-15T08:30:00.000+0700");
    assert_eq!(parse_source_date_text("2024-13-45T08:00:00.000+0700"), None);
}

#[test]
fn evolve_moves_a_dossier_forward_and_survives_malformed_records() {
    use rand::SeedableRng;
    let now: Timestamp = "2026-03-10T03:00:00Z".parse().expect("now");
    let dataset = generate(&small_generator(FaultLevel::None), now);
    let mut rng = SimRng::seed_from_u64(3);
    let later = now + SignedDuration::from_secs(600);
    let find = |status: i64| {
        dataset
            .dossiers
            .iter()
            .find(|d| d.bad.is_none() && !d.deleted && d.record["dossierStatus"]["id"] == status)
            .expect("a dossier in that status")
            .record
            .clone()
    };
    let mut waiting = find(0);
    evolve(&mut waiting, &mut rng, later);
    let status = waiting["dossierStatus"]["id"].as_i64().expect("status");
    assert!(status == 1 || status == 8);
    assert_eq!(waiting["updatedDate"], format_source_date(later));
    let mut ready = find(6);
    let history_before = ready["history"].as_array().expect("history").len();
    evolve(&mut ready, &mut rng, later);
    assert_eq!(ready["dossierStatus"]["id"], 7);
    assert_eq!(ready["returnedDate"], format_source_date(later));
    assert_eq!(
        ready["history"].as_array().expect("history").len(),
        history_before + 1
    );
    for dossier in dataset
        .dossiers
        .iter()
        .filter(|d| d.bad == Some("malformed_record"))
    {
        let mut record = dossier.record.clone();
        evolve(&mut record, &mut rng, later);
        assert_eq!(record["updatedDate"], format_source_date(later));
    }
}

// ---------------------------------------------------------------------------------------------------
// Canaries

#[tokio::test]
async fn canary_naive_page_walker_misses_dossiers() {
    let running = spawn_sim(realistic_config()).await;
    let mut client = Client::new(&running.base);
    let collected = naive_sync(&mut client).await;
    let visible: HashSet<String> = running
        .sim
        .snapshot()
        .into_iter()
        .filter(|row| row.visible_in_feed)
        .map(|row| row.id)
        .collect();
    let missed = visible.difference(&collected).count();
    assert!(
        missed > 0,
        "the naive walker saw all {} visible rows",
        visible.len()
    );
    let stats = running.sim.stats();
    assert!(
        stats.moved_rows as usize * 100 >= visible.len(),
        "moved {} of {}",
        stats.moved_rows,
        visible.len()
    );
    running.stop().await;
}

#[tokio::test]
async fn canary_client_without_lookback_misses_late_visible_rows() {
    let running = spawn_sim(realistic_config()).await;
    running.sim.mutate_now(5);
    let mut careful = CarefulClient {
        client: Client::new(&running.base),
        seen: HashMap::new(),
    };
    let cursor = careful.sync_from(Timestamp::UNIX_EPOCH).await;

    let late = running.sim.mutate_now_late(20);
    careful.seen.clear();
    careful.sync_from(cursor).await;
    let snapshot: HashMap<String, Timestamp> = running
        .sim
        .snapshot()
        .into_iter()
        .map(|row| (row.id, row.updated))
        .collect();
    let behind_cursor: Vec<&String> = late.iter().filter(|id| snapshot[*id] < cursor).collect();
    assert!(
        !behind_cursor.is_empty(),
        "no late row was stamped behind the cursor"
    );
    for id in behind_cursor {
        assert!(
            careful.seen.get(id) != Some(&snapshot[id]),
            "{id} was seen although it is behind the cursor"
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn canary_careful_client_collects_every_visible_row() {
    let running = spawn_sim(realistic_config()).await;
    running.sim.mutate_now(5);
    let mut careful = CarefulClient {
        client: Client::new(&running.base),
        seen: HashMap::new(),
    };
    let cursor = careful.sync_from(Timestamp::UNIX_EPOCH).await;
    let late = running.sim.mutate_now_late(20);
    // The lookback: every poll starts a few minutes before the cursor.
    careful
        .sync_from(cursor - SignedDuration::from_secs(300))
        .await;

    let snapshot = running.sim.snapshot();
    let mut missing = Vec::new();
    for row in snapshot.iter().filter(|row| row.visible_in_feed) {
        if careful.seen.get(&row.id) != Some(&row.updated) {
            missing.push((
                row.id.clone(),
                careful.seen.get(&row.id).copied(),
                row.updated,
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "{} visible rows missed or stale (id, seen, current), e.g. {:?}; cursor {cursor}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(late.iter().all(|id| careful.seen.contains_key(id)));
    let stats = running.sim.stats();
    assert!(
        stats.moved_rows > 0 && stats.late_visible_rows >= 20,
        "{stats:?}"
    );
    assert!(
        snapshot.iter().any(|row| !row.visible_in_feed),
        "hidden rows stay out of the feed"
    );
    running.stop().await;
}

#[tokio::test]
async fn careful_client_survives_harsh_faults_too() {
    let mut config = SourceSimConfig::for_level(FaultLevel::Harsh);
    config.generator = small_generator(FaultLevel::Harsh);
    config.faults.timeout_delay = Duration::from_millis(2500);
    let running = spawn_sim(config).await;
    let mut careful = CarefulClient {
        client: Client::new(&running.base),
        seen: HashMap::new(),
    };
    let cursor = careful.sync_from(Timestamp::UNIX_EPOCH).await;
    running.sim.mutate_now_late(10);
    careful
        .sync_from(cursor - SignedDuration::from_secs(300))
        .await;
    let stale = running
        .sim
        .snapshot()
        .into_iter()
        .filter(|row| row.visible_in_feed && careful.seen.get(&row.id) != Some(&row.updated))
        .count();
    assert_eq!(stale, 0);
    let stats = running.sim.stats();
    assert!(
        stats.injected_errors > 0
            && stats.duplicated_rows + stats.truncated_bodies + stats.missing_contents > 0,
        "{stats:?}"
    );
    assert_eq!(stats.requests_total, running.sim.request_count());
    running.stop().await;
}

#[tokio::test]
async fn every_call_takes_at_least_the_latency() {
    use std::time::Instant;
    let running = spawn_sim(SourceSimConfig {
        generator: GeneratorConfig {
            dossiers: 20,
            tie_block: 0,
            ..small_generator(FaultLevel::None)
        },
        latency: tthc_sync::sim::network::Latency::from_millis(250, 0),
        ..SourceSimConfig::for_level(FaultLevel::None)
    })
    .await;
    let mut client = Client::new(&running.base);
    let started = Instant::now();
    client.token().await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    for page in 0..2 {
        let started = Instant::now();
        let answer = client.search(EPOCH_ANCHOR, page, 10).await;
        assert_eq!(answer.content.len(), 10);
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
    running.stop().await;
}

#[test]
fn a_record_is_written_the_same_every_time_and_the_plan_keeps_only_its_index() {
    use tthc_sync::sim::generator::Plan;
    let now: Timestamp = "2026-03-10T03:00:00Z".parse().expect("now");
    let config = small_generator(FaultLevel::Realistic);
    let plan = Plan::new(&config, now);
    let dataset = generate(&config, now);
    assert_eq!(plan.dossiers.len(), dataset.dossiers.len());
    let by_id: HashMap<&str, &generator::GeneratedDossier> = dataset
        .dossiers
        .iter()
        .map(|d| (d.id.as_str(), d))
        .collect();
    for planned in plan.dossiers.iter().step_by(7) {
        let (first, _) = plan.render(planned);
        let (again, _) = plan.render(planned);
        assert_eq!(first.to_string(), again.to_string());
        let generated = by_id[planned.id().as_str()];
        assert_eq!(first, generated.record);
        assert_eq!(first["id"], planned.id().as_str());
        assert_eq!(updated_of(&first), planned.updated());
        assert_eq!(generated.reception_day, planned.reception_day);
    }
    assert!(std::mem::size_of::<generator::PlannedDossier>() <= 40);
}
