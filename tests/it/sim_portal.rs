//! The portal simulator against portal-api.md, over loopback HTTP as the daemon will see it.

use std::collections::HashSet;

use serde_json::{Value, json};
use tokio_util::sync::{CancellationToken, DropGuard};
use tthc_sync::portal::wire::parse_code;
use tthc_sync::sim::FaultLevel;
use tthc_sync::sim::portal::{
    AnswerFault, InjectedFault, PortalFaults, PortalSim, PortalSimConfig,
};

struct TestPortal {
    sim: PortalSim,
    base: String,
    client: reqwest::Client,
    _shutdown: DropGuard,
}

async fn spawn_portal(config: PortalSimConfig) -> TestPortal {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let sim = PortalSim::new(config);
    let shutdown = CancellationToken::new();
    let server = sim.clone();
    let token = shutdown.clone();
    tokio::spawn(async move { server.serve(listener, token).await });
    TestPortal {
        sim,
        base,
        client: reqwest::Client::new(),
        _shutdown: shutdown.drop_guard(),
    }
}

impl TestPortal {
    async fn auth_raw(&self, username: &str, password: &str) -> Value {
        self.client
            .post(format!("{}/auth", self.base))
            .header("dstcode", "H60")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("auth call")
            .json()
            .await
            .expect("auth JSON")
    }

    async fn session(&self) -> String {
        let answer = self.auth_raw("demo", "demo-secret").await;
        assert_eq!(code(&answer), 0, "{answer}");
        answer["session"].as_str().expect("session").to_owned()
    }

    async fn call(&self, body: Value) -> Value {
        let response = self.post(body).await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("integration JSON")
    }

    async fn post(&self, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/integration", self.base))
            .json(&body)
            .send()
            .await
            .expect("integration call")
    }

    async fn sync(&self, session: &str, updating: bool, data: Vec<Value>) -> Value {
        let is_updating = if updating { "True" } else { "False" };
        self.call(
            json!({"session": session, "madonvi": "000.00.00.H60", "service": "DongBoHoSoMC",
                         "isUpdating": is_updating, "data": data}),
        )
        .await
    }

    async fn progress(&self, session: &str, data: Vec<Value>) -> Value {
        self.call(
            json!({"session": session, "madonvi": "000.00.00.H60", "service": "CapNhatTienDoHoSoMC",
                         "data": data}),
        )
        .await
    }
}

fn code(answer: &Value) -> i64 {
    parse_code(&answer["error_code"]).unwrap_or_else(|| panic!("no error_code in {answer}"))
}

fn item_codes(answer: &Value) -> Vec<i64> {
    answer["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no result in {answer}"))
        .iter()
        .map(code)
        .collect()
}

fn dossier(ma_ho_so: &str) -> Value {
    json!({
        "MaHoSo": ma_ho_so, "MaTTHC": "1.004227", "TenTTHC": "Cấp giấy phép xây dựng",
        "MaLinhVuc": "G09-XD01", "TenLinhVuc": "Xây dựng", "KenhThucHien": "2",
        "ChuHoSo": "Nguyễn Văn A", "LoaiDoiTuong": "1", "NgayTiepNhan": "20240115090000",
        "NgayHenTra": "20240125170000", "TrangThaiHoSo": "4", "DonViXuLy": "000.00.31.H60"
    })
}

fn progress_entry(ma_ho_so: &str) -> Value {
    json!({"MaHoSo": ma_ho_so, "NguoiXuLy": "Trần Thị B", "ChucDanh": "Chuyên viên",
           "ThoiDiemXuLy": "20240116090000", "PhongBanXuLy": "Phòng Quản lý đô thị",
           "NoiDungXuLy": "Thẩm định hồ sơ", "TrangThai": "4"})
}

#[tokio::test]
async fn auth_gives_a_session_and_refuses_bad_credentials() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let ok = portal.auth_raw("demo", "demo-secret").await;
    assert_eq!(code(&ok), 0);
    assert!(
        ok["session"]
            .as_str()
            .is_some_and(|session| !session.is_empty())
    );
    let bad = portal.auth_raw("demo", "wrong").await;
    assert_eq!(code(&bad), -1);
    assert!(bad.get("session").is_none());

    let no_dstcode: Value = portal
        .client
        .post(format!("{}/auth", portal.base))
        .json(&json!({"username": "demo", "password": "demo-secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(code(&no_dstcode), -1);
    assert_eq!(portal.sim.call_count("auth"), 3);
}

#[tokio::test]
async fn several_sessions_are_valid_at_once() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let first = portal.session().await;
    let second = portal.session().await;
    assert_ne!(first, second);
    assert_eq!(
        item_codes(&portal.sync(&first, false, vec![dossier("A-1")]).await),
        [0]
    );
    assert_eq!(
        item_codes(&portal.sync(&second, false, vec![dossier("A-2")]).await),
        [0]
    );
}

#[tokio::test]
async fn an_expired_session_answers_minus_one_and_a_new_one_works() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    assert_eq!(
        item_codes(&portal.sync(&session, false, vec![dossier("S-1")]).await),
        [0]
    );

    portal.sim.expire_all_sessions();
    let expired = portal.sync(&session, false, vec![dossier("S-2")]).await;
    assert_eq!(code(&expired), -1);
    assert_eq!(
        expired["message"],
        "Phiên làm việc không hợp lệ hoặc đã hết hạn"
    );
    assert!(portal.sim.stored_dossier("S-2").is_none());

    let fresh = portal.session().await;
    assert_eq!(
        item_codes(&portal.sync(&fresh, false, vec![dossier("S-2")]).await),
        [0]
    );
    assert!(portal.sim.stored_dossier("S-2").is_some());
}

