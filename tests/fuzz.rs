//! Fuzzing on the stable toolchain: the record parser and normalizer, the feed page parser and the portal
//! answer parser, fed with inputs grown from real shapes (the normalization fixtures and the simulator's
//! generated records) and mutated structurally: wrong types, odd numbers, duplicate keys, lone surrogate
//! escapes, bytes that are not UTF-8, deep nesting, very long strings, truncation and byte damage.
//!
//! Beyond "no panic", each target checks a property: the normalizer's outcome is the same twice and a record
//! with escapes that are not characters is never sent; a page whose own JSON is sound keeps every record,
//! whatever each holds (source-api.md quirk 11); an answer is never attributed to a `MaHoSo` that was not
//! sent, nor to one that more than one entry names. The process's peak memory stays under [`MEMORY_BOUND`].
//!
//! `TTHC_SYNC_FUZZ_INPUTS` sets the inputs per target (5,000 by default, the CI run); `TTHC_SYNC_FUZZ_SEED`
//! the seed (printed); `TTHC_SYNC_FUZZ_CASE` runs one case of that seed only. A failing input is written to
//! a file under the target directory, whose path is printed with the command that replays it.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Instant;

use jiff::Timestamp;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};
use tthc_sync::normalize::{MappingTables, Outcome, codes, normalize_bytes};
use tthc_sync::portal::client::item_answers;
use tthc_sync::portal::wire::{parse_code, read_envelope};
use tthc_sync::sim::generator::{GeneratorConfig, generate};
use tthc_sync::source::client::parse_search_page;
use tthc_sync::source::escapes::lone_surrogates;
use tthc_sync::source::feed::read_records;

/// Inputs per target when `TTHC_SYNC_FUZZ_INPUTS` is not set: a few seconds in a debug build.
const DEFAULT_INPUTS: u64 = 5_000;
/// The seed when `TTHC_SYNC_FUZZ_SEED` is not set, so that CI runs the same inputs every time.
const DEFAULT_SEED: u64 = 0x7474_6863_2d73_796e;
/// The test process's peak resident memory (`VmHWM`) must stay below this, whatever the number of inputs.
const MEMORY_BOUND: u64 = 256 * 1024 * 1024;
/// The longest string a mutation writes, in characters.
const LONG_STRING: usize = 100_000;
/// The largest record a mutation makes, serialized: the daemon normalizes records up to
/// `source.max_record_bytes` (8 MiB by default); 1 MiB keeps a million inputs within minutes.
const RECORD_CAP: usize = 1024 * 1024;
/// The deepest nesting a structural mutation builds; serde_json refuses more than 128 levels.
const DEEP_NESTING: usize = 300;

fn now() -> Timestamp {
    "2026-11-28T00:00:00+07:00"
        .parse()
        .expect("a valid timestamp")
}

// ---------------------------------------------------------------------------------------------------
// The driver

/// How a run is set: inputs per target, the seed, and optionally the one case to replay.
struct Run {
    inputs: u64,
    seed: u64,
    only_case: Option<u64>,
}

impl Run {
    fn from_env() -> Run {
        let read = |name: &str| {
            std::env::var(name).ok().map(|text| {
                let text = text.trim().replace('_', "");
                match text.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => text.parse(),
                }
                .unwrap_or_else(|error| panic!("{name} is not a number: {error}"))
            })
        };
        Run {
            inputs: read("TTHC_SYNC_FUZZ_INPUTS").unwrap_or(DEFAULT_INPUTS),
            seed: read("TTHC_SYNC_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
            only_case: read("TTHC_SYNC_FUZZ_CASE"),
        }
    }
}

/// One generated input: the bytes under test, and what the target needs beside them.
struct Input<Extra> {
    bytes: Vec<u8>,
    extra: Extra,
}

