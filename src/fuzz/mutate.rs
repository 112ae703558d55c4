//! Deterministic mutations of seed inputs for the smoke runs: the edits libFuzzer would try first
//! (bytes changed, ranges dropped or repeated, tokens of the formats inserted, seeds spliced), so a
//! plain `cargo test` reaches past the first check of each parser without a fuzzing engine.

/// Tokens of the formats fuzzed here: XML, JSON, firewalld's rule syntax, numbers at the edges.
const TOKENS: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "'",
    "\"",
    "=",
    "&amp;",
    "&#10;",
    "&#x1b;",
    "&#0;",
    "&bogus;",
    "<![CDATA[x]]>",
    "<!-- c -->",
    "<?xml version=\"1.0\"?>",
    "<!DOCTYPE x>",
    "\n",
    "\t",
    " ",
    "\u{0}",
    "\u{1b}[31m",
    "\u{85}",
    "\u{202e}",
    "é",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "null",
    "true",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "1e999",
    "-0",
    "-1",
    "0",
    "65535",
    "65536",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999",
    "0x10",
    "/",
    "::",
    "::ffff:1.2.3.4",
    "192.0.2.1/33",
    "ipv4",
    "ipv6",
    "family=",
    "NOT",
    "\\",
    "priority=",
    "limit value=",
    "/m",
    "rule ",
    "=/",
    "#",
    "..",
    "-A ",
    "*filter",
    "-m conntrack --ctstate ",
    " -j ",
    "--dport ",
];

/// xorshift64*: small, deterministic, good enough to choose edits.
pub struct Rng(u64);

impl Rng {
    /// A generator starting at `seed` (not zero).
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// A random position in `v`, ends included.
fn pos(rng: &mut Rng, v: &[u8]) -> usize {
    rng.below(v.len() + 1)
}

/// One to four edits of a random seed.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 => {
                let (a, b) = (pos(rng, &v), pos(rng, &v));
                let (a, b) = (a.min(b), a.max(b));
                // Short ranges mostly: a whole seed gone teaches little.
                let b = b.min(a + 1 + rng.below(16));
                v.drain(a..b.min(v.len()));
            }
            2 | 3 => {
                let at = pos(rng, &v);
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                v.splice(at..at, t.iter().copied());
            }
            4 => {
                let (a, b) = (pos(rng, &v), pos(rng, &v));
                let chunk = v[a.min(b)..a.max(b)].to_vec();
                let at = pos(rng, &v);
                v.splice(at..at, chunk);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = pos(rng, other);
                let at = pos(rng, &v);
                v.truncate(at);
                v.extend_from_slice(&other[cut..]);
            }
            _ => {
                // A digit changed: numbers are where ranges and overflows hide.
                let start = rng.below(v.len());
                if let Some(i) = (start..v.len())
                    .chain(0..start)
                    .find(|&k| v[k].is_ascii_digit())
                {
                    v[i] = b"0123456789"[rng.below(10)];
                    if rng.below(2) == 0 {
                        v.splice(i..i, b"9999".iter().copied());
                    }
                }
            }
        }
    }
    v
}
