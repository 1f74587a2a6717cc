//! Configuration: a wrong value stops startup with a message naming the key; secrets come from files;
//! the environment overrides the file.

use std::io::Write;

use tthc_sync::config::{Settings, masked_url, resolve_secret};

const VALID: &str = r#"
[source]
base_url = "http://127.0.0.1:1"
client_id = "demo"
client_secret = "s"

[portal]
base_url = "http://127.0.0.1:2"
dstcode = "D"
username = "u"
password = "p"
madonvi = "000.00.00.H60"
"#;

fn error_of(text: &str) -> String {
    Settings::from_toml(text)
        .expect_err("the configuration should be refused")
        .to_string()
}

#[test]
fn a_valid_file_loads_with_defaults() {
    let settings = Settings::from_toml(VALID).unwrap();
    assert_eq!(settings.portal.batch_size, 100);
    assert_eq!(settings.source.lookback_seconds, 600);
    assert_eq!(settings.log.format, "human");
}

#[test]
fn a_wrong_value_names_its_key() {
    let cases = [
        (
            VALID.replace("madonvi", "batch_size = 500\nmadonvi"),
            "portal.batch_size",
        ),
        (
            VALID.replace(
                "client_id = \"demo\"",
                "client_id = \"demo\"\npage_size = 0",
            ),
            "source.page_size",
        ),
        (
            VALID.replace("http://127.0.0.1:2", "ftp://portal"),
            "portal.base_url",
        ),
        (
            VALID.replace("http://127.0.0.1:1", "not a url"),
            "source.base_url",
        ),
        (format!("{VALID}\n[log]\nformat = \"xml\"\n"), "log.format"),
        (
            format!("{VALID}\n[source.http]\nca_file = \"/nonexistent/ca.pem\"\n"),
            "source.http.ca_file",
        ),
        (
            VALID.replace("madonvi", "concurrency = \"four\"\nmadonvi"),
            "concurrency",
        ),
        (
            VALID.replace("madonvi", "batch_sise = 10\nmadonvi"),
            "batch_sise",
        ),
        (
            format!("{VALID}\n[store]\nurl = \"mysql://db.example/tthc\"\n"),
            "store.url",
        ),
        (
            format!("{VALID}\n[store]\npool_size = 0\n"),
            "store.pool_size",
        ),
        (
            format!("{VALID}\n[store]\nretention_days = 7\n"),
            "store.retention_days",
        ),
    ];
    for (text, key) in cases {
        let message = error_of(&text);
        assert!(
            message.contains(key),
            "the message should name {key}: {message}"
        );
    }
}

#[test]
fn a_gateway_cannot_share_the_sources_token_header() {
    let text = format!(
        "{VALID}\n[source.gateway]\ntoken_url = \"http://127.0.0.1:3/token\"\nclient_id = \"g\"\nclient_secret = \"x\"\n"
    );
    assert!(error_of(&text).contains("source.gateway.header"));
    let moved = text.replace(
        "client_secret = \"s\"",
        "client_secret = \"s\"\nauth_header = \"X-Access-Token\"",
    );
    Settings::from_toml(&moved).expect("a gateway with the source token in another header is fine");
}

#[test]
fn secrets_come_from_files_and_never_appear_in_errors() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "file-secret").unwrap();
    let secret = resolve_secret(
        "portal.password",
        None,
        Some(file.path()),
        "portal_password",
    )
    .unwrap();
    assert_eq!(secret, "file-secret");
    let missing = resolve_secret("portal.password", None, None, "no_such_credential")
        .unwrap_err()
        .to_string();
    assert!(missing.contains("portal.password"), "{missing}");
    let unreadable = resolve_secret(
        "portal.password",
        None,
        Some(std::path::Path::new("/nonexistent/pw")),
        "x",
    )
    .unwrap_err()
    .to_string();
    assert!(unreadable.contains("portal.password_file"), "{unreadable}");
}

#[test]
fn a_database_password_never_appears_in_errors() {
    let refused = error_of(&format!(
        "{VALID}\n[store]\nurl = \"postgres://sync:hunter2@db host/tthc\"\n"
    ));
    assert!(refused.contains("store.url"), "{refused}");
    assert!(!refused.contains("hunter2"), "{refused}");
    assert_eq!(
        masked_url("postgres://sync:hunter2@db.example:5432/tthc?sslmode=require"),
        "postgres://sync:***@db.example:5432/tthc?sslmode=require"
    );
    assert_eq!(
        masked_url("postgres://sync@db.example/tthc?password=hunter2&sslmode=require"),
        "postgres://sync@db.example/tthc?password=***&sslmode=require"
    );
    assert!(!masked_url("postgres://sync:hunter2@db host/tthc").contains("hunter2"));
}