#[tokio::test]
async fn a_session_past_its_ttl_is_refused() {
    let config = PortalSimConfig {
        session_ttl: std::time::Duration::ZERO,
        ..Default::default()
    };
    let portal = spawn_portal(config).await;
    let session = portal.session().await;
    assert_eq!(
        code(&portal.sync(&session, false, vec![dossier("T-1")]).await),
        -1
    );
    assert_eq!(
        code(&portal.sync("made-up", false, vec![dossier("T-1")]).await),
        -1
    );
    assert!(portal.sim.stored().is_empty());
}

#[tokio::test]
async fn create_twice_answers_3_and_update_of_unknown_answers_4() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    assert_eq!(
        item_codes(&portal.sync(&session, false, vec![dossier("C-1")]).await),
        [0]
    );

    let mut changed = dossier("C-1");
    changed["TrangThaiHoSo"] = json!("9");
    changed["NgayKetThucXuLy"] = json!("20240120100000");
    let again = portal.sync(&session, false, vec![changed.clone()]).await;
    assert_eq!(item_codes(&again), [3]);
    assert_eq!(again["result"][0]["message"], "Hồ sơ đã tồn tại");
    assert_eq!(portal.sim.stored()["C-1"].dossier["TrangThaiHoSo"], "4");

    assert_eq!(
        item_codes(&portal.sync(&session, true, vec![changed.clone()]).await),
        [0]
    );
    let stored = portal.sim.stored_dossier("C-1").unwrap();
    assert_eq!(stored.dossier, changed);
    assert_eq!(stored.times_stored, 2);
    assert_eq!(portal.sim.dossier_versions_received("C-1"), 2);

    let unknown = portal.sync(&session, true, vec![dossier("C-404")]).await;
    assert_eq!(item_codes(&unknown), [4]);
    assert!(portal.sim.stored_dossier("C-404").is_none());
}

#[tokio::test]
async fn is_updating_is_read_leniently() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    let create = json!({"session": session, "service": "DongBoHoSoMC", "isUpdating": false,
                        "data": [dossier("L-1")]});
    assert_eq!(item_codes(&portal.call(create).await), [0]);
    let update = json!({"session": session, "service": "DongBoHoSoMC", "isUpdating": "true",
                        "data": [dossier("L-1")]});
    assert_eq!(item_codes(&portal.call(update).await), [0]);
    let calls = portal.sim.calls();
    let flags: Vec<_> = calls
        .iter()
        .filter(|call| call.service == "DongBoHoSoMC")
        .map(|call| call.is_updating)
        .collect();
    assert_eq!(flags, [Some(false), Some(true)]);
}

#[tokio::test]
async fn more_than_the_batch_limit_is_refused_whole() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    let data: Vec<Value> = (0..101)
        .map(|index| dossier(&format!("B-{index}")))
        .collect();
    let answer = portal.sync(&session, false, data).await;
    assert_eq!(code(&answer), 2);
    assert!(
        answer["message"].as_str().unwrap().contains("100"),
        "{answer}"
    );
    assert!(portal.sim.stored().is_empty());

    let data: Vec<Value> = (0..100)
        .map(|index| dossier(&format!("B-{index}")))
        .collect();
    assert_eq!(
        item_codes(&portal.sync(&session, false, data).await),
        vec![0; 100]
    );
    assert_eq!(portal.sim.stored().len(), 100);
}

#[tokio::test]
async fn validation_names_the_field() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;

    let mut no_due_date = dossier("V-1");
    no_due_date.as_object_mut().unwrap().remove("NgayHenTra");
    let mut withdrawn = no_due_date.clone();
    withdrawn["MaHoSo"] = json!("V-2");
    withdrawn["TrangThaiHoSo"] = json!("7");
    let mut bad_date = dossier("V-3");
    bad_date["NgayTiepNhan"] = json!("2024-01-15");
    let mut due_before_received = dossier("V-4");
    due_before_received["NgayHenTra"] = json!("20240101000000");
    let mut decomposed = dossier("V-5");
    decomposed["ChuHoSo"] = json!("Nguye\u{0302}\u{0303}n Văn A");
    let mut bad_channel = dossier("V-6");
    bad_channel["KenhThucHien"] = json!(4);
    let mut returned_without_date = dossier("V-7");
    returned_without_date["TrangThaiHoSo"] = json!("10");
    returned_without_date["NgayKetThucXuLy"] = json!("20240120100000");
    let mut too_long = dossier("V-8");
    too_long["TenTTHC"] = json!("ả".repeat(501));
    let mut bad_unit = dossier("V-9");
    bad_unit["DonViXuLy"] = json!("H60");

    let answer = portal
        .sync(
            &session,
            false,
            vec![
                no_due_date,
                withdrawn,
                bad_date,
                due_before_received,
                decomposed,
                bad_channel,
                returned_without_date,
                too_long,
                bad_unit,
            ],
        )
        .await;
    assert_eq!(code(&answer), 0);
    assert_eq!(item_codes(&answer), [2, 0, 2, 2, 2, 2, 2, 2, 2]);
    let messages: Vec<&str> = answer["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["message"].as_str().unwrap())
        .collect();
    let fields = [
        "NgayHenTra",
        "",
        "NgayTiepNhan",
        "NgayHenTra",
        "ChuHoSo",
        "KenhThucHien",
        "NgayTra",
        "TenTTHC",
        "DonViXuLy",
    ];
    for (message, field) in messages.iter().zip(fields) {
        if !field.is_empty() {
            assert!(
                message.contains(&format!("Trường {field} ")),
                "{message} should name {field}"
            );
        }
    }
    assert_eq!(answer["result"][0]["MaHoSo"], "V-1");
    assert_eq!(portal.sim.stored().keys().collect::<Vec<_>>(), ["V-2"]);
}

