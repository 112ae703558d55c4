//! [`lab_matrix!`]: one scenario, written once as a function of its firewalld release and backend,
//! and one list of the cells it runs in — and of every cell it leaves out, with the reason. The
//! models are ripgrep's `rgtest!` (one macro call makes the test functions) and firewalld's
//! testsuite, whose `m4_foreach` runs each check over both backends.
//!
//! ```ignore
//! fn forward_survives_every_rebuild(release: Release, backend: Backend) { … }
//!
//! lab_matrix! {
//!     forward_survives_every_rebuild:
//!         _0_9_3_nftables, _1_3_3_nftables, _1_3_3_iptables, _2_3_1_nftables, …;
//!     skip _0_9_3_iptables: "the reason, in one sentence";
//! }
//! ```
//!
//! makes the module `forward_survives_every_rebuild` with one `#[test] fn _1_3_3_nftables()` per
//! cell (so `forwards::forward_survives_every_rebuild::_1_3_3_nftables`), which calls the scenario
//! with `(Release::Debian12, Backend::Nftables)`, and one `#[ignore = "reason"]` test per skipped
//! cell, so `cargo nextest list --run-ignored all` shows the whole matrix, and a skipped cell can
//! still be run by hand. A cell is `_<firewalld version>_<backend>`, or `_<firewalld version>` alone
//! for a scenario that takes only the release (it runs both backends itself). Every cell of the
//! matrix must be listed exactly once, run or skipped: the build fails otherwise ([`complete`]).

/// Every release × backend cell, as [`lab_matrix!`] names them.
pub const PAIR_CELLS: [&str; 8] = [
    "_0_9_3_nftables",
    "_0_9_3_iptables",
    "_1_3_3_nftables",
    "_1_3_3_iptables",
    "_2_3_1_nftables",
    "_2_3_1_iptables",
    "_2_5_2_nftables",
    "_2_5_2_iptables",
];

/// Every release-only cell, for scenarios that take a [`super::Release`] alone.
pub const RELEASE_CELLS: [&str; 4] = ["_0_9_3", "_1_3_3", "_2_3_1", "_2_5_2"];

/// A scenario [`lab_matrix!`] can call with a cell's arguments: `fn(Release, Backend)` or
/// `fn(Release)`. `Args` only tells the two impls apart.
pub trait Scenario<Args> {
    /// Runs the scenario in one cell.
    fn run(self, args: Args);
}

impl<F: FnOnce(super::Release, super::Backend)> Scenario<(super::Release, super::Backend)> for F {
    fn run(self, (release, backend): (super::Release, super::Backend)) {
        self(release, backend)
    }
}

impl<F: FnOnce(super::Release)> Scenario<(super::Release,)> for F {
    fn run(self, (release,): (super::Release,)) {
        self(release)
    }
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn count(names: &[&str], name: &str) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < names.len() {
        if same(names[i], name) {
            n += 1;
        }
        i += 1;
    }
    n
}

const fn covers(all: &[&str], names: &[&str]) -> bool {
    let mut i = 0;
    while i < all.len() {
        if count(names, all[i]) != 1 {
            return false;
        }
        i += 1;
    }
    names.len() == all.len()
}

/// Checked at compile time for every [`lab_matrix!`]: the cells run and skipped, together, are the
/// whole matrix of one kind (all 8 release × backend cells, or all 4 releases), each exactly once.
/// A new release or a forgotten cell fails the build until each scenario says what it does there.
/// `error` names the scenario (a const `panic!` takes one `&str`, not a format).
pub const fn complete(names: &[&str], error: &str) {
    if !covers(&PAIR_CELLS, names) && !covers(&RELEASE_CELLS, names) {
        panic!("{}", error);
    }
}

/// Makes one `#[test]` per cell of a scenario and one `#[ignore = "reason"]` test per skipped cell,
/// in a module named after the scenario; see the [module docs](self).
#[macro_export]
macro_rules! lab_matrix {
    (@args _0_9_3_nftables) => { ($crate::common::Release::Debian11, $crate::common::Backend::Nftables) };
    (@args _0_9_3_iptables) => { ($crate::common::Release::Debian11, $crate::common::Backend::Iptables) };
    (@args _1_3_3_nftables) => { ($crate::common::Release::Debian12, $crate::common::Backend::Nftables) };
    (@args _1_3_3_iptables) => { ($crate::common::Release::Debian12, $crate::common::Backend::Iptables) };
    (@args _2_3_1_nftables) => { ($crate::common::Release::Debian13, $crate::common::Backend::Nftables) };
    (@args _2_3_1_iptables) => { ($crate::common::Release::Debian13, $crate::common::Backend::Iptables) };
    (@args _2_5_2_nftables) => { ($crate::common::Release::Sid, $crate::common::Backend::Nftables) };
    (@args _2_5_2_iptables) => { ($crate::common::Release::Sid, $crate::common::Backend::Iptables) };
    (@args _0_9_3) => { ($crate::common::Release::Debian11,) };
    (@args _1_3_3) => { ($crate::common::Release::Debian12,) };
    (@args _2_3_1) => { ($crate::common::Release::Debian13,) };
    (@args _2_5_2) => { ($crate::common::Release::Sid,) };
    (@args $other:ident) => {
        compile_error!(concat!(
            "lab_matrix!: unknown cell `", stringify!($other),
            "` (cells are _0_9_3_nftables … _2_5_2_iptables, or _0_9_3 … _2_5_2)"
        ))
    };
    (
        $scenario:ident: $($cell:ident),+ $(,)?
        $(; skip $($skipped:ident),+ : $reason:literal)* $(;)?
    ) => {
        #[doc = concat!("The cells `", stringify!($scenario), "` runs in, and those it skips.")]
        mod $scenario {
            use $crate::common::matrix::Scenario as _;

            const _: () = $crate::common::matrix::complete(
                &[$(stringify!($cell),)+ $($(stringify!($skipped),)+)*],
                concat!(
                    "lab_matrix! ", stringify!($scenario), ": list every cell of the matrix exactly \
                     once, run or `skip …: \"reason\"` (all 8 of _0_9_3_nftables … \
                     _2_5_2_iptables, or all 4 of _0_9_3 … _2_5_2)"
                ),
            );

            $(
                #[test]
                fn $cell() {
                    super::$scenario.run($crate::lab_matrix!(@args $cell));
                }
            )+

            $($(
                #[test]
                #[ignore = $reason]
                fn $skipped() {
                    super::$scenario.run($crate::lab_matrix!(@args $skipped));
                }
            )+)*
        }
    };
}

