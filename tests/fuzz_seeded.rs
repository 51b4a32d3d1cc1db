//! A short, deterministic run of each fuzz target (issue 16): the committed seed corpus in
//! `fuzz/seeds/TARGET/`, then a fixed number of mutations of it drawn from a fixed seed, through
//! the same property checks the cargo-fuzz targets run (`fuzz/src/lib.rs`). A failure prints
//! the input; save it under `fuzz/seeds/TARGET/` once fixed, so that it is replayed from then
//! on. The long runs are `scripts/fuzz.sh` (docs/fuzzing.md).

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::Path;

/// Tokens the mutator splices in, per target: the syntax each parser cares about.
#[rustfmt::skip]
const CONFIG_TOKENS: &[&[u8]] = &[
    b"\n", b"  ", b"- ", b": ", b"{", b"}", b"[", b"]", b",", b"&a ", b"*a", b"<<: *a", b"~",
    b"\"", b"'", b"!!str ", b"services:\n", b"outputs:\n", b"frontends:\n", b"daemon:\n",
    b"refresh: ", b"settle_max: ", b"999999999999y", b"18446744073709551615", b"builtin:",
    b"haproxy", b"varnish", b"static: ", b"file: ", b"exec: ", b"{path}", b"{staged}", b"vars: ",
    b"slots: ", b"0 */5 * * * *",
];
#[rustfmt::skip]
const DISCOVERY_TOKENS: &[&[u8]] = &[
    b"[", b"]", b"{", b"}", b",", b":", b"\"", b"- ", b"\n", b"  ", b"\"targets\"", b"\"labels\"",
    b"\"address\"", b"\"port\"", b"\"weight\"", b"\"zone\"", b"\"tags\"", b"0", b"65536",
    b"4294967296", b"-1", b"null", b"1e3", b"\"::1\"", b"\"[::1]:80\"", b"\"a-b.example\"",
    b"&x ", b"*x", b"\\u0000",
];
#[rustfmt::skip]
const DURATION_TOKENS: &[&[u8]] = &[
    b"0", b"1", b"9", b"99999999999999999999", b"s", b"ms", b"us", b"ns", b"m", b"h", b"d",
    b"w", b"M", b"y", b" ", b"\"", b"*", b"/", b"-", b",", b"?", b"L", b"W", b"#", b"@hourly",
    b"JAN", b"MON", b"\n", b"- ", b"!!str ",
];
#[rustfmt::skip]
const ESCAPING_TOKENS: &[&[u8]] = &[
    b"\xff", b"%[", b"]", b"\n", b"\r", b"#", b";", b"{", b"}", b"\"", b"'", b"\\", b"$", b"{{",
    b"}}", b" ", b"\t", b"\x00", b"\x1b[", b"\xe2\x80\xa8", b"\xc2\x85", b"<", b">", b":80",
    b"[::1]", b"10.0.0.1", b"-", b".", b"_2",
];

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// One mutation of a seed, libFuzzer style: a few random edits (flip, insert a token or a byte,
/// delete a range, duplicate a range, splice in part of another seed, truncate).
fn mutate(rng: &mut fastrand::Rng, seeds: &[Vec<u8>], tokens: &[&[u8]]) -> Vec<u8> {
    let mut data = seeds[rng.usize(..seeds.len())].clone();
    for _ in 0..rng.usize(1..=4) {
        let at = rng.usize(..=data.len());
        match rng.u8(..7) {
            0 if !data.is_empty() => {
                let i = rng.usize(..data.len());
                data[i] ^= 1 << rng.u8(..8);
            }
            1 | 2 => {
                let token = tokens[rng.usize(..tokens.len())];
                data.splice(at..at, token.iter().copied());
            }
            3 => data.insert(at, rng.u8(..)),
            4 if at < data.len() => {
                let end = rng.usize(at..=data.len().min(at + 16));
                data.drain(at..end);
            }
            5 if at < data.len() => {
                let end = rng.usize(at..=data.len().min(at + 32));
                let copy = data[at..end].to_vec();
                data.splice(at..at, copy);
            }
            6 => {
                let other = &seeds[rng.usize(..seeds.len())];
                let from = rng.usize(..=other.len());
                let to = rng.usize(from..=other.len());
                data.splice(at..at, other[from..to].iter().copied());
            }
            _ => data.truncate(at),
        }
    }
    data
}

fn run(target: &str, tokens: &[&[u8]], cases: usize, check: fn(&[u8])) {
    let seeds = seeds(target);
    let mut rng = fastrand::Rng::with_seed(16);
    let inputs = seeds
        .iter()
        .cloned()
        .chain((0..cases).map(|_| mutate(&mut rng, &seeds, tokens)));
    for input in inputs {
        let result = std::panic::catch_unwind(|| check(&input));
        if result.is_err() {
            panic!(
                "fuzz target {target} failed on {:?} (bytes {:?})",
                String::from_utf8_lossy(&input),
                input
            );
        }
    }
}

#[test]
fn config_loader() {
    run("config", CONFIG_TOKENS, 600, checks::config);
}

#[test]
fn discovery_documents() {
    run("discovery", DISCOVERY_TOKENS, 1500, checks::discovery);
}

#[test]
fn durations_and_schedules() {
    run("durations", DURATION_TOKENS, 1500, checks::durations);
}

#[test]
fn escaping_in_every_builtin() {
    run("escaping", ESCAPING_TOKENS, 300, checks::escaping);
}