#[test]
fn the_database_password_is_optional_and_read_from_its_file() {
    let with_url = format!("{VALID}\n[store]\nurl = \"postgres://sync@db.example/tthc\"\n");
    let settings = Settings::from_toml(&with_url).unwrap();
    // No password given: the URL, ~/.pgpass or a trusted connection decide.
    assert_eq!(settings.store.password().unwrap(), None);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "db-secret").unwrap();
    let mut settings = settings;
    settings.store.password_file = Some(file.path().to_path_buf());
    assert_eq!(
        settings.store.password().unwrap().as_deref(),
        Some("db-secret")
    );
    settings.store.password_file = Some("/nonexistent/pw".into());
    let unreadable = settings.store.password().unwrap_err().to_string();
    assert!(unreadable.contains("store.password_file"), "{unreadable}");
}

#[test]
fn the_environment_overrides_the_file() {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(VALID.as_bytes()).unwrap();
    // The variables are given to the loader, not set on the process: the other tests share it.
    let environment = [("TTHC_SYNC__PORTAL__BATCH_SIZE".to_owned(), "40".to_owned())].into();
    let settings = Settings::load_with_environment(Some(file.path()), Some(environment));
    assert_eq!(settings.unwrap().portal.batch_size, 40);
}

#[test]
fn the_shipped_examples_are_valid() {
    let production = std::fs::read_to_string("config/tthc-sync.example.toml").unwrap();
    // The example leaves secrets to files or credentials; give them inline for this check only.
    let production = production
        .replacen("[source]\n", "[source]\nclient_secret = \"x\"\n", 1)
        .replacen("[portal]\n", "[portal]\npassword = \"x\"\n", 1);
    Settings::from_toml(&production).expect("config/tthc-sync.example.toml");
    let demo = tthc_sync::commands::demo::demo_settings(
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        std::path::Path::new("/tmp/x.db"),
    );
    Settings::from_toml(&demo).expect("config/demo.toml");
    tthc_sync::normalize::MappingTables::load("config/mapping.example.toml")
        .expect("config/mapping.example.toml");
}

/// `check-config` on a file whose mapping tables have problems lists every one of them and fails; on
/// valid tables it says what they hold.
#[test]
fn check_config_reports_every_table_problem() {
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("mapping.toml");
    let config = dir.path().join("tthc-sync.toml");
    std::fs::write(
        &config,
        format!(
            "{VALID}\n[mapping]\ntables_file = {:?}\n",
            tables.display().to_string()
        ),
    )
    .unwrap();
    let check = || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tthc-sync"))
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    std::fs::write(
        &tables,
        r#"
[units]
"ag-1" = "not-a-code"

[procedures]
"LOCAL-1" = "1.2.3"

[[successions]]
from = "000.00.01.H22"
to = "000.00.02.H22"
effective = "2025-07-01"
old_code_still_known_to_portal = true

[[successions]]
from = "000.00.02.H22"
to = "000.00.01.H22"
effective = "2025-07-01"
old_code_still_known_to_portal = true
"#,
    )
    .unwrap();
    let (ok, _, stderr) = check();
    assert!(!ok, "bad tables should fail check-config");
    assert!(stderr.contains("mapping.tables_file"), "{stderr}");
    assert!(stderr.contains("units.\"ag-1\""), "{stderr}");
    assert!(stderr.contains("procedures.\"LOCAL-1\""), "{stderr}");
    assert!(stderr.to_lowercase().contains("cycle"), "{stderr}");

    std::fs::write(&tables, "[units]\n\"ag-1\" = \"000.00.31.H60\"\n").unwrap();
    let (ok, stdout, stderr) = check();
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 unit(s)"), "{stdout}");
    assert!(stdout.contains("is valid"), "{stdout}");
}

#[test]
fn the_status_server_asks_for_a_token_off_loopback_only() {
    let settings = Settings::from_toml(VALID).unwrap();
    assert_eq!(settings.status.listen, "127.0.0.1:9464");
    assert_eq!(settings.status.token().unwrap(), None, "loopback: no token");

    let wrong = error_of(&format!("{VALID}\n[status]\nlisten = \"localhost\"\n"));
    assert!(wrong.contains("status.listen"), "{wrong}");

    let open =
        Settings::from_toml(&format!("{VALID}\n[status]\nlisten = \"0.0.0.0:9464\"\n")).unwrap();
    let error = open
        .status
        .token()
        .expect_err("no token off loopback")
        .to_string();
    assert!(error.contains("status.token_file"), "{error}");

    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "the-status-token").unwrap();
    let with_token = Settings::from_toml(&format!(
        "{VALID}\n[status]\nlisten = \"0.0.0.0:9464\"\ntoken_file = {:?}\n",
        file.path().display().to_string()
    ))
    .unwrap();
    assert_eq!(
        with_token.status.token().unwrap().as_deref(),
        Some("the-status-token")
    );
    let debug = format!("{with_token:?}");
    assert!(
        !debug.contains("the-status-token"),
        "settings never hold the token itself"
    );
}