/// Runs `check` on `run.inputs` inputs made by `make`, each from its own generator seeded by (seed, case),
/// so that any case can be replayed alone. Stops at the first failure (a panic or a broken property),
/// writes its input to a file and fails with the replay command. `check` names what kind of input it met
/// (`dossier`, `invalid_text`, ...); the tally is printed and returned, for the targets to check that the
/// inputs reach past the parsers' first refusals.
fn fuzz<Extra: std::fmt::Debug>(
    target: &str,
    make: impl Fn(&mut ChaCha8Rng) -> Input<Extra>,
    check: impl Fn(&Input<Extra>) -> Result<&'static str, String>,
) -> BTreeMap<&'static str, u64> {
    let run = Run::from_env();
    let cases = match run.only_case {
        Some(case) => case..case + 1,
        None => 0..run.inputs,
    };
    println!(
        "fuzz {target}: seed {:#x}, {} input(s)",
        run.seed,
        cases.end - cases.start
    );
    let started = Instant::now();
    let mut bytes_total: u64 = 0;
    let mut tally = BTreeMap::new();
    for case in cases.clone() {
        let mut rng = case_rng(run.seed, case);
        let input = make(&mut rng);
        bytes_total += input.bytes.len() as u64;
        let verdict = catch_unwind(AssertUnwindSafe(|| check(&input)))
            .unwrap_or_else(|panic| Err(format!("panic: {}", panic_text(&*panic))));
        match verdict {
            Ok(kind) => *tally.entry(kind).or_insert(0) += 1,
            Err(problem) => {
                let path = write_failure(target, run.seed, case, &input.bytes);
                panic!(
                    "fuzz {target}: case {case} failed: {problem}\n  input: {}\n  beside it: {:?}\n  replay: \
                 TTHC_SYNC_FUZZ_SEED={:#x} TTHC_SYNC_FUZZ_CASE={case} cargo test --test fuzz {target}",
                    path.display(),
                    input.extra,
                    run.seed,
                );
            }
        }
    }
    let peak = peak_memory();
    println!(
        "fuzz {target}: {} input(s), {bytes_total} bytes, {:.1} s, 0 panics, process peak memory {} MiB; {tally:?}",
        cases.end - cases.start,
        started.elapsed().as_secs_f64(),
        peak / (1024 * 1024),
    );
    assert!(
        peak < MEMORY_BOUND,
        "fuzz {target}: peak memory {peak} bytes is over the bound of {MEMORY_BOUND}"
    );
    tally
}

/// With enough inputs, each of `kinds` must have been met at least once per thousand inputs: otherwise the
/// generator has drifted and the target no longer tests what it claims.
fn assert_reached(target: &str, tally: &BTreeMap<&'static str, u64>, kinds: &[&str]) {
    let total: u64 = tally.values().sum();
    if total < 1_000 {
        return;
    }
    for kind in kinds {
        let met = tally.get(kind).copied().unwrap_or(0);
        assert!(
            met * 1_000 >= total,
            "fuzz {target}: only {met} of {total} inputs were {kind}"
        );
    }
}

/// The generator of one case: the seed and the case number are its key, nothing else.
fn case_rng(seed: u64, case: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&case.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
        .unwrap_or_else(|| "(not a text)".into())
}

fn write_failure(target: &str, seed: u64, case: u64, bytes: &[u8]) -> PathBuf {
    let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    std::fs::create_dir_all(&directory).expect("the failure directory can be created");
    let path = directory.join(format!("{target}-seed{seed:x}-case{case}.json"));
    std::fs::write(&path, bytes).expect("the failing input can be written");
    path
}

/// The process's peak resident memory (`VmHWM` of /proc/self/status), in bytes.
fn peak_memory() -> u64 {
    let status =
        std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("/proc/self/status has VmHWM");
    let kibibytes: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmHWM is a number of kB");
    kibibytes * 1024
}

// ---------------------------------------------------------------------------------------------------
// The seed corpus

/// A real record shape and the mapping tables it goes with.
struct Seed {
    record: Value,
    fixture_tables: bool,
}

struct Corpus {
    seeds: Vec<Seed>,
    fixture_tables: MappingTables,
    default_tables: MappingTables,
}