#[tokio::test]
async fn unknown_unit_or_procedure_answers_5() {
    let config = PortalSimConfig {
        known_units: Some(HashSet::from(["000.00.31.H60".to_owned()])),
        ..Default::default()
    };
    let portal = spawn_portal(config).await;
    let session = portal.session().await;
    let mut elsewhere = dossier("U-1");
    elsewhere["DonViXuLy"] = json!("000.00.32.H60");
    let answer = portal
        .sync(&session, false, vec![dossier("U-0"), elsewhere])
        .await;
    assert_eq!(item_codes(&answer), [0, 5]);
    assert!(
        answer["result"][1]["message"]
            .as_str()
            .unwrap()
            .contains("DonViXuLy")
    );

    portal
        .sim
        .set_known_procedures(Some(HashSet::from(["1.000001".to_owned()])));
    let answer = portal.sync(&session, false, vec![dossier("U-2")]).await;
    assert_eq!(item_codes(&answer), [5]);
    assert!(
        answer["result"][0]["message"]
            .as_str()
            .unwrap()
            .contains("MaTTHC")
    );
    assert_eq!(portal.sim.stored().len(), 1);
}

#[tokio::test]
async fn progress_needs_a_known_dossier_and_is_stored_once() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    assert_eq!(
        item_codes(&portal.progress(&session, vec![progress_entry("P-1")]).await),
        [4]
    );

    portal.sync(&session, false, vec![dossier("P-1")]).await;
    assert_eq!(
        item_codes(&portal.progress(&session, vec![progress_entry("P-1")]).await),
        [0]
    );
    assert_eq!(
        item_codes(&portal.progress(&session, vec![progress_entry("P-1")]).await),
        [0]
    );
    let mut long_name = progress_entry("P-1");
    long_name["NguoiXuLy"] = json!("x".repeat(51));
    let answer = portal.progress(&session, vec![long_name]).await;
    assert_eq!(item_codes(&answer), [2]);
    assert!(
        answer["result"][0]["message"]
            .as_str()
            .unwrap()
            .contains("NguoiXuLy")
    );

    let stored = portal.sim.stored_dossier("P-1").unwrap();
    assert_eq!(stored.progress, vec![progress_entry("P-1")]);
    assert_eq!(stored.progress_received, 2);
}

#[tokio::test]
async fn lookup_finds_stored_dossiers_with_their_update_time() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal.sync(&session, false, vec![dossier("Q-1")]).await;

    let found = portal
        .call(json!({"session": session, "service": "TraCuuHoSo", "mahoso": "Q-1"}))
        .await;
    assert_eq!(code(&found), 0);
    let stored = &found["result"][0];
    assert_eq!(stored["MaHoSo"], "Q-1");
    assert_eq!(stored["ChuHoSo"], "Nguyễn Văn A");
    let updated = stored["NgayCapNhat"].as_str().unwrap();
    assert_eq!(
        updated,
        portal.sim.stored_dossier("Q-1").unwrap().updated_at
    );
    assert_eq!(updated.len(), 14);

    let missing = portal
        .call(json!({"session": session, "service": "TraCuuHoSo", "mahoso": "Q-2"}))
        .await;
    assert_eq!(code(&missing), 4);
}

#[tokio::test]
async fn counts_by_unit_and_day_of_reception() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    let mut other_day = dossier("K-3");
    other_day["NgayTiepNhan"] = json!("20240116080000");
    let mut other_unit = dossier("K-4");
    other_unit["DonViXuLy"] = json!("000.00.32.H60");
    let mut next_month = dossier("K-5");
    next_month["NgayTiepNhan"] = json!("20240201080000");
    next_month["NgayHenTra"] = json!("20240210080000");
    portal
        .sync(
            &session,
            false,
            vec![
                dossier("K-1"),
                dossier("K-2"),
                other_day,
                other_unit,
                next_month,
            ],
        )
        .await;
    // Moving a dossier to another day moves its count.
    let mut moved = dossier("K-2");
    moved["NgayTiepNhan"] = json!("20240116100000");
    portal.sync(&session, true, vec![moved]).await;

    let answer = portal
        .call(json!({"session": session, "service": "ThongKeHoSoDongBo", "tungay": "20240101", "denngay": "20240131"}))
        .await;
    assert_eq!(code(&answer), 0);
    assert_eq!(
        answer["result"],
        json!([
            {"DonViXuLy": "000.00.31.H60", "Ngay": "20240115", "SoHoSo": 1},
            {"DonViXuLy": "000.00.31.H60", "Ngay": "20240116", "SoHoSo": 2},
            {"DonViXuLy": "000.00.32.H60", "Ngay": "20240115", "SoHoSo": 1},
        ])
    );
}

