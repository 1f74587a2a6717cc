//! End to end against both simulators on loopback: a full sync through every source quirk and realistic
//! portal faults; updates after a sync; faults the daemon must ride out.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tthc_sync::commands::demo::check_portal;
use tthc_sync::sim::FaultLevel;
use tthc_sync::sim::portal::{InjectedFault, PortalFaults};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_sync_through_every_quirk_leaves_the_portal_exact() {
    let mut source = common::source_config(5000, 30, 7, FaultLevel::Realistic);
    source.live_mutation = true;
    let (_dir, demo) = common::start(
        source,
        common::portal_config(7, FaultLevel::Realistic),
        |_| {},
    )
    .await;
    common::synced(&demo, Duration::from_secs(600)).await;

    let problems = check_portal(&demo.source, &demo.portal, &demo.app.tables());
    if !problems.is_empty() {
        // What the ledger says of each differing dossier, to tell a sync fault from a refusal.
        let ledger = common::ledger(&demo).await;
        let ids: HashMap<String, String> = demo
            .source
            .snapshot()
            .into_iter()
            .filter_map(|row| Some((row.record["code"].as_str()?.to_owned(), row.id)))
            .collect();
        let states: Vec<String> = problems
            .iter()
            .take(10)
            .filter_map(|problem| problem.rsplit(": ").next())
            .map(|code| {
                let entry = ids.get(code).and_then(|id| ledger.get(id));
                format!("{code}: {entry:?}")
            })
            .collect();
        panic!(
            "{} differences, first: {:?}\nin the ledger: {states:#?}",
            problems.len(),
            &problems[..problems.len().min(10)]
        );
    }

    let ledger = common::ledger(&demo).await;
    let snapshot = demo.source.snapshot();
    let mut bad_codes = HashSet::new();
    let mut missing = Vec::new();
    for row in snapshot.iter().filter(|row| row.visible_in_feed) {
        let Some(entry) = ledger.get(&row.id) else {
            // A malformed record without a usable id is kept under a synthetic id; the generator always
            // gives ids, so a missing one is a skipped dossier.
            missing.push(row.id.clone());
            continue;
        };
        if let Some(bad) = row.bad {
            bad_codes.insert(bad);
            assert_eq!(
                entry.state, "held",
                "{} was made bad ({bad}) but is {}",
                row.id, entry.state
            );
            assert!(
                entry.findings.contains(&format!("\"code\":\"{bad}\"")),
                "{} should carry the rejection {bad}: {}",
                row.id,
                entry.findings
            );
        } else if row.deleted || row.cancelled {
            assert_eq!(
                entry.state, "skipped",
                "{} is deleted or cancelled at the source",
                row.id
            );
        } else {
            assert_eq!(
                entry.state, "accepted",
                "{} is valid but {} ({:?})",
                row.id, entry.state, entry.reason_code
            );
        }
    }
    assert!(
        missing.is_empty(),
        "{} dossiers never reached the ledger: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        bad_codes.len() >= 6,
        "bad records should span at least six codes: {bad_codes:?}"
    );
    let faults = demo
        .portal
        .calls()
        .iter()
        .filter(|call| call.fault.is_some())
        .count();
    assert!(
        faults > 0,
        "the realistic portal should have injected faults"
    );
    demo.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changed_dossiers_are_sent_as_updates_and_unchanged_ones_not_at_all() {
    let source = common::source_config(800, 12, 11, FaultLevel::None);
    let (_dir, demo) =
        common::start(source, common::portal_config(11, FaultLevel::None), |_| {}).await;
    common::synced(&demo, Duration::from_secs(300)).await;
    assert!(check_portal(&demo.source, &demo.portal, &demo.app.tables()).is_empty());

    // The attempt log (written with each call's answers) has a line for every call the portal received.
    let mut logged: Vec<(String, i64)> = common::attempt_log(&demo)
        .await
        .into_iter()
        .map(|(service, items, outcome)| {
            assert_eq!(
                outcome, "ok",
                "a portal without faults answered {service} with {outcome}"
            );
            (service, items)
        })
        .collect();
    let mut received: Vec<(String, i64)> = demo
        .portal
        .calls()
        .iter()
        .filter(|call| call.service == "DongBoHoSoMC" || call.service == "CapNhatTienDoHoSoMC")
        .map(|call| (call.service.clone(), call.items as i64))
        .collect();
    assert!(!received.is_empty(), "the sync made no push calls");
    logged.sort();
    received.sort();
    assert_eq!(
        logged, received,
        "one attempt line per call, with its item count"
    );

    let before: HashMap<String, usize> = demo
        .portal
        .stored()
        .into_iter()
        .map(|(code, stored)| (code, stored.times_stored))
        .collect();
    let progress_before: HashMap<String, usize> = demo
        .portal
        .stored()
        .into_iter()
        .map(|(code, stored)| (code, stored.progress.len()))
        .collect();
    let calls_before = demo.portal.calls().len();

    // Nothing changes: polls re-read the lookback window, but nothing goes to the portal.
    common::synced(&demo, Duration::from_secs(120)).await;
    let idle_calls: Vec<_> = demo.portal.calls()[calls_before..]
        .iter()
        .filter(|call| call.service == "DongBoHoSoMC" || call.service == "CapNhatTienDoHoSoMC")
        .map(|call| call.service.clone())
        .collect();
    assert!(
        idle_calls.is_empty(),
        "unchanged dossiers caused portal calls: {idle_calls:?}"
    );

    let changed: HashSet<String> = demo.source.mutate_now(40).into_iter().collect();
    let calls_before = demo.portal.calls().len();
    common::synced(&demo, Duration::from_secs(120)).await;
    assert!(check_portal(&demo.source, &demo.portal, &demo.app.tables()).is_empty());

    let codes_of_changed: HashSet<String> = demo
        .source
        .snapshot()
        .into_iter()
        .filter(|row| changed.contains(&row.id))
        .filter_map(|row| {
            row.record
                .get("code")
                .and_then(|code| code.as_str())
                .map(String::from)
        })
        .collect();
    let after = demo.portal.stored();
    let mut updated = 0;
    for (code, stored) in &after {
        let previous = before.get(code).copied().unwrap_or(0);
        if codes_of_changed.contains(code) {
            if stored.times_stored > previous {
                updated += 1;
                assert!(
                    stored.progress.len() >= progress_before.get(code).copied().unwrap_or(0),
                    "{code}: progress entries were lost"
                );
            }
        } else {
            assert_eq!(
                stored.times_stored, previous,
                "{code} did not change but was sent again"
            );
        }
    }
    assert!(
        updated > 0,
        "some changed dossiers should have been sent again"
    );
    let new_calls = &demo.portal.calls()[calls_before..];
    let dossier_items: usize = new_calls
        .iter()
        .filter(|call| call.service == "DongBoHoSoMC")
        .map(|call| call.items)
        .sum();
    assert_eq!(
        dossier_items, updated,
        "exactly the changed dossiers are sent, once each"
    );
    assert!(
        new_calls
            .iter()
            .filter(|call| call.service == "DongBoHoSoMC")
            .all(|call| call.is_updating == Some(true)),
        "changes to dossiers the portal has are sent as updates"
    );
    assert!(
        new_calls
            .iter()
            .any(|call| call.service == "CapNhatTienDoHoSoMC"),
        "the changes' new progress entries are sent"
    );
    demo.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_session_a_429_burst_and_a_minute_of_outage_are_ridden_out() {
    let source = common::source_config(1500, 15, 5, FaultLevel::None);
    let (_dir, demo) = common::start(
        source,
        common::portal_config(5, FaultLevel::None),
        |settings| {
            settings.portal.concurrency = 2;
            settings.portal.requests_per_second = 20;
        },
    )
    .await;
    wait_for_accepted(&demo, 100).await;

    demo.portal.expire_all_sessions();
    demo.portal.set_faults(PortalFaults {
        too_many_requests_rate: 1.0,
        retry_after_seconds: 1,
        ..PortalFaults::none()
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    demo.portal.set_faults(PortalFaults::none());
    wait_for_accepted(&demo, 400).await;

    demo.portal.set_outage(true);
    tokio::time::sleep(Duration::from_secs(60)).await;
    demo.portal.set_outage(false);

    common::synced(&demo, Duration::from_secs(300)).await;
    let problems = check_portal(&demo.source, &demo.portal, &demo.app.tables());
    assert!(
        problems.is_empty(),
        "{} differences: {:?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
    let calls = demo.portal.calls();
    let throttled = calls
        .iter()
        .filter(|call| matches!(call.fault, Some(InjectedFault::TooManyRequests)))
        .count();
    let session_refusals = calls
        .iter()
        .filter(|call| call.overall_code == Some(-1))
        .count();
    assert!(throttled > 0, "the burst should have answered 429");
    assert!(
        session_refusals > 0,
        "the expired session should have been refused at least once"
    );
    demo.stop().await.unwrap();
}

/// A portal that takes 15 calls a second, 30 ms away: calls beyond its rate are answered 429 and sent
/// again after `Retry-After`, nothing is lost, and the daemon learns a rate from the 429s that it paces its
/// calls to. The bounds are ones no timing can break: the portal never takes more than its bucket (15)
/// plus its rate in any second, so a rate learnt from what it took is never above 30 a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limited_portal_gets_everything_and_the_concurrency_stays_under_its_rate() {
    let source = common::source_config(400, 10, 8, FaultLevel::None);
    let mut portal = common::portal_config(8, FaultLevel::None);
    portal.rate_limit = Some(15);
    portal.latency = tthc_sync::sim::network::Latency::from_millis(30, 5);
    let (_dir, demo) = common::start(source, portal, |settings| {
        settings.portal.concurrency = 16;
        settings.portal.adaptive_concurrency = true;
        settings.portal.batch_size = 10;
        settings.portal.requests_per_second = 1000;
    })
    .await;
    common::synced(&demo, Duration::from_secs(300)).await;
    let problems = check_portal(&demo.source, &demo.portal, &demo.app.tables());
    assert!(
        problems.is_empty(),
        "{} differences: {:?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
    let rejected = demo.portal.stats()["rejected429"].as_u64().unwrap_or(0);
    assert!(rejected > 0, "the portal's rate limit was reached");
    let limit = demo.app.portal.concurrency_limit();
    assert!((1..=16).contains(&limit), "the limit is {limit}");
    let learnt = demo
        .app
        .portal
        .learnt_rate()
        .expect("a rate learnt from the 429s");
    assert!(
        learnt > 0.0 && learnt <= 30.0,
        "learnt {learnt:.1} calls a second from a portal taking 15"
    );
    demo.stop().await.unwrap();
}

async fn wait_for_accepted(demo: &tthc_sync::commands::demo::Demo, at_least: i64) {
    use tthc_sync::decide::DossierState;
    for _ in 0..600 {
        let counts = demo.app.store.counts().await.unwrap();
        if counts.get(DossierState::Accepted) >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {at_least} dossiers accepted after a minute");
}

/// Two daemons on one PostgreSQL ledger: the portal ends exact, no dossier goes twice, both push, one
/// polls and hands the polling over when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_sharing_a_postgres_ledger_send_each_dossier_once() {
    use sqlx::PgPool;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use tthc_sync::app::App;

    let Some(schema) = common::postgres_schema().await else {
        return;
    };
    // Small batches and a modest rate keep the backlog in flight long enough for both instances to
    // take part.
    let configure = |settings: &mut tthc_sync::config::Settings, instance: &str| {
        settings.store.url = Some(schema.url());
        settings.store.instance = instance.into();
        settings.portal.batch_size = 20;
        settings.portal.requests_per_second = 50;
    };
    let source = common::source_config(1000, 10, 13, FaultLevel::None);
    let (_dir, demo) = common::start(
        source,
        common::portal_config(13, FaultLevel::None),
        |settings| configure(settings, "pg-one"),
    )
    .await;
    // The instance started first takes the polling lease before the second one starts.
    let ledger = PgPool::connect_with(schema.options()).await.unwrap();
    let poller =
        || sqlx::query_scalar::<_, String>("SELECT owner FROM leaders").fetch_optional(&ledger);
    let started = std::time::Instant::now();
    while poller().await.unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "nobody polls");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut settings = demo.app.settings.clone();
    configure(&mut settings, "pg-two");
    let second = Arc::new(
        App::build(settings)
            .await
            .expect("the second instance starts"),
    );
    let second_shutdown = tokio_util::sync::CancellationToken::new();
    let second_running = tokio::spawn(second.clone().run(second_shutdown.clone()));

    let started = std::time::Instant::now();
    loop {
        let counts = demo.app.store.counts().await.unwrap();
        if counts.total() > 0
            && counts.outstanding() == 0
            && check_portal(&demo.source, &demo.portal, &demo.app.tables()).is_empty()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the backlog did not drain: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Without faults and without changes at the source, every dossier has one version, sent once. The one
    // legitimate second send: a row served again at the start of the next page (the feed's anchor) whose
    // ledger view was read before the previous page committed is written again as new, and if it was in
    // flight meanwhile it goes once more (the pipelined ingest's harmless resend). Such a row was written
    // twice (`changed_at` after `first_seen_at`); a dossier claimed by both instances was not.
    let written_again: HashSet<String> = sqlx::query_scalar(
        "SELECT dossier_code FROM dossiers WHERE changed_at > first_seen_at AND dossier_code IS NOT NULL",
    )
    .fetch_all(&ledger)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let stored_twice: Vec<(String, usize)> = demo
        .portal
        .stored()
        .into_iter()
        .filter(|(code, stored)| {
            stored.times_stored > 1 + usize::from(written_again.contains(code))
        })
        .map(|(code, stored)| (code, stored.times_stored))
        .collect();
    assert!(
        stored_twice.is_empty(),
        "{} dossiers stored more than once: {:?}",
        stored_twice.len(),
        &stored_twice[..stored_twice.len().min(10)]
    );
    let pushed = |app: &App| app.counters.calls.load(Ordering::Relaxed);
    assert!(
        pushed(&demo.app) > 0 && pushed(&second) > 0,
        "both instances push: {} and {} calls",
        pushed(&demo.app),
        pushed(&second)
    );
    let polled = |app: &App| app.health.polls.load(Ordering::Relaxed);
    assert!(
        polled(&demo.app) > 0 && polled(&second) == 0,
        "only the lease holder polls the source: {} and {} polls",
        polled(&demo.app),
        polled(&second)
    );

    // The polling instance gives its lease back as it stops, and the other one takes it at its next
    // round instead of waiting for the lease to run out.
    demo.stop().await.unwrap();
    let handed_over = std::time::Instant::now();
    while poller().await.unwrap().as_deref() != Some("pg-two") {
        assert!(
            handed_over.elapsed() < Duration::from_secs(10),
            "the other instance did not take over polling after the first stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second_shutdown.cancel();
    second_running.await.unwrap().unwrap();
    second.store.close().await;
    ledger.close().await;
    schema.drop().await;
}