impl Corpus {
    fn load() -> Corpus {
        let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/normalize");
        let mut seeds = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&directory)
            .expect("the normalization fixtures are readable")
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| {
                path.extension().is_some_and(|ext| ext == "json")
                    && path.file_name().is_some_and(|name| name != "tables.json")
            })
            .collect();
        names.sort();
        for path in names {
            let text = std::fs::read_to_string(&path).expect("a fixture is readable");
            let fixture: Value = serde_json::from_str(&text).expect("a fixture is JSON");
            seeds.push(Seed {
                record: fixture["source"].clone(),
                fixture_tables: true,
            });
        }
        assert!(seeds.len() >= 19, "the normalization fixtures are missing");
        let dataset = generate(
            &GeneratorConfig {
                seed: 7,
                dossiers: 300,
                tie_block: 0,
                quirk_share: 0.35,
                bad_share: 0.2,
                ..GeneratorConfig::default()
            },
            now(),
        );
        seeds.extend(dataset.dossiers.into_iter().map(|dossier| Seed {
            record: dossier.record,
            fixture_tables: false,
        }));
        let tables = std::fs::read_to_string(directory.join("tables.toml"))
            .expect("the fixture tables are readable");
        Corpus {
            seeds,
            fixture_tables: MappingTables::from_toml_str(&tables).expect("the fixture tables load"),
            default_tables: MappingTables::default(),
        }
    }

    fn pick(&self, rng: &mut ChaCha8Rng) -> &Seed {
        self.seeds.choose(rng).expect("the corpus is not empty")
    }

    fn tables(&self, fixture_tables: bool) -> &MappingTables {
        if fixture_tables {
            &self.fixture_tables
        } else {
            &self.default_tables
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Structural mutations of a JSON value

/// A mutated copy of `record` no larger than [`RECORD_CAP`] once serialized (the record itself when three
/// tries were all too large).
fn mutated(record: &Value, corpus: &Corpus, rng: &mut ChaCha8Rng) -> Value {
    for _ in 0..3 {
        let mut copy = record.clone();
        mutate(&mut copy, corpus, rng);
        if serialized_len(&copy) <= RECORD_CAP {
            return copy;
        }
    }
    record.clone()
}

fn serialized_len(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

/// Applies one to three structural mutations to `value`.
fn mutate(value: &mut Value, corpus: &Corpus, rng: &mut ChaCha8Rng) {
    for _ in 0..rng.random_range(1..=3) {
        let node = random_node(value, rng);
        match rng.random_range(0..10) {
            0..=2 => *node = odd_scalar(rng),
            3 => *node = Value::String(odd_string(rng)),
            4 => *node = nest(node.take(), rng.random_range(1..=DEEP_NESTING), rng),
            5 => match node {
                Value::Object(map) if !map.is_empty() => {
                    let index = rng.random_range(0..map.len());
                    let key = map
                        .keys()
                        .nth(index)
                        .cloned()
                        .expect("an index below the length");
                    map.shift_remove(&key);
                }
                Value::Array(items) if !items.is_empty() => {
                    items.remove(rng.random_range(0..items.len()));
                }
                other => *other = Value::Null,
            },
            6 => {
                // Many copies: a history of thousands of entries, a fee list that never ends.
                let wanted = if rng.random_bool(0.1) {
                    2_000
                } else {
                    rng.random_range(2..=20)
                };
                let copies = wanted.min(RECORD_CAP / serialized_len(node).max(1)).max(2);
                *node = Value::Array(vec![node.clone(); copies]);
            }
            7 => {
                // A part of another real record in its place.
                let mut donor = corpus.pick(rng).record.clone();
                *node = random_node(&mut donor, rng).take();
            }
            8 => *node = Value::Array(vec![node.take()]),
            _ => {
                let mut wrapper = Map::new();
                wrapper.insert("id".into(), node.take());
                *node = Value::Object(wrapper);
            }
        }
    }
}

/// A node reached by a random walk from the root.
fn random_node<'a>(value: &'a mut Value, rng: &mut ChaCha8Rng) -> &'a mut Value {
    // The path is chosen on a shared borrow first, then followed mutably.
    let mut path = Vec::new();
    let mut node: &Value = value;
    while rng.random_bool(0.7) {
        let children: Vec<&Value> = match node {
            Value::Object(map) => map.values().collect(),
            Value::Array(items) => items.iter().collect(),
            _ => Vec::new(),
        };
        if children.is_empty() {
            break;
        }
        let index = rng.random_range(0..children.len());
        path.push(index);
        node = children[index];
    }
    path.into_iter().fold(value, |node, index| match node {
        Value::Object(map) => map.values_mut().nth(index).expect("a child on the path"),
        Value::Array(items) => &mut items[index],
        _ => unreachable!("the path goes through objects and arrays only"),
    })
}

fn nest(value: Value, depth: usize, rng: &mut ChaCha8Rng) -> Value {
    let in_arrays = rng.random_bool(0.5);
    (0..depth).fold(value, |inner, _| {
        if in_arrays {
            Value::Array(vec![inner])
        } else {
            let mut map = Map::new();
            map.insert("a".into(), inner);
            Value::Object(map)
        }
    })
}

fn odd_scalar(rng: &mut ChaCha8Rng) -> Value {
    match rng.random_range(0..14) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => i64::MAX.into(),
        3 => i64::MIN.into(),
        4 => u64::MAX.into(),
        5 => (-1).into(),
        6 => 0.into(),
        7 => 1.5.into(),
        8 => (-0.0).into(),
        9 => 1e308.into(),
        10 => (9_007_199_254_740_993i64).into(),
        11 => rng.random_range(-100_000i64..100_000).into(),
        12 => Value::Array(Vec::new()),
        _ => Value::Object(Map::new()),
    }
}