#[tokio::test]
async fn catalogs_answer() {
    let portal = spawn_portal(PortalSimConfig {
        known_units: Some(HashSet::from(["000.00.31.H60".to_owned()])),
        ..Default::default()
    })
    .await;
    let session = portal.session().await;
    let procedure = portal
        .call(json!({"session": session, "service": "LayThuTuc", "maTTHC": "1.004227"}))
        .await;
    assert_eq!(code(&procedure), 0);
    assert_eq!(procedure["result"][0]["MATTHC"], "1.004227");
    let unknown = portal
        .call(json!({"session": session, "service": "LayThuTuc", "maTTHC": "bogus"}))
        .await;
    assert_eq!(code(&unknown), 4);
    let units = portal
        .call(json!({"session": session, "service": "LayDanhMucCoQuan"}))
        .await;
    assert_eq!(units["result"][0]["MADONVI"], "000.00.31.H60");
}

#[tokio::test]
async fn a_429_rate_of_one_answers_429_with_retry_after_and_stores_nothing() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal.sim.set_faults(PortalFaults {
        too_many_requests_rate: 1.0,
        retry_after_seconds: 1,
        ..PortalFaults::none()
    });
    for index in 0..3 {
        let response = portal
            .post(
                json!({"session": session, "service": "DongBoHoSoMC", "isUpdating": "False",
                         "data": [dossier(&format!("R-{index}"))]}),
            )
            .await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "1");
    }
    assert!(portal.sim.stored().is_empty());
    let calls = portal.sim.calls();
    let faulted: Vec<_> = calls
        .iter()
        .filter(|call| call.service == "DongBoHoSoMC")
        .map(|call| (call.fault, call.overall_code))
        .collect();
    assert_eq!(
        faulted,
        vec![(Some(InjectedFault::TooManyRequests), None); 3]
    );
}

#[tokio::test]
async fn an_outage_answers_503_until_it_ends() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal.sim.set_outage(true);
    let body = json!({"session": session, "service": "DongBoHoSoMC", "isUpdating": "False", "data": [dossier("O-1")]});
    assert_eq!(portal.post(body.clone()).await.status(), 503);
    let auth = portal
        .client
        .post(format!("{}/auth", portal.base))
        .header("dstcode", "H60")
        .send()
        .await
        .unwrap();
    assert_eq!(auth.status(), 503);
    assert!(portal.sim.stored().is_empty());

    portal.sim.set_outage(false);
    let answer: Value = portal.post(body).await.json().await.unwrap();
    assert_eq!(item_codes(&answer), [0]);
}

#[tokio::test]
async fn a_cut_body_is_not_json_but_the_data_is_stored() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal.sim.set_faults(PortalFaults {
        cut_body_rate: 1.0,
        ..PortalFaults::none()
    });
    let response = portal
        .post(json!({"session": session, "service": "DongBoHoSoMC", "isUpdating": "False", "data": [dossier("X-1")]}))
        .await;
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("the cut body arrives whole");
    assert!(!body.is_empty());
    assert!(
        serde_json::from_slice::<Value>(&body).is_err(),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(portal.sim.dossier_versions_received("X-1"), 1);
}

#[tokio::test]
async fn a_not_json_answer_is_200_and_nothing_is_stored() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal.sim.set_faults(PortalFaults {
        not_json_rate: 1.0,
        ..PortalFaults::none()
    });
    let response = portal
        .post(json!({"session": session, "service": "DongBoHoSoMC", "isUpdating": "False", "data": [dossier("N-1")]}))
        .await;
    assert_eq!(response.status(), 200);
    assert!(serde_json::from_slice::<Value>(&response.bytes().await.unwrap()).is_err());
    assert!(portal.sim.stored().is_empty());
}

#[tokio::test]
async fn a_timeout_after_processing_stores_the_data_and_never_answers_in_time() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal.sim.set_faults(PortalFaults {
        timeout_after_processing_rate: 1.0,
        timeout_delay: std::time::Duration::from_secs(3600),
        ..PortalFaults::none()
    });
    let outcome = portal
        .client
        .post(format!("{}/integration", portal.base))
        .timeout(std::time::Duration::from_millis(300))
        .json(&json!({"session": session, "service": "DongBoHoSoMC", "isUpdating": "False", "data": [dossier("W-1")]}))
        .send()
        .await;
    assert!(outcome.is_err_and(|error| error.is_timeout()));
    assert_eq!(portal.sim.dossier_versions_received("W-1"), 1);
}

#[tokio::test]
async fn fault_levels_have_the_documented_totals() {
    let failing = |faults: &PortalFaults| {
        faults.too_many_requests_rate
            + faults.server_error_rate
            + faults.not_json_rate
            + faults.timeout_before_processing_rate
            + faults.timeout_after_processing_rate
            + faults.cut_body_rate
    };
    assert_eq!(failing(&PortalFaults::for_level(FaultLevel::None)), 0.0);
    let realistic = failing(&PortalFaults::for_level(FaultLevel::Realistic));
    assert!((0.01..=0.05).contains(&realistic), "{realistic}");
    let harsh = failing(&PortalFaults::for_level(FaultLevel::Harsh));
    assert!((0.15..=0.25).contains(&harsh), "{harsh}");
}

#[tokio::test]
async fn stats_report_stored_calls_and_faults() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal
        .sync(&session, false, vec![dossier("Z-1"), dossier("Z-2")])
        .await;
    portal.sim.set_outage(true);
    portal
        .post(json!({"session": session, "service": "DongBoHoSoMC"}))
        .await;
    let stats: Value = portal
        .client
        .get(format!("{}/_sim/stats", portal.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["stored"], 2);
    assert_eq!(stats["calls"]["DongBoHoSoMC"], 2);
    assert_eq!(stats["calls"]["auth"], 1);
    assert_eq!(stats["faults_injected"]["outage"], 1);
}

