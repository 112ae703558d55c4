//! Fuzz targets for every parser of outside input ([docs/fuzzing.md](../../docs/fuzzing.md)).
//!
//! Each target is a bolero harness around one property of raw bytes, inside the library's unit
//! tests so that crate-private parsers need no wider API.
//!
//! - Under `cargo test` a target is a bounded smoke run: its seeds (the test fixtures and unit-test
//!   strings of [`seeds`]), a fixed number of deterministic mutations of them, then bolero's own
//!   run: the files under `src/fuzz/__fuzz__/fuzz__TARGET/` (corpus and crashes of earlier
//!   fuzzing, when present) and a few random inputs.
//! - Under `cargo bolero test fuzz::TARGET` (libFuzzer, `--cfg fuzzing`) only the property runs, on
//!   libFuzzer's inputs; `scripts/fuzz.sh` writes the seeds into the corpus first.
//!
//! Beyond "no panic, no hang", the properties check that what parses also serialises and parses
//! back to the same value (zone and policy XML and settings dicts, rich rules, state files), that
//! validated names still validate, and that a refusal of a file an admin or a guest can write is
//! one line without control characters (a newline or an escape sequence in a file must not reach
//! the terminal or the journal as such).

mod properties;
mod seeds;

/// Random inputs bolero adds under `cargo test` (random bytes rarely get past the first check of a
/// parser: the mutations of the seeds are what exercise them).
#[cfg(not(fuzzing))]
const RANDOM_ITERATIONS: usize = 200;

/// Runs `property` over `seeds` and `mutations` deterministic mutations of them, naming the input
/// that fails.
#[cfg(not(fuzzing))]
fn smoke(target: &str, seeds: Vec<Vec<u8>>, mutations: usize, property: fn(&[u8])) {
    assert!(!seeds.is_empty(), "fuzz::{target} has no seeds");
    let mut rng = mutate::Rng::new(0x7669_7274_7a6f_6e65);
    let inputs = seeds
        .iter()
        .cloned()
        .chain((0..mutations).map(|_| mutate::mutate(&mut rng, &seeds)));
    for (i, input) in inputs.enumerate() {
        if std::panic::catch_unwind(|| property(&input)).is_err() {
            panic!(
                "fuzz::{target}: input {i} (seeds first, then mutations) fails the property: {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}

#[cfg(not(fuzzing))]
mod mutate;

/// Writes each target's seeds into its libFuzzer corpus (`scripts/fuzz.sh` runs it first).
#[test]
#[ignore = "writes the fuzz corpora; run by scripts/fuzz.sh"]
fn write_seed_corpora() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/fuzz/__fuzz__");
    for (target, seeds) in all_seeds() {
        let corpus = dir.join(format!("fuzz__{target}/corpus"));
        std::fs::create_dir_all(&corpus).expect("the corpus directory");
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(corpus.join(format!("seed-{i}")), seed).expect("a seed file");
        }
    }
}

/// One `#[test]` per target: the smoke run outside fuzzing, then bolero's engine (random and file
/// inputs under `cargo test`, libFuzzer under `cargo bolero test`).
macro_rules! targets {
    ($($(#[$doc:meta])* $name:ident: $mutations:expr;)*) => {
        /// Every target's name and seeds.
        fn all_seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
            vec![$((stringify!($name), seeds::$name())),*]
        }

        $(
        $(#[$doc])*
        #[test]
        fn $name() {
            #[cfg(not(fuzzing))]
            smoke(stringify!($name), seeds::$name(), $mutations, properties::$name);
            let target = bolero::check!();
            #[cfg(not(fuzzing))]
            let target = target.with_iterations(RANDOM_ITERATIONS);
            target.for_each(properties::$name);
        }
    )*};
}

// The mutation counts keep the whole smoke run (debug build, every target) to a few seconds of CPU
// each: the evaluator's targets run every probe through a whole ruleset per input.
targets! {
    /// libvirt's network XML and hookData (`libvirt::network`), and the network record made of it.
    network_xml: 20000;
    /// The qemu hook's domain XML (`libvirt::domain`), and the domain record made of it.
    domain_xml: 20000;
    /// firewalld zone XML (`zone::xml`), also through the settings dict.
    zone_xml: 8000;
    /// firewalld policy XML (`zone::xml`), also through the settings dict.
    policy_xml: 8000;
    /// Rich rules in firewalld's text form (`zone::rich`), also inside zone XML.
    rich_rule: 20000;
    /// `nft -j list ruleset` as the evaluator reads and follows it (`verify`).
    nft_ruleset: 60;
    /// `iptables-save`/`ip6tables-save` text attached to a ruleset with compat matches (`verify`).
    iptables_save: 40;
    /// `nft -j list table ip libvirt_network` as the forward planner reads it (`forward::nft`).
    guest_input: 10000;
    /// dnsmasq's lease status file as libvirt writes it (`forward::domain`).
    lease_status: 20000;
    /// The state file `bindings.json` (`bind`).
    bindings_json: 10000;
    /// The state file `installed.json` (`install`).
    installed_json: 10000;
    /// The state file `domains.json` (`forward::domain`).
    domains_json: 10000;
    /// The state file `forwards.json` (`forward::model`).
    forwards_json: 10000;
    /// The state file `networks.json` (`forward::network`).
    networks_json: 10000;
    /// `/etc/virtzone/virtzone.conf` (`state`).
    config: 20000;
    /// A drop-in file of `virtzone apply` (`declare`).
    dropin: 20000;
}