fn odd_string(rng: &mut ChaCha8Rng) -> String {
    const PIECES: &[&str] = &[
        "",
        " ",
        "Nguyễn Văn An",
        "Nguye\u{302}\u{303}n",
        "Ph\u{F2}ng T\u{E0}i ch\u{ED}nh",
        "\u{200B}\u{FEFF}x\u{200D}",
        "\u{0}\u{7}\u{1F}\u{7F}\u{85}",
        "\u{FFFF}\u{FFFE}\u{1FFFF}",
        "\u{202E}abc",
        "😀👨‍👩‍👧",
        "0912345678",
        "+84 912 345 678; 0988",
        "2024-13-45T25:61:61.000+0700",
        "0000-00-00",
        "1705286400000",
        "31/12/2024",
        "75.000,50",
        "-1",
        "1e400",
        "null",
        "\\ud800",
        "a\r\nb\tc",
    ];
    let piece = *PIECES.choose(rng).expect("pieces");
    if rng.random_bool(0.02) {
        let unit = if piece.is_empty() { "x" } else { piece };
        let length = rng.random_range(1_000..=LONG_STRING);
        let mut long = String::new();
        while long.chars().count() < length {
            long.push_str(unit);
        }
        long
    } else {
        piece.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------------
// Writing JSON with tricks its syntax allows

/// Writes `value` as JSON, now and then with what JSON's syntax allows but a careful writer never does:
/// duplicate keys, escapes that are not characters, bytes that are not UTF-8 inside strings, every
/// character escaped, numbers no float holds. The output stays one sound JSON value as far as its
/// structure goes (a reader that parses only the structure accepts it).
fn write_tricky(value: &Value, out: &mut Vec<u8>, rate: f64, rng: &mut ChaCha8Rng) {
    match value {
        Value::Object(map) => {
            out.push(b'{');
            let mut first = true;
            let duplicate =
                (!map.is_empty() && rng.random_bool(rate)).then(|| rng.random_range(0..map.len()));
            for (index, (key, item)) in map.iter().enumerate() {
                let times = if duplicate == Some(index) { 2 } else { 1 };
                for time in 0..times {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    write_string(key, out, rate, rng);
                    out.push(b':');
                    if time == 0 {
                        write_tricky(item, out, rate, rng);
                    } else {
                        write_tricky(&odd_scalar(rng), out, rate, rng);
                    }
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_tricky(item, out, rate, rng);
            }
            out.push(b']');
        }
        Value::String(text) => write_string(text, out, rate, rng),
        Value::Number(_) if rng.random_bool(rate) => {
            const NUMBERS: &[&str] = &[
                "1e400",
                "-1e400",
                "1E-400",
                "123456789012345678901234567890",
                "-9223372036854775809",
                "18446744073709551616",
                "-0",
                "0.0000000000000000000000000001",
                "75000.000000000000000001",
            ];
            out.extend_from_slice(NUMBERS.choose(rng).expect("numbers").as_bytes());
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// How often [`write_tricky`] plays a trick on one input: on a third of the inputs, one string, object or
/// number in twenty; the others are written plainly, so that most inputs reach past the parser.
fn trick_rate(rng: &mut ChaCha8Rng) -> f64 {
    if rng.random_bool(0.3) { 0.05 } else { 0.0 }
}

fn write_string(text: &str, out: &mut Vec<u8>, rate: f64, rng: &mut ChaCha8Rng) {
    out.push(b'"');
    if !rng.random_bool(rate) {
        write_escaped(text, out);
    } else if rng.random_bool(0.25) {
        write_all_escaped(text, out);
    } else {
        let boundaries: Vec<usize> = text
            .char_indices()
            .map(|(at, _)| at)
            .chain([text.len()])
            .collect();
        let split = *boundaries.choose(rng).expect("at least the end");
        write_escaped(&text[..split], out);
        const INSERTS: &[&[u8]] = &[
            b"\\ud800",
            b"\\uDFFF",
            b"\\udbff\\u0041",
            b"\\ud83d\\ude00",
            b"\\ude00\\ud83d",
            b"\xff",
            b"\xc3",
            b"\x80\x80",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"\\u0000",
            b"\\ufeff",
            b"\\uffff",
        ];
        out.extend_from_slice(INSERTS.choose(rng).expect("inserts"));
        write_escaped(&text[split..], out);
    }
    out.push(b'"');
}

fn write_escaped(text: &str, out: &mut Vec<u8>) {
    let quoted = serde_json::to_string(text).expect("a string serializes");
    out.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
}

fn write_all_escaped(text: &str, out: &mut Vec<u8>) {
    let mut units = [0u16; 2];
    for character in text.chars() {
        for unit in character.encode_utf16(&mut units) {
            out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
        }
    }
}

/// Damages bytes the way a broken proxy or a cut connection does; the result is rarely sound JSON.
fn damage(bytes: &mut Vec<u8>, rng: &mut ChaCha8Rng) {
    for _ in 0..rng.random_range(1..=3) {
        let at = rng.random_range(0..=bytes.len());
        match rng.random_range(0..7) {
            0 => bytes.truncate(at),
            1 if at < bytes.len() => bytes[at] ^= 1 << rng.random_range(0..8),
            2 => bytes.insert(at, rng.random()),
            3 => {
                let end = rng.random_range(at..=bytes.len().min(at + 64));
                bytes.drain(at..end);
            }
            4 => {
                let end = rng.random_range(at..=bytes.len().min(at + 64));
                let span = bytes[at..end].to_vec();
                bytes.splice(at..at, span);
            }
            5 => {
                // Nesting far past any limit, as text: the parser must refuse it without recursing.
                let depth = rng.random_range(100..=100_000);
                let open = if rng.random_bool(0.5) { b'[' } else { b'{' };
                bytes.splice(at..at, std::iter::repeat_n(open, depth));
            }
            _ => {
                let bad: &[u8] = [&b"\xff"[..], b"\"", b"\\", b"\\u", b",", b"}", b"\x00"]
                    .choose(rng)
                    .expect("bytes");
                bytes.splice(at..at, bad.iter().copied());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Target 1: the record parser and normalizer

/// A mutated record; its bytes damaged now and then.
fn make_record(corpus: &Corpus, rng: &mut ChaCha8Rng) -> Input<bool> {
    let seed = corpus.pick(rng);
    let record = if rng.random_bool(0.7) {
        mutated(&seed.record, corpus, rng)
    } else {
        seed.record.clone()
    };
    let mut bytes = Vec::new();
    write_tricky(&record, &mut bytes, trick_rate(rng), rng);
    if rng.random_bool(0.2) {
        damage(&mut bytes, rng);
    }
    Input {
        bytes,
        extra: seed.fixture_tables,
    }
}

/// Normalizes `raw` (twice when `twice`: the same outcome both times); with escapes that are not characters it is held
/// back as `invalid_text`; a dossier's payload is JSON and its hash is the payload's.
fn check_record(raw: &[u8], tables: &MappingTables, twice: bool) -> Result<&'static str, String> {
    let first = normalize_bytes(raw, tables, now());
    if twice && format!("{first:?}") != format!("{:?}", normalize_bytes(raw, tables, now())) {
        return Err("two normalizations of the same bytes differ".into());
    }
    if lone_surrogates(raw).is_some() {
        match &first.outcome {
            Outcome::Rejected(findings)
                if findings
                    .first()
                    .is_some_and(|finding| finding.code == codes::INVALID_TEXT) => {}
            _ => {
                return Err(
                    "a record with escapes that are not characters is not invalid_text".into(),
                );
            }
        }
    }
    if let Outcome::Dossier(dossier) = &first.outcome {
        if serde_json::from_slice::<Value>(&dossier.payload).is_err() {
            return Err("a dossier's payload is not JSON".into());
        }
        if blake3::hash(&dossier.payload).to_hex().as_str() != dossier.hash {
            return Err("a dossier's hash is not its payload's".into());
        }
    }
    Ok(match &first.outcome {
        Outcome::Dossier(_) => "dossier",
        Outcome::Skipped(_) => "skipped",
        Outcome::Rejected(findings) => match findings.first().map(|finding| finding.code) {
            Some(codes::INVALID_TEXT) => "invalid_text",
            Some(codes::MALFORMED_RECORD) => "malformed_record",
            _ => "rejected",
        },
    })
}

#[test]
fn record_parser_and_normalizer() {
    let corpus = Corpus::load();
    let tally = fuzz(
        "record_parser_and_normalizer",
        |rng| make_record(&corpus, rng),
        |input| check_record(&input.bytes, corpus.tables(input.extra), true),
    );
    assert_reached(
        "record_parser_and_normalizer",
        &tally,
        &["dossier", "rejected", "invalid_text", "malformed_record"],
    );
}

// ---------------------------------------------------------------------------------------------------
// Target 2: the feed page parser

/// What a page input is made of.
#[derive(Debug)]
struct PageShape {
    records: usize,
    /// No damage: the page's own JSON is sound, only its records' contents are odd.
    sound: bool,
    fixture_tables: bool,
}

fn make_page(corpus: &Corpus, rng: &mut ChaCha8Rng) -> Input<PageShape> {
    let records = rng.random_range(0..=4);
    let fixture_tables = rng.random_bool(0.5);
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let mut content = b"\"content\":[".to_vec();
    for index in 0..records {
        if index > 0 {
            content.push(b',');
        }
        let seed = corpus.pick(rng);
        let record = if rng.random_bool(0.7) {
            mutated(&seed.record, corpus, rng)
        } else {
            seed.record.clone()
        };
        write_tricky(&record, &mut content, trick_rate(rng), rng);
    }
    content.push(b']');
    fields.push(content);
    for (name, value) in [
        ("number", "0".to_owned()),
        ("size", records.to_string()),
        ("totalElements", rng.random_range(-5i64..2_000).to_string()),
        ("totalPages", "1".to_owned()),
        ("last", rng.random::<bool>().to_string()),
    ] {
        if rng.random_bool(0.8) {
            fields.push(format!("\"{name}\":{value}").into_bytes());
        }
    }
    // The fields in any order, as a Spring page or a gateway may write them.
    for index in (1..fields.len()).rev() {
        fields.swap(index, rng.random_range(0..=index));
    }
    let mut bytes = b"{".to_vec();
    bytes.extend_from_slice(&fields.join(&b","[..]));
    bytes.push(b'}');
    let sound = rng.random_bool(0.75);
    if !sound {
        damage(&mut bytes, rng);
    }
    Input {
        bytes,
        extra: PageShape {
            records,
            sound,
            fixture_tables,
        },
    }
}

/// A sound page keeps all its records, each passed on to the normalizer; a damaged one may fail, as an
/// error, never a panic. Each record read is normalized as the daemon does (once: the first target checks
/// that twice give the same).
fn check_page(input: &Input<PageShape>, corpus: &Corpus) -> Result<&'static str, String> {
    let page = match parse_search_page(&input.bytes) {
        Ok(page) => page,
        Err(error) if input.extra.sound => {
            return Err(format!("a sound page failed: {error}"));
        }
        Err(_) => return Ok("damaged_page_refused"),
    };
    if input.extra.sound && page.content.len() != input.extra.records {
        return Err(format!(
            "a sound page of {} records gave {}",
            input.extra.records,
            page.content.len()
        ));
    }
    let count = page.content.len();
    let records = read_records(page.content);
    if records.len() != count {
        return Err(format!(
            "{count} raw records became {} records",
            records.len()
        ));
    }
    let tables = corpus.tables(input.extra.fixture_tables);
    let mut invalid_text = false;
    for record in &records {
        invalid_text |= check_record(record.raw.get().as_bytes(), tables, false)? == "invalid_text";
    }
    Ok(match (input.extra.sound, invalid_text) {
        (true, true) => "sound_page_with_invalid_text",
        (true, false) => "sound_page",
        (false, _) => "damaged_page_read",
    })
}

#[test]
fn feed_page_parser() {
    let corpus = Corpus::load();
    let tally = fuzz(
        "feed_page_parser",
        |rng| make_page(&corpus, rng),
        |input| check_page(input, &corpus),
    );
    assert_reached(
        "feed_page_parser",
        &tally,
        &[
            "sound_page",
            "sound_page_with_invalid_text",
            "damaged_page_refused",
        ],
    );
}

// ---------------------------------------------------------------------------------------------------
// Target 3: the portal answer parser

/// An answer to a sync call: entries for the items sent, missing ones, doubled ones, ones for items never
/// sent, codes in every spelling; its bytes damaged now and then. Beside it, the `MaHoSo` list sent.
fn make_answer(rng: &mut ChaCha8Rng) -> Input<Vec<String>> {
    let sent: Vec<String> = (0..rng.random_range(0..=8))
        .map(|index| {
            format!(
                "000.00.31.H60-2411{:02}-{index:04}",
                rng.random_range(0..30)
            )
        })
        .collect();
    let mut entries = Vec::new();
    for ma_ho_so in &sent {
        for _ in 0..[0, 1, 1, 1, 2][rng.random_range(0..5)] {
            entries.push(answer_entry(Value::String(ma_ho_so.clone()), rng));
        }
    }
    for _ in 0..rng.random_range(0..=2) {
        let stranger = match rng.random_range(0..6) {
            0 => Value::Null,
            1 => 7.into(),
            2 => Value::String(String::new()),
            3 => Value::String(format!("{} ", sent.first().map_or("X", String::as_str))),
            4 => Value::String(sent.first().map_or("X", String::as_str).to_lowercase()),
            _ => Value::String("000.00.99.H60-241101-9999".into()),
        };
        entries.push(answer_entry(stranger, rng));
    }
    for index in (1..entries.len()).rev() {
        entries.swap(index, rng.random_range(0..=index));
    }
    let mut answer = Map::new();
    answer.insert("error_code".into(), code_spelling(rng));
    if rng.random_bool(0.5) {
        answer.insert("message".into(), "Thành công".into());
    }
    match rng.random_range(0..10) {
        0 => {}
        1 => {
            answer.insert("result".into(), Value::Null);
        }
        2 => {
            answer.insert("result".into(), odd_scalar(rng));
        }
        _ => {
            answer.insert("result".into(), Value::Array(entries));
        }
    }
    let mut answer = Value::Object(answer);
    if rng.random_bool(0.3) {
        let node = random_node(&mut answer, rng);
        *node = odd_scalar(rng);
    }
    let mut bytes = Vec::new();
    write_tricky(&answer, &mut bytes, trick_rate(rng), rng);
    if rng.random_bool(0.1) {
        damage(&mut bytes, rng);
    }
    Input { bytes, extra: sent }
}

fn answer_entry(ma_ho_so: Value, rng: &mut ChaCha8Rng) -> Value {
    let mut entry = Map::new();
    if rng.random_bool(0.95) {
        entry.insert("MaHoSo".into(), ma_ho_so);
    }
    if rng.random_bool(0.9) {
        entry.insert("error_code".into(), code_spelling(rng));
    }
    if rng.random_bool(0.5) {
        entry.insert("message".into(), "Lỗi dữ liệu".into());
    }
    Value::Object(entry)
}

fn code_spelling(rng: &mut ChaCha8Rng) -> Value {
    match rng.random_range(0..10) {
        0..=3 => 0.into(),
        4 => "0".into(),
        5 => "00".into(),
        6 => " 2 ".into(),
        7 => rng.random_range(-1i64..100).into(),
        8 => 0.5.into(),
        _ => Value::Null,
    }
}

/// Each item answered has exactly one entry naming its `MaHoSo`, with that entry's code; every entry that
/// names no item sent is counted as ignored. Checked against the `result` the envelope holds.
fn check_answer(bytes: &[u8], sent: &[String]) -> Result<&'static str, String> {
    let Ok(envelope) = read_envelope(bytes) else {
        return Ok("envelope_refused");
    };
    if envelope.error_code.0 == -1 {
        // The client asks for a new session and calls again; the answer is never matched.
        return Ok("session_refused");
    }
    let items: Vec<(&str, &str)> = sent.iter().map(|id| (id.as_str(), "{}")).collect();
    let result = envelope.result.clone();
    let Ok(answers) = item_answers(envelope, &items) else {
        return Ok("answer_refused");
    };
    if answers.items.len() != sent.len() {
        return Err(format!(
            "{} items sent, {} answers",
            sent.len(),
            answers.items.len()
        ));
    }
    let entries = match &result {
        None => return Ok("overall_code_only"),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err("a result that is not a list was matched".into()),
    };
    let naming = |ma_ho_so: &str| {
        entries
            .iter()
            .filter(|entry| entry.get("MaHoSo").and_then(Value::as_str) == Some(ma_ho_so))
            .collect::<Vec<_>>()
    };
    for (ma_ho_so, answer) in sent.iter().zip(&answers.items) {
        let Some(answer) = answer else { continue };
        let named = naming(ma_ho_so);
        if named.len() != 1 {
            return Err(format!(
                "an item was answered while {} entries name it",
                named.len()
            ));
        }
        let code = named[0]
            .get("error_code")
            .and_then(parse_code)
            .unwrap_or(99);
        if answer.code != code {
            return Err(format!(
                "an item got code {} for its entry's {code}",
                answer.code
            ));
        }
    }
    let strangers = entries
        .iter()
        .filter(|entry| {
            entry
                .get("MaHoSo")
                .and_then(Value::as_str)
                .is_none_or(|ma_ho_so| !sent.iter().any(|id| id == ma_ho_so))
        })
        .count();
    if strangers != answers.ignored_entries {
        return Err(format!(
            "{strangers} entries name no item sent, {} were ignored",
            answers.ignored_entries
        ));
    }
    Ok(if answers.items.iter().any(Option::is_some) {
        "items_answered"
    } else {
        "nothing_answered"
    })
}

#[test]
fn portal_answer_parser() {
    let tally = fuzz("portal_answer_parser", make_answer, |input| {
        check_answer(&input.bytes, &input.extra)
    });
    assert_reached(
        "portal_answer_parser",
        &tally,
        &["envelope_refused", "answer_refused", "items_answered"],
    );
}

/// The case the page target's property rests on, written out: a record nested far deeper than serde_json's
/// recursion limit of 128 is still one record of its page, held back on its own as `malformed_record`.
#[test]
fn a_record_nested_past_the_recursion_limit_does_not_fail_its_page() {
    let deep = format!("{}1{}", "[".repeat(1_000), "]".repeat(1_000));
    let body = format!(
        r#"{{"content":[{{"id":"a","summary":{deep}}},{{"id":"b"}}],"totalElements":2,"last":true}}"#
    );
    let page = parse_search_page(body.as_bytes()).expect("the page's own JSON is sound");
    let records = read_records(page.content);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].id.as_deref(), Some("a"));
    let tables = MappingTables::default();
    let kind =
        check_record(records[0].raw.get().as_bytes(), &tables, true).expect("no broken property");
    assert_eq!(kind, "malformed_record");
}