/// The daemon's own wire types must read what the simulator answers, and the simulator must accept
/// what they write.
#[tokio::test]
async fn answers_parse_with_the_client_wire_types() {
    use tthc_sync::portal::wire::{Dossier, Envelope, ItemResult, UnitDayCount};
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    let typed = Dossier {
        ma_ho_so: "W-100".to_owned(),
        ma_tthc: "1.004227".to_owned(),
        ten_tthc: "Cấp giấy phép xây dựng".to_owned(),
        ma_linh_vuc: "G09-XD01".to_owned(),
        ten_linh_vuc: "Xây dựng".to_owned(),
        kenh_thuc_hien: "1".to_owned(),
        chu_ho_so: "Lê Thu Hà".to_owned(),
        loai_doi_tuong: "1".to_owned(),
        ngay_tiep_nhan: "20240115090000".to_owned(),
        ngay_hen_tra: Some("20240125170000".to_owned()),
        trang_thai_ho_so: "10".to_owned(),
        ngay_ket_thuc_xu_ly: Some("20240120100000".to_owned()),
        ngay_tra: Some("20240121100000".to_owned()),
        don_vi_xu_ly: "000.00.31.H60".to_owned(),
        ..Default::default()
    };
    let body = json!({"session": session, "service": "DongBoHoSoMC", "isUpdating": "False",
                      "data": [serde_json::to_value(&typed).unwrap(), dossier("W-101")]});
    let envelope: Envelope = portal.post(body).await.json().await.expect("an Envelope");
    assert!(envelope.error_code.is_ok());
    let items: Vec<ItemResult> =
        serde_json::from_value(envelope.result.unwrap()).expect("ItemResults");
    assert_eq!(items.len(), 2);
    assert!(
        items.iter().all(|item| item.error_code.is_ok()),
        "{items:?}"
    );
    assert_eq!(items[0].ma_ho_so.as_deref(), Some("W-100"));

    let counts: Envelope = portal
        .post(json!({"session": session, "service": "ThongKeHoSoDongBo"}))
        .await
        .json()
        .await
        .unwrap();
    let rows: Vec<UnitDayCount> = serde_json::from_value(counts.result.unwrap()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].so_ho_so, 2);

    let stored: Dossier =
        serde_json::from_value(portal.sim.stored()["W-100"].dossier.clone()).unwrap();
    assert_eq!(stored, typed);
}

// ---------------------------------------------------------------------------------------------------
// Answer and late faults (portal-api.md 2.1, 2.2): the answer lies or comes late; what is stored does not.

fn entry_codes(answer: &Value) -> Vec<(String, i64)> {
    answer["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no result in {answer}"))
        .iter()
        .map(|entry| {
            (
                entry["MaHoSo"].as_str().unwrap_or_default().to_owned(),
                code(entry),
            )
        })
        .collect()
}

fn batch(prefix: &str, size: usize) -> (Vec<String>, Vec<Value>) {
    let codes: Vec<String> = (1..=size).map(|n| format!("{prefix}-{n:02}")).collect();
    let data = codes.iter().map(|code| dossier(code)).collect();
    (codes, data)
}

/// A version of `dossier(code)` told apart by its note.
fn version(code: &str, note: &str) -> Value {
    let mut dossier = dossier(code);
    dossier["GhiChu"] = Value::from(note);
    dossier
}

#[tokio::test]
async fn shuffled_answers_carry_every_entry_in_another_order() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal.sim.set_faults(PortalFaults {
        shuffled_rate: 1.0,
        ..PortalFaults::none()
    });
    for round in 0..5 {
        let (codes, data) = batch(&format!("SH{round}"), 2 + round);
        let answer = portal.sync(&session, false, data).await;
        let entries = entry_codes(&answer);
        let order: Vec<String> = entries.iter().map(|(code, _)| code.clone()).collect();
        assert_ne!(order, codes, "round {round}: the entries came in order");
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, codes, "round {round}: one entry per item");
        assert!(entries.iter().all(|(_, status)| *status == 0));
        for code in &codes {
            assert!(portal.sim.stored_dossier(code).is_some(), "{code}");
        }
    }
    let calls = portal.sim.calls();
    let last = calls.last().unwrap();
    assert_eq!(last.answer_faults, [AnswerFault::Shuffled]);
    assert_eq!(last.ma_ho_so.len(), 6);
    // Progress answers are shuffled too.
    let answer = portal
        .progress(
            &session,
            vec![progress_entry("SH0-01"), progress_entry("SH0-02")],
        )
        .await;
    let order: Vec<String> = entry_codes(&answer).into_iter().map(|(c, _)| c).collect();
    assert_eq!(order, ["SH0-02", "SH0-01"]);
}