/// Every cell of the Debian sid system's matrix, as [`sid_matrix!`] names them: libvirt's firewall
/// backend × firewalld's backend, without and with firewalld's `StrictForwardPorts=yes` (the one
/// firewalld release there, 2.5.2, has it).
pub const SID_CELLS: [&str; 8] = [
    "libvirt_nftables_firewalld_nftables",
    "libvirt_iptables_firewalld_nftables",
    "libvirt_nftables_firewalld_iptables",
    "libvirt_iptables_firewalld_iptables",
    "strict_libvirt_nftables_firewalld_nftables",
    "strict_libvirt_iptables_firewalld_nftables",
    "strict_libvirt_nftables_firewalld_iptables",
    "strict_libvirt_iptables_firewalld_iptables",
];

/// [`complete`] for the sid system's matrix: the cells run and skipped are all of [`SID_CELLS`],
/// each exactly once.
pub const fn complete_sid(names: &[&str], error: &str) {
    if !covers(&SID_CELLS, names) {
        panic!("{}", error);
    }
}

/// [`lab_matrix!`]'s sibling for the Debian sid system (`common::sidroot`), whose one firewalld
/// release runs with either libvirt firewall backend: one scenario `fn(SidOptions)`, one `#[test]`
/// per cell of [`SID_CELLS`] and one `#[ignore = "reason"]` test per skipped cell, in a module
/// named after the scenario (`forwards12::forward_life::strict_libvirt_nftables_firewalld_iptables`).
///
/// ```ignore
/// sid_matrix! {
///     forward_life: libvirt_nftables_firewalld_nftables, …;
///     skip strict_libvirt_iptables_firewalld_iptables: "the reason, in one sentence";
/// }
/// ```
#[macro_export]
macro_rules! sid_matrix {
    (@opts $libvirt:literal, $firewalld:literal, $strict:literal) => {
        $crate::common::sidroot::SidOptions {
            libvirt_backend: $libvirt,
            firewalld_backend: $firewalld,
            strict_forward_ports: $strict,
            ..$crate::common::sidroot::SidOptions::default()
        }
    };
    (@opts libvirt_nftables_firewalld_nftables) => { $crate::sid_matrix!(@opts "nftables", "nftables", false) };
    (@opts libvirt_iptables_firewalld_nftables) => { $crate::sid_matrix!(@opts "iptables", "nftables", false) };
    (@opts libvirt_nftables_firewalld_iptables) => { $crate::sid_matrix!(@opts "nftables", "iptables", false) };
    (@opts libvirt_iptables_firewalld_iptables) => { $crate::sid_matrix!(@opts "iptables", "iptables", false) };
    (@opts strict_libvirt_nftables_firewalld_nftables) => { $crate::sid_matrix!(@opts "nftables", "nftables", true) };
    (@opts strict_libvirt_iptables_firewalld_nftables) => { $crate::sid_matrix!(@opts "iptables", "nftables", true) };
    (@opts strict_libvirt_nftables_firewalld_iptables) => { $crate::sid_matrix!(@opts "nftables", "iptables", true) };
    (@opts strict_libvirt_iptables_firewalld_iptables) => { $crate::sid_matrix!(@opts "iptables", "iptables", true) };
    (@opts $other:ident) => {
        compile_error!(concat!(
            "sid_matrix!: unknown cell `", stringify!($other),
            "` (cells are [strict_]libvirt_{nftables,iptables}_firewalld_{nftables,iptables})"
        ))
    };
    (
        $scenario:ident: $($cell:ident),+ $(,)?
        $(; skip $($skipped:ident),+ : $reason:literal)* $(;)?
    ) => {
        #[doc = concat!("The cells `", stringify!($scenario), "` runs in, and those it skips.")]
        mod $scenario {
            const _: () = $crate::common::matrix::complete_sid(
                &[$(stringify!($cell),)+ $($(stringify!($skipped),)+)*],
                concat!(
                    "sid_matrix! ", stringify!($scenario), ": list every cell of the sid matrix \
                     exactly once, run or `skip …: \"reason\"` (all 8 of SID_CELLS)"
                ),
            );

            $(
                #[test]
                fn $cell() {
                    super::$scenario($crate::sid_matrix!(@opts $cell));
                }
            )+

            $($(
                #[test]
                #[ignore = $reason]
                fn $skipped() {
                    super::$scenario($crate::sid_matrix!(@opts $skipped));
                }
            )+)*
        }
    };
}