#[tokio::test]
async fn an_unknown_entry_names_a_dossier_not_sent_and_stores_nothing_for_it() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal.sim.set_faults(PortalFaults {
        unknown_entry_rate: 1.0,
        ..PortalFaults::none()
    });
    let (codes, data) = batch("UK", 3);
    let answer = portal.sync(&session, false, data).await;
    let entries = entry_codes(&answer);
    assert_eq!(entries.len(), 4, "{answer}");
    let unknown: Vec<&(String, i64)> = entries
        .iter()
        .filter(|(code, _)| !codes.contains(code))
        .collect();
    assert_eq!(unknown.len(), 1, "{answer}");
    let (unknown_code, status) = unknown[0];
    assert_eq!(*status, 0, "the invented entry claims success");
    assert!(unknown_code.starts_with("UK-"), "{unknown_code}");
    assert!(portal.sim.stored_dossier(unknown_code).is_none());
    assert_eq!(portal.sim.stored_count(), 3);
    assert_eq!(
        portal.sim.calls().last().unwrap().answer_faults,
        [AnswerFault::UnknownEntry]
    );
    let missing = portal
        .call(json!({"session": session, "service": "TraCuuHoSo", "mahoso": unknown_code}))
        .await;
    assert_eq!(code(&missing), 4);
}

#[tokio::test]
async fn a_dropped_entry_leaves_its_dossier_stored() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal.sim.set_faults(PortalFaults {
        dropped_entry_rate: 1.0,
        ..PortalFaults::none()
    });
    let (codes, data) = batch("DR", 4);
    let answer = portal.sync(&session, false, data).await;
    let answered: HashSet<String> = entry_codes(&answer).into_iter().map(|(c, _)| c).collect();
    assert_eq!(answered.len(), 3, "{answer}");
    let dropped: Vec<&String> = codes
        .iter()
        .filter(|code| !answered.contains(*code))
        .collect();
    assert_eq!(dropped.len(), 1);
    assert!(
        portal.sim.stored_dossier(dropped[0]).is_some(),
        "the dossier without an entry is stored all the same"
    );
    assert_eq!(portal.sim.stored_count(), 4);
    // The per-item codes the simulator records are what it did, one per item.
    assert_eq!(portal.sim.calls().last().unwrap().item_codes, [0, 0, 0, 0]);
}

#[tokio::test]
async fn a_duplicated_entry_names_one_dossier_twice() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal.sim.set_faults(PortalFaults {
        duplicated_entry_rate: 1.0,
        ..PortalFaults::none()
    });
    let (codes, data) = batch("DU", 3);
    let answer = portal.sync(&session, false, data).await;
    let entries = entry_codes(&answer);
    assert_eq!(entries.len(), 4, "{answer}");
    let twice: Vec<&String> = codes
        .iter()
        .filter(|code| entries.iter().filter(|(c, _)| c == *code).count() == 2)
        .collect();
    assert_eq!(twice.len(), 1, "{answer}");
    assert!(
        codes
            .iter()
            .all(|code| entries.iter().any(|(c, _)| c == code))
    );
    assert_eq!(portal.sim.stored_count(), 3);
    let stats = portal.sim.stats();
    assert_eq!(stats["faults_injected"]["answer_duplicated_entry"], 1);
}

#[tokio::test]
async fn a_late_store_lands_after_a_later_call_and_the_portal_keeps_the_last_received() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    assert_eq!(
        item_codes(
            &portal
                .sync(
                    &session,
                    false,
                    vec![version("L-1", "v1"), version("L-2", "v1")]
                )
                .await
        ),
        [0, 0]
    );
    portal.sim.set_faults(PortalFaults {
        late_store_rate: 1.0,
        late_delay: std::time::Duration::from_millis(1500),
        ..PortalFaults::none()
    });
    // The client gives up long before the portal processes the old batch.
    let body = json!({"session": session, "service": "DongBoHoSoMC", "isUpdating": "True",
                      "data": [version("L-1", "v2"), version("L-2", "v2")]});
    let gave_up = portal
        .client
        .post(format!("{}/integration", portal.base))
        .timeout(std::time::Duration::from_millis(200))
        .json(&body)
        .send()
        .await;
    assert!(gave_up.is_err_and(|error| error.is_timeout()));
    assert_eq!(portal.sim.late_calls_waiting(), 1);
    assert_eq!(
        portal.sim.stored_dossier("L-1").unwrap().dossier["GhiChu"],
        "v1"
    );

    // A newer version goes through meanwhile and is stored...
    portal.sim.set_faults(PortalFaults::none());
    assert_eq!(
        item_codes(
            &portal
                .sync(&session, true, vec![version("L-1", "v3")])
                .await
        ),
        [0]
    );
    assert_eq!(
        portal.sim.stored_dossier("L-1").unwrap().dossier["GhiChu"],
        "v3"
    );

    // ...then the old batch lands, whole, and the portal keeps it: the last version it received.
    let landed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while portal.sim.late_calls_waiting() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(landed.is_ok(), "the late store never landed");
    let first = portal.sim.stored_dossier("L-1").unwrap();
    assert_eq!(first.dossier["GhiChu"], "v2");
    assert_eq!(first.times_stored, 3);
    assert_eq!(
        portal.sim.stored_dossier("L-2").unwrap().dossier["GhiChu"],
        "v2"
    );

    // TraCuuHoSo shows what the portal holds: the old version, exactly as received, with NgayCapNhat.
    let found = portal
        .call(json!({"session": session, "service": "TraCuuHoSo", "mahoso": "L-1"}))
        .await;
    let mut held = found["result"][0].clone();
    let updated = held
        .as_object_mut()
        .unwrap()
        .remove("NgayCapNhat")
        .expect("NgayCapNhat");
    assert_eq!(held, version("L-1", "v2"));
    assert_eq!(updated, first.updated_at.as_str());

    let late_call = portal
        .sim
        .calls()
        .into_iter()
        .find(|call| call.fault == Some(InjectedFault::LateStore))
        .expect("the late call is recorded");
    assert_eq!(late_call.item_codes, [0, 0]);
    let processed = late_call.processed_at.expect("processed");
    assert!(processed.duration_since(late_call.at).as_millis() >= 1400);
}

#[tokio::test]
async fn a_late_answer_is_processed_at_once_and_answered_late() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal.sim.set_faults(PortalFaults {
        late_answer_rate: 1.0,
        late_delay: std::time::Duration::from_millis(800),
        ..PortalFaults::none()
    });
    let body = json!({"session": session, "service": "DongBoHoSoMC", "isUpdating": "False",
                      "data": [version("LA-1", "v1")]});
    let gave_up = portal
        .client
        .post(format!("{}/integration", portal.base))
        .timeout(std::time::Duration::from_millis(200))
        .json(&body)
        .send()
        .await;
    assert!(gave_up.is_err_and(|error| error.is_timeout()));
    assert_eq!(
        portal.sim.stored_dossier("LA-1").unwrap().dossier["GhiChu"],
        "v1"
    );

    // A client that waits long enough gets the full answer, late.
    let started = std::time::Instant::now();
    let answer = portal
        .sync(&session, true, vec![version("LA-1", "v2")])
        .await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(750));
    assert_eq!(item_codes(&answer), [0]);
    assert_eq!(
        portal.sim.stored_dossier("LA-1").unwrap().dossier["GhiChu"],
        "v2"
    );
    assert_eq!(portal.sim.stats()["faults_injected"]["late_answer"], 2);
}

#[tokio::test]
async fn late_faults_spare_lookups_and_sessions() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal.sync(&session, false, vec![dossier("LK-1")]).await;
    portal.sim.set_faults(PortalFaults {
        late_store_rate: 1.0,
        late_delay: std::time::Duration::from_secs(3600),
        ..PortalFaults::none()
    });
    let found = portal
        .call(json!({"session": session, "service": "TraCuuHoSo", "mahoso": "LK-1"}))
        .await;
    assert_eq!(code(&found), 0);
    assert!(!portal.session().await.is_empty());
}

#[tokio::test]
async fn the_sim_endpoint_shows_what_the_portal_holds_for_a_dossier() {
    let portal = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    portal
        .sync(&session, false, vec![version("E-1", "v1")])
        .await;
    portal
        .sync(&session, true, vec![version("E-1", "v2")])
        .await;
    let held: Value = portal
        .client
        .get(format!("{}/_sim/dossiers/E-1", portal.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(held["dossier"], version("E-1", "v2"));
    assert_eq!(held["times_stored"], 2);
    assert_eq!(
        held["NgayCapNhat"],
        portal
            .sim
            .stored_dossier("E-1")
            .unwrap()
            .updated_at
            .as_str()
    );
    let missing = portal
        .client
        .get(format!("{}/_sim/dossiers/E-2", portal.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// An empty unit catalog (a portal that lists none) is cached like any other answer: the pre-flight asks
/// for it again once per refresh interval, not at every poll (issue 10, item 6).
#[tokio::test]
async fn an_empty_unit_catalog_is_asked_for_once_per_refresh_interval() {
    use std::sync::Arc;
    use std::time::Duration;
    use tthc_sync::commands::demo::{Demo, demo_settings};
    use tthc_sync::config::Settings;
    use tthc_sync::http::RetryPolicy;
    use tthc_sync::portal::client::PortalClient;
    use tthc_sync::sync::catalog::{CatalogOptions, PortalCatalog};

    let shutdown = CancellationToken::new();
    let config = PortalSimConfig {
        seed: 1,
        faults: PortalFaults::for_level(FaultLevel::None),
        ..PortalSimConfig::default()
    };
    let (portal, address) = Demo::serve_portal(config, &shutdown).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::from_toml(&demo_settings(
        "http://127.0.0.1:9",
        &format!("http://{address}"),
        &dir.path().join("tthc-sync.db"),
    ))
    .unwrap();
    let client = Arc::new(PortalClient::new(&settings.portal, RetryPolicy::none()).unwrap());
    let catalog = PortalCatalog::new(
        client,
        CatalogOptions {
            refresh: Duration::from_secs(3_600),
            call_timeout: Duration::from_secs(10),
            retry_after_failure: Duration::from_secs(60),
        },
    );
    for _ in 0..5 {
        assert!(
            !catalog.refresh_units().await,
            "an empty catalog changes nothing"
        );
    }
    assert_eq!(portal.call_count("LayDanhMucCoQuan"), 1);
    // An operator's reload forgets it: the next refresh asks again.
    catalog.forget().await;
    catalog.refresh_units().await;
    assert_eq!(portal.call_count("LayDanhMucCoQuan"), 2);
    shutdown.cancel();
}

// ---------------------------------------------------------------------------------------------------
// Compact storage, the rate limit and latency

#[tokio::test]
async fn without_recorded_payloads_the_portal_keeps_hashes_and_the_fields_it_serves() {
    let portal = spawn_portal(PortalSimConfig {
        record_payloads: false,
        ..Default::default()
    })
    .await;
    let recording = spawn_portal(PortalSimConfig::default()).await;
    let session = portal.session().await;
    let recording_session = recording.session().await;
    let mut moved = dossier("C-2");
    moved["NgayTiepNhan"] = json!("20240116100000");
    let data = vec![dossier("C-1"), dossier("C-2")];
    portal.sync(&session, false, data.clone()).await;
    portal.sync(&session, true, vec![moved.clone()]).await;
    recording.sync(&recording_session, false, data).await;
    recording.sync(&recording_session, true, vec![moved]).await;

    // The same hashes as a recording portal, and the same counts.
    let compact = portal.sim.stored();
    let full = recording.sim.stored();
    assert_eq!(compact.len(), 2);
    for (code, stored) in &compact {
        assert_eq!(stored.payload_hash, full[code].payload_hash, "{code}");
        assert_eq!(stored.times_stored, full[code].times_stored, "{code}");
        assert_eq!(stored.payload_hash.len(), 32);
    }
    assert_ne!(compact["C-1"].payload_hash, compact["C-2"].payload_hash);
    let counts =
        json!({"service": "ThongKeHoSoDongBo", "tungay": "20240101", "denngay": "20240131"});
    let mut ask = counts.clone();
    ask["session"] = json!(session);
    let mut ask_recording = counts;
    ask_recording["session"] = json!(recording_session);
    assert_eq!(
        portal.call(ask).await["result"],
        recording.call(ask_recording).await["result"]
    );

    // TraCuuHoSo answers the fields kept, and nothing else of the payload.
    let found = portal
        .call(json!({"session": session, "service": "TraCuuHoSo", "mahoso": "C-2"}))
        .await;
    let held = &found["result"][0];
    for (field, value) in [
        ("MaHoSo", "C-2"),
        ("MaTTHC", "1.004227"),
        ("TenLinhVuc", "Xây dựng"),
        ("DonViXuLy", "000.00.31.H60"),
        ("NgayTiepNhan", "20240116100000"),
        ("TrangThaiHoSo", "4"),
    ] {
        assert_eq!(held[field], value, "{field}: {held}");
    }
    assert!(held.get("ChuHoSo").is_none(), "{held}");
    assert_eq!(held["NgayCapNhat"].as_str().map(str::len), Some(14));
    let procedure = portal
        .call(json!({"session": session, "service": "LayThuTuc", "maTTHC": "1.004227"}))
        .await;
    assert_eq!(procedure["result"][0]["TENTTHC"], "Cấp giấy phép xây dựng");

    // Progress is counted once per key; no call is kept, but every call is counted.
    for _ in 0..2 {
        let answer = portal
            .call(json!({"session": session, "service": "CapNhatTienDoHoSoMC",
                         "data": [progress_entry("C-1")]}))
            .await;
        assert_eq!(code(&answer["result"][0]), 0, "{answer}");
    }
    let stored = portal.sim.stored_dossier("C-1").expect("stored");
    assert_eq!(stored.progress_received, 2);
    assert!(stored.progress.is_empty());
    let stats = portal.sim.stats();
    assert_eq!(stats["progress_entries"], 1);
    assert!(portal.sim.calls().is_empty());
    assert!(
        stats["calls_total"].as_u64().expect("calls_total") >= 7,
        "{stats}"
    );
    assert!(!portal.sim.overwrite_field("C-1", "ChuHoSo", json!("x")));
}

/// Posts `count` lookups at once; returns each answer's status and `Retry-After`.
async fn lookups_at_once(
    portal: &TestPortal,
    session: &str,
    count: usize,
) -> Vec<(u16, Option<String>)> {
    let calls = (0..count).map(|_| {
        portal.post(json!({"session": session, "service": "TraCuuHoSo", "mahoso": "none"}))
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|response| {
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            (response.status().as_u16(), retry)
        })
        .collect()
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_beyond_it_and_counts_them() {
    let portal = spawn_portal(PortalSimConfig {
        rate_limit: Some(2),
        ..Default::default()
    })
    .await;
    let session = portal.session().await;
    // 20 calls at once against 2 a second: unless the 20 are spread over 9 seconds, most are refused.
    let answers = lookups_at_once(&portal, &session, 20).await;
    let refused: Vec<&(u16, Option<String>)> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    assert!(!refused.is_empty(), "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(status, _)| matches!(status, 200 | 429)),
        "{answers:?}"
    );
    for (_, retry_after) in &refused {
        let seconds: u64 = retry_after
            .as_deref()
            .expect("Retry-After on every 429")
            .parse()
            .expect("Retry-After in whole seconds");
        assert!(seconds >= 1);
    }
    let stats = portal.sim.stats();
    assert_eq!(stats["rejected429"], refused.len() as u64, "{stats}");
    // A refused call is not processed: the calls seen are the auth and the calls let through.
    assert_eq!(
        portal.sim.call_count("TraCuuHoSo"),
        answers.len() - refused.len()
    );
}

#[tokio::test]
async fn within_the_rate_limit_no_call_is_refused() {
    let portal = spawn_portal(PortalSimConfig {
        rate_limit: Some(1000),
        ..Default::default()
    })
    .await;
    let session = portal.session().await;
    let answers = lookups_at_once(&portal, &session, 30).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    assert_eq!(portal.sim.stats()["rejected429"], 0);
}

#[tokio::test]
async fn every_call_takes_at_least_the_latency() {
    use std::time::{Duration, Instant};
    let portal = spawn_portal(PortalSimConfig {
        latency: tthc_sync::sim::network::Latency::from_millis(300, 100),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let session = portal.session().await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    for _ in 0..3 {
        let started = Instant::now();
        let answer = portal
            .call(json!({"session": session, "service": "TraCuuHoSo", "mahoso": "none"}))
            .await;
        assert_eq!(code(&answer), 4);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
    // The simulator's own endpoints are not delayed by the network it simulates: nothing to time there,
    // but they answer.
    assert_eq!(portal.sim.stats()["calls_total"], 4);
}
